"""Embedding maps: the modality gap on constructed data, the world's table, and an EmbeddingMap driven
the way the browser drives it (plotly's own js2py hover/selection messages), updated in place."""
import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from clipspace import world
from clipspace.maps.embedding_map import (FIRST_KEY_TRACE, HOVER_JS, IMAGE_TRACE, MAX_KEYS, TEXT_TRACE, EmbeddingMap,
                            cluster_labels, modality_gap, scene_table)
from clipspace.maps.projections import ProjectionCache


def unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


# --- the modality gap -------------------------------------------------------------------------------
def test_modality_gap_on_orthogonal_modalities():
    e = np.eye(8, dtype=np.float32)
    gap = modality_gap(np.tile(e[0], (5, 1)), np.tile(e[1] * 3.0, (4, 1)))  # texts get normalised too
    assert gap["centroid_distance"] == pytest.approx(np.sqrt(2))
    assert gap["image_image_cos"] == pytest.approx(1) and gap["text_text_cos"] == pytest.approx(1)
    assert gap["image_text_cos"] == pytest.approx(0, abs=1e-12)
    assert (gap["n_images"], gap["n_texts"]) == (5, 4)


def test_modality_gap_matches_pairwise_loops_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    shared = 2.0 * unit(rng.normal(size=(1, 16)))
    images = unit(shared + 0.4 * rng.normal(size=(30, 16)))
    texts_same = unit(shared + 0.4 * rng.normal(size=(20, 16)))
    offset = 2.0 * unit(rng.normal(size=(1, 16)))  # texts: the same cloud moved by a constant vector
    texts_shifted = unit(shared + offset + 0.4 * rng.normal(size=(20, 16)))

    g = modality_gap(images, texts_shifted)
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    ii = np.mean([cos(a, b) for i, a in enumerate(images) for j, b in enumerate(images) if i != j])
    tt = np.mean([cos(a, b) for i, a in enumerate(texts_shifted) for j, b in enumerate(texts_shifted) if i != j])
    it = np.mean([cos(a, b) for a in images for b in texts_shifted])
    assert g["image_image_cos"] == pytest.approx(ii, abs=1e-6)
    assert g["text_text_cos"] == pytest.approx(tt, abs=1e-6)
    assert g["image_text_cos"] == pytest.approx(it, abs=1e-6)
    assert g["centroid_distance"] == pytest.approx(np.linalg.norm(images.mean(0) - texts_shifted.mean(0)), abs=1e-6)

    same = modality_gap(images, texts_same)
    assert g["centroid_distance"] > 3 * same["centroid_distance"]  # the shift is what the gap measures
    assert g["image_text_cos"] < min(g["image_image_cos"], g["text_text_cos"])


def test_modality_gap_bad_input():
    with pytest.raises(ValueError, match="image_emb has 8 dims, text_emb 4"):
        modality_gap(np.ones((3, 8)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="text_emb must be a 2-D array with at least 2 rows"):
        modality_gap(np.ones((3, 8)), np.ones((1, 8)))


# --- tables -----------------------------------------------------------------------------------------
def test_scene_table_factors():
    words, pairs, counts = world.word_scenes(4), world.relation_scenes(5), world.count_scenes(6)
    t = scene_table(words + pairs + counts)
    assert len(t) == 15 and {"caption", "kind", "count", "shape", "colour", "background", "word"} <= set(t.columns)
    assert (t["kind"][:4] == "word").all() and (t["shape"][:4] == "none").all()
    assert t["word"][:4].tolist() == [s.text.word for s in words]
    assert t["kind"][4:9].tolist() == ["pair"] * 5
    assert t["relation"][4:9].tolist() == [s.relation() for s in pairs]
    assert t["count"][9:].tolist() == [s.count for s in counts]
    assert t["kind"][9:].tolist() == ["object" if s.count == 1 else "count" for s in counts]
    assert t["caption"].tolist() == [s.caption(0) for s in words + pairs + counts]


def test_cluster_labels_recover_separated_clusters():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 20)
    X = unit(5 * np.eye(16)[truth] + 0.3 * rng.normal(size=(60, 16)))
    got = cluster_labels(X, n_clusters=3, random_state=0)
    assert adjusted_rand_score(truth, got) == 1.0
    np.testing.assert_array_equal(got, cluster_labels(X, n_clusters=3, random_state=0))


# --- the map ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenes():
    return world.mixed_scenes(40)


@pytest.fixture(scope="module")
def pictures(scenes):
    return [s.render(64) for s in scenes]


@pytest.fixture(scope="module")
def image_emb(tiny_clip, pictures):
    return np.asarray(tiny_clip.encode_images(pictures))


def js_event(fig, event_type, trace, inds, selector=None):
    """The message plotly's widget frontend sends on hover/selection (handled by FigureWidget itself)."""
    fig._js2py_pointsCallback = {
        "event_type": event_type,
        "points": {"trace_indexes": [trace] * len(inds), "point_indexes": list(inds),
                   "xs": [0.0] * len(inds), "ys": [0.0] * len(inds)},
        "selector": selector, "device_state": None}


def test_build_pca_map_points_texts_and_figure(tiny_clip, scenes, pictures, image_emb):
    cache = ProjectionCache()
    emap = EmbeddingMap.build(image_emb, pictures, scene_table(scenes), "pca", clip=tiny_clip, cache=cache,
                              texts=["a red circle", "two blue squares"])
    ref = PCA(n_components=2, random_state=0).fit(image_emb)
    np.testing.assert_allclose(emap.points[["x", "y"]].to_numpy(), ref.transform(image_emb), atol=1e-5)
    trace = emap.figure.data[IMAGE_TRACE]
    assert trace.type == "scattergl" and len(trace.x) == 40
    np.testing.assert_array_equal(trace.x, emap.points["x"].to_numpy())
    assert list(trace.text) == [s.caption(0) for s in scenes]  # hover text: the caption column

    # text points where PCA's transform puts them (sklearn as the reference), drawn as labelled diamonds
    text_emb = tiny_clip.encode_texts(["a red circle", "two blue squares"])
    np.testing.assert_allclose(emap.texts[["x", "y"]].to_numpy(), ref.transform(text_emb), atol=1e-5)
    t = emap.figure.data[TEXT_TRACE]
    assert t.marker.symbol == "diamond" and "text" in t.mode and list(t.text) == ["a red circle", "two blue squares"]
    emap.add_texts(["a star"])
    assert list(emap.figure.data[TEXT_TRACE].text)[-1] == "a star" and len(emap.text_emb) == 3
    emap.clear_texts()
    assert len(emap.texts) == 0 and len(emap.figure.data[TEXT_TRACE].x) == 0


def test_tsne_map_places_a_text_equal_to_an_image_on_that_image(image_emb, pictures):
    emap = EmbeddingMap.build(image_emb, pictures, projection="tsne", perplexity=8, max_iter=250,
                              cache=ProjectionCache())
    rows = emap.add_texts(["same as image 7", "same as image 31"], image_emb[[7, 31]])
    np.testing.assert_allclose(rows[["x", "y"]].to_numpy(), emap.points[["x", "y"]].to_numpy()[[7, 31]], atol=1e-5)


def test_fit_texts_fits_both_modalities_together(tiny_clip, image_emb):
    texts = [s.caption(0) for s in world.single_objects(6)]
    emap = EmbeddingMap.build(image_emb, projection="tsne", perplexity=8, max_iter=250, texts=texts,
                              clip=tiny_clip, fit_texts=True, cache=ProjectionCache())
    assert emap.projection.embedding_.shape == (46, 2) and emap.texts["fitted"].all()
    np.testing.assert_array_equal(emap.texts[["x", "y"]].to_numpy(), emap.projection.embedding_[40:])
    emap.add_texts(["extra"])
    emap.clear_texts()  # placed texts go, fitted ones stay
    assert emap.texts["text"].tolist() == texts


def test_recolour_and_query_update_in_place_without_refit(tiny_clip, scenes, pictures, image_emb):
    cache = ProjectionCache()
    emap = EmbeddingMap.build(image_emb, pictures, scene_table(scenes), "tsne", perplexity=8, max_iter=250,
                              clip=tiny_clip, cache=cache)
    fig, proj, xy = emap.figure, emap.projection, emap.points[["x", "y"]].to_numpy().copy()
    marker = fig.data[IMAGE_TRACE].marker

    emap.color_by("shape")
    cats = sorted(emap.points["shape"].unique())
    codes = np.asarray(marker.color)
    assert [cats[c] for c in codes] == emap.points["shape"].tolist()  # each point's colour code is its shape
    keys = [fig.data[FIRST_KEY_TRACE + j] for j in range(MAX_KEYS)]
    assert [k.name for k in keys if k.visible] == cats
    scale = marker.colorscale  # code i sits in the middle of step i, whose colour is legend key i's
    for i, k in enumerate(keys[:len(cats)]):
        pos = (i + 0.5) / len(cats)
        assert [c for (lo, c), (hi, _) in zip(scale[::2], scale[1::2]) if lo <= pos <= hi][0] == k.marker.color

    emap.color_by("colour", palette=world.COLOURS)
    first = emap.points["colour"][0]
    assert [k.marker.color for k in keys if k.name == first][0] == "rgb({},{},{})".format(*world.COLOURS[first])

    sims = emap.color_by_query("a red circle")
    expected = image_emb @ tiny_clip.encode_texts(["a red circle"])[0]
    np.testing.assert_allclose(sims, expected, atol=1e-5)
    np.testing.assert_allclose(marker.color, expected, atol=1e-5)
    assert marker.showscale and not any(k.visible for k in keys)
    np.testing.assert_array_equal(emap.points["query_similarity"], sims)

    emap.color_by(None)
    assert marker.color == "#4c78a8"
    assert emap.figure is fig and emap.projection is proj and cache.fits == 1
    np.testing.assert_array_equal(emap.points[["x", "y"]].to_numpy(), xy)
    with pytest.raises(KeyError, match="no column 'nope'; choose from"):
        emap.color_by("nope")


def test_distinct_count_decision_equals_pandas_nunique():
    from clipspace.maps.embedding_map import MAX_CATEGORIES, more_distinct_than

    rng = np.random.default_rng(4)
    n = 50_000
    few = rng.integers(0, MAX_CATEGORIES, n).astype(float)
    cases = {
        "many floats": pd.Series(rng.standard_normal(n)),
        "exactly k": pd.Series(few),
        "k plus one, the extra value only in the last row": pd.Series(np.r_[few[:-1], 1e9]),
        "k with NaNs (not counted)": pd.Series(np.where(rng.random(n) < 0.3, np.nan, few)),
        "k plus NaN plus one": pd.Series(np.r_[np.where(rng.random(n - 1) < 0.3, np.nan, few[:-1]), -5.0]),
        "short": pd.Series(np.arange(MAX_CATEGORIES + 1.0)),
    }
    for name, values in cases.items():
        assert more_distinct_than(values, MAX_CATEGORIES) == (values.nunique() > MAX_CATEGORIES), name


def test_hover_shows_the_thumbnail_and_row(scenes, pictures, image_emb):
    emap = EmbeddingMap.build(image_emb, pictures, scene_table(scenes), "pca", cache=ProjectionCache(),
                              thumb_size=48)
    js_event(emap.figure, "plotly_hover", IMAGE_TRACE, [12])
    shown = Image.open(io.BytesIO(emap.hover_image.value))
    assert shown.size == (48, 48)
    expected = pictures[12].copy()
    expected.thumbnail((48, 48))
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(expected))  # image 12, not another
    assert scenes[12].caption(0) in emap.hover_label.value.replace("&quot;", '"') and "image 12" in emap.hover_label.value


def test_hover_without_images_hides_the_picture_instead_of_a_broken_icon(scenes, pictures, image_emb):
    bare = EmbeddingMap.build(image_emb, None, scene_table(scenes), "pca", cache=ProjectionCache())
    assert bare.hover_image.layout.display == "none"
    js_event(bare.figure, "plotly_hover", IMAGE_TRACE, [3])
    assert bare.hover_image.layout.display == "none" and "image 3" in bare.hover_label.value
    emap = EmbeddingMap.build(image_emb, pictures, scene_table(scenes), "pca", cache=ProjectionCache())
    assert emap.hover_image.layout.display == "none"  # nothing hovered yet
    js_event(emap.figure, "plotly_hover", IMAGE_TRACE, [3])
    assert emap.hover_image.layout.display is None and emap.hover_image.value  # shown once there is a picture


def test_lasso_box_selection_and_grid(scenes, pictures, image_emb):
    emap = EmbeddingMap.build(image_emb, pictures, scene_table(scenes), "pca", cache=ProjectionCache())
    seen = []
    emap.on_select(seen.append)
    assert emap.selected().size == 0 and emap.selection_grid() is None

    js_event(emap.figure, "plotly_selected", IMAGE_TRACE, [9, 2, 30],
             selector={"type": "lasso", "selector_state": {"xs": [0, 1, 1], "ys": [0, 0, 1]}})
    np.testing.assert_array_equal(emap.selected(), [2, 9, 30])
    assert list(emap.figure.data[IMAGE_TRACE].selectedpoints) == [9, 2, 30]
    grid = emap.selection_grid(ncols=2)
    assert isinstance(grid, Image.Image)
    pad = 4  # figures.image_grid's default: 2 columns x 2 rows of 64 px cells
    assert grid.size == (pad + 2 * (64 + pad), pad + 2 * (64 + pad))
    np.testing.assert_array_equal(np.asarray(grid)[pad:pad + 64, pad:pad + 64], np.asarray(pictures[2]))

    js_event(emap.figure, "plotly_selected", IMAGE_TRACE, [5],
             selector={"type": "box", "selector_state": {"xrange": [0, 1], "yrange": [0, 1]}})
    np.testing.assert_array_equal(emap.selected(), [5])
    js_event(emap.figure, "plotly_deselect", IMAGE_TRACE, [])
    assert emap.selected().size == 0 and emap.selection_grid() is None
    emap.select([1, 3])
    assert [s.tolist() for s in seen] == [[2, 9, 30], [5], [], [1, 3]]
    with pytest.raises(IndexError, match=r"select: indices must be in \[0, 40\)"):
        emap.select([40])


def test_write_html_embeds_thumbnails_and_the_hover_hook(tmp_path, pictures, image_emb):
    emap = EmbeddingMap.build(image_emb, pictures, projection="pca", cache=ProjectionCache())
    path = tmp_path / "map.html"
    emap.write_html(path, include_plotlyjs=False)
    page = path.read_text()
    assert "plotly_hover" in page and "clipspace-hover-thumb" in page and "{plot_id}" not in page
    div_id = re.search(r'<div id="([0-9a-f-]+)" class="plotly-graph-div"', page).group(1)
    assert f"document.getElementById('{div_id}')" in page  # the hook is bound to this plot
    plain = page.replace("\\u002f", "/")  # plotly's JSON escapes "/"
    uris = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", plain)
    assert len(uris) == 40
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[3])))),
                                  np.asarray(emap.thumbnails[3]))
    assert HOVER_JS.strip()[:20] in page


def test_build_errors_are_clear(image_emb):
    with pytest.raises(ValueError, match="table has 3 rows for 40 image embeddings"):
        EmbeddingMap.build(image_emb, table=pd.DataFrame({"a": [1, 2, 3]}))
    with pytest.raises(ValueError, match="texts were given without embeddings"):
        EmbeddingMap.build(image_emb, texts=["a cat"], cache=ProjectionCache())
    with pytest.raises(ValueError, match=r"columns \['x'\] are reserved"):
        EmbeddingMap.build(image_emb, table=pd.DataFrame({"x": range(40)}))
