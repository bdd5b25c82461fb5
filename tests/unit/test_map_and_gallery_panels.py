"""Notebook 02's map panel and notebook 00's gallery, driven headless by setting their controls."""
import numpy as np
import pytest
from sklearn.decomposition import PCA

from clipspace import world
from clipspace.maps.embedding_map import IMAGE_TRACE, SCATTER_THRESHOLD, EmbeddingMap, scene_table
from clipspace.notebook.gallery_panel import GalleryPanel
from clipspace.notebook.map_panel import BIG_METHODS, METHODS, MapPanel
from clipspace.maps.projections import ProjectionCache, make_projection
from clipspace.probes.zero_shot import WORLD_TEMPLATES, ZeroShotClassifier, world_classnames


@pytest.fixture(scope="module")
def scenes():
    return world.mixed_scenes(40)


@pytest.fixture
def panel(tiny_clip, scenes):
    pictures = [s.render(tiny_clip.image_size) for s in scenes]
    emb = tiny_clip.encode_images(pictures, cache=False)
    emap = EmbeddingMap.build(emb, pictures, scene_table(scenes), "pca", clip=tiny_clip, cache=ProjectionCache())
    return MapPanel(emap, colour="shape")


def xy(panel):
    trace = panel.emap.figure.data[IMAGE_TRACE]
    return np.column_stack([trace.x, trace.y])


def test_whiten_moves_the_points_to_sklearns_whitened_pca(panel):
    panel.controls.whiten.value = True
    ref = PCA(n_components=2, whiten=True, random_state=0).fit_transform(panel.emap.image_emb)
    got = xy(panel)
    np.testing.assert_allclose(np.abs(got), np.abs(ref), atol=1e-3)  # components' signs are arbitrary


def test_method_shows_only_its_own_parameters_and_reprojects(panel):
    before = xy(panel).copy()
    panel.controls.perplexity.value = 8
    panel.controls.method.value = "tsne"
    c = panel.controls
    assert c.perplexity.layout.display is None and c.whiten.layout.display == "none"
    assert c.n_neighbors.layout.display == "none"
    assert panel.emap.projection.get_params()["perplexity"] == 8
    assert not np.allclose(xy(panel), before)


def test_colour_query_and_texts(panel, tiny_clip):
    panel.controls.colour.value = "colour"
    assert panel.emap.coloured_by == "colour"
    panel.controls.query.value = "a red star"
    sims = panel.emap.image_emb @ tiny_clip.encode_texts(["a red star"])[0]
    np.testing.assert_allclose(panel.emap.figure.data[IMAGE_TRACE].marker.color, sims, atol=1e-5)
    panel.controls.new_texts.value = "a blue circle; two green stars"
    assert panel.emap.texts["text"].tolist()[-2:] == ["a blue circle", "two green stars"]
    panel.controls.clear.click()
    assert len(panel.emap.texts) == 0


def test_a_selection_fills_the_grid_and_counts_by_the_colouring(panel):
    assert panel.selection_image is None and "nothing selected" in panel.summary.value
    panel.emap.select([0, 1, 2])
    assert panel.selection_image is not None and panel.selection.value
    expected = panel.emap.points["shape"].iloc[[0, 1, 2]].astype(str).value_counts()
    assert all(f"{k} {v}" in panel.summary.value for k, v in expected.items())
    assert "3 images selected" in panel.summary.value
    assert set(panel.figures()) == {"embedding_map", "embedding_map_selection"}


def test_a_small_map_offers_the_full_fits(panel):
    assert panel.controls.method.options == tuple(METHODS) and not panel.big
    assert panel.controls.sample_size.layout.display == "none"
    assert panel.status.value == "PCA of all 40 points"


def _unit_clusters(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, dim))
    emb = centres[rng.integers(0, 5, n)] + 0.3 * rng.normal(size=(n, dim))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


def test_a_map_above_the_threshold_offers_only_sampled_fits_and_counts_selections():
    n = SCATTER_THRESHOLD + 1  # the real rule, no override: a full t-SNE of this would take many minutes
    emap = EmbeddingMap.build(_unit_clusters(n, 8), projection="pca", cache=ProjectionCache())
    panel = MapPanel(emap)
    assert panel.big and emap.backend == "scatter"
    values = [v for _, v in panel.controls.method.options]
    assert panel.controls.method.options == tuple(BIG_METHODS)
    assert "tsne" not in values and "umap" not in values and {"sampled-umap", "sampled-opentsne"} <= set(values)
    assert panel.status.value == f"PCA of all {n:,} points"
    assert panel.controls.sample_size.value == 10_000 and panel.controls.sample_size.max == n
    emap.select([0, 5, 9])  # a map with no images and no table: the count, no grid, no error
    assert "3 images selected" in panel.summary.value and panel.selection_image is None
    assert panel.output.outputs == ()


def test_sampled_opentsne_from_the_dropdown_is_the_libraries_fit_and_says_its_sample():
    emb = _unit_clusters(2000, 16)
    emap = EmbeddingMap.build(emb, projection="pca", backend="scatter", cache=ProjectionCache())
    panel = MapPanel(emap, big=True)
    c = panel.controls
    c.sample_size.value = 500
    c.perplexity.value = 20
    c.method.value = "sampled-opentsne"
    assert panel.output.outputs == (), panel.output.outputs
    shown = [name for name in ("whiten", "perplexity", "n_neighbors", "min_dist", "sample_size")
             if getattr(c, name).layout.display is None]
    assert shown == ["perplexity", "sample_size"]
    proj = emap.projection
    assert proj.method == "sampled" and proj.base == "opentsne" and proj.sample_size_ == 500
    ref = make_projection("sampled", base="opentsne", sample_size=500, base_params={"perplexity": 20}).fit(emb)
    np.testing.assert_array_equal(proj.sample_indices_, ref.sample_indices_)
    np.testing.assert_allclose(emap.points[["x", "y"]].to_numpy(), ref.embedding_, atol=1e-5)
    # the browser's copy moved too: jscatter's points are the new x scaled to [-1, 1]
    x = ref.embedding_[:, 0]
    np.testing.assert_allclose(np.asarray(emap.scatter.widget.points)[:, 0],
                               (x - x.min()) / (x.max() - x.min()) * 2 - 1, atol=1e-5)
    assert "t-SNE (openTSNE) fitted on a seeded sample of <b>500</b> of 2,000 points" in panel.status.value
    c.method.value = "pca"
    assert panel.status.value == "PCA of all 2,000 points" and emap.projection.method == "pca"
    # a panel over a map already built with a sampled fit shows that fit, not PCA (the cache has it)
    built = EmbeddingMap.build(emb, projection="sampled", base="opentsne", sample_size=500,
                               base_params={"perplexity": 20}, backend="scatter", cache=emap.cache)
    assert emap.cache.fits == 2  # PCA, then the panel's sampled fit: this build was a cache hit
    again = MapPanel(built, big=True)
    assert again.controls.method.value == "sampled-opentsne" and "<b>500</b>" in again.status.value


def test_gallery_bars_are_the_classifiers_row_for_the_scene(tiny_clip):
    classifier = ZeroShotClassifier.from_clip(tiny_clip, world_classnames("shape"), WORLD_TEMPLATES["shape"])
    gallery_scenes = world.single_objects(5)
    panel = GalleryPanel(tiny_clip, classifier, gallery_scenes)
    direct = classifier(tiny_clip, gallery_scenes)
    for i in (0, 3):
        panel.controls.scene.value = i
        np.testing.assert_allclose(panel.bars.data[0].y, direct.probs[i], atol=1e-6)
        assert f"scene {i}: {gallery_scenes[i].caption(0)}" in panel.bars.layout.title.text
    with pytest.raises(ValueError, match="scenes is empty"):
        GalleryPanel(tiny_clip, classifier, [])
