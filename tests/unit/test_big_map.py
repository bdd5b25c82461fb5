"""The big-map backend (jupyter-scatter) driven headless through its synced traits, as the browser
drives it: selection -> the Python grid, hovering -> the panel, recolours -> the widget's colour data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipspace.maps import embedding_map as em
from clipspace.maps.embedding_map import SCATTER_THRESHOLD, EmbeddingMap, category_codes

pytest.importorskip("jscatter")


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 600
    emb = unit(rng.normal(size=(n, 16))).astype(np.float32)
    table = pd.DataFrame({"shape": rng.choice(["circle", "square", "star"], n),
                          "score": rng.normal(size=n), "count": rng.integers(1, 4, n)})
    colours = {"circle": (255, 0, 0), "square": (0, 128, 0), "star": (0, 0, 255)}
    images = [Image.new("RGB", (20, 20), colours[s]) for s in table["shape"]]
    return emb, table, images


@pytest.fixture
def big(data):
    emb, table, images = data
    return EmbeddingMap.build(emb, images=images, table=table, projection="pca", backend="scatter")


def test_threshold_switches_backend(data, monkeypatch):
    emb, table, _ = data
    small = EmbeddingMap.build(emb, table=table)
    assert small.backend == "plotly" and small.figure is not None and small.scatter is None
    monkeypatch.setattr(em, "SCATTER_THRESHOLD", len(emb) - 1)
    auto = EmbeddingMap.build(emb, table=table)
    assert auto.backend == "scatter" and auto.figure is None
    assert type(auto.scatter.widget).__name__ == "JupyterScatter"
    forced = EmbeddingMap.build(emb, table=table, backend="plotly")
    assert forced.backend == "plotly"
    with pytest.raises(ValueError, match="backend='webgl'.*auto"):
        EmbeddingMap.build(emb, backend="webgl")
    assert SCATTER_THRESHOLD == 50_000


def test_widget_points_are_the_map_coordinates(big):
    pts = np.asarray(big.scatter.widget.points)
    assert pts.shape[0] == len(big.points)
    # jscatter scales x and y linearly to [-1, 1]: the order and the ratios of the map survive
    x = big.points["x"].to_numpy()
    ndc = (x - x.min()) / (x.max() - x.min()) * 2 - 1
    np.testing.assert_allclose(pts[:, 0], ndc, atol=1e-5)


def test_browser_selection_reaches_python_and_the_grid(big):
    seen = []
    big.on_select(seen.append)
    picked = np.array([3, 10, 42, 7], dtype=np.uint32)
    big.scatter.widget.selection = picked  # what a lasso in the browser sends
    np.testing.assert_array_equal(big.selected(), np.sort(picked))
    np.testing.assert_array_equal(seen[-1], np.sort(picked))
    grid = big.selection_grid(ncols=4)
    # the grid's first cell is image 3's colour: thumbnails loaded on demand
    assert np.array(grid)[5, 5].tolist() == list(big.thumbnails[3].getpixel((5, 5)))
    big.scatter.widget.selection = None  # a deselect in the browser
    assert big.selected().size == 0 and big.selection_grid() is None


def test_select_from_code_draws_in_the_widget(big):
    seen = []
    big.on_select(seen.append)
    big.select([5, 1, 5])
    np.testing.assert_array_equal(big.scatter.widget.selection, [1, 5])
    np.testing.assert_array_equal(seen[-1], [1, 5])
    big.select([])
    assert big.selected().size == 0 and len(big.scatter.widget.selection) == 0
    with pytest.raises(IndexError):
        big.select([len(big.points)])


def test_hovering_fills_the_panel(big, data):
    _, table, _ = data
    big.scatter.widget.hovering = 17
    assert "image 17" in big.hover_label.value and table["shape"][17] in big.hover_label.value
    shown = Image.open(__import__("io").BytesIO(big.hover_image.value))
    assert shown.getpixel((2, 2))[:3] == big.thumbnails[17].getpixel((2, 2))[:3]
    big.scatter.widget.hovering = None  # leaving a point keeps the panel
    assert "image 17" in big.hover_label.value


def test_colour_by_column_writes_category_codes(big, data):
    _, table, _ = data
    big.color_by("shape")
    w = big.scatter.widget
    assert w.color_by == "valueA" and w.color_scale == "categorical"
    codes, cats = category_codes(table["shape"])
    assert cats == ["circle", "square", "star"] and w.color_domain == {c: i for i, c in enumerate(cats)}
    np.testing.assert_array_equal(big.scatter.colour_data(), codes)
    np.testing.assert_array_equal(codes, pd.Categorical(table["shape"], categories=cats).codes)
    assert len(w.color) == 3 and [e[0] for e in w.legend_encoding["color"]["values"]] == cats
    big.color_by("score")  # numeric with many values: continuous
    vals = big.scatter.colour_data()
    assert w.color_scale == "linear" and len(w.color) == 256
    assert 0 < vals.min() < vals.max() < 1  # strictly inside (0, 1): never read as categories
    order = np.argsort(table["score"].to_numpy())
    assert np.all(np.diff(vals[order]) >= -1e-7)
    big.color_by(None)
    assert w.color_by is None and big.scatter.colour_data() is None


def test_colour_by_query_changes_the_colour_data_and_matches_exact_cosine(big, data):
    emb, _, _ = data
    q = emb[9] + 0.1
    sims = big.color_by_query(q)
    exact = unit(emb.astype(np.float64)) @ (q / np.linalg.norm(q))
    np.testing.assert_allclose(sims, exact, atol=2e-3)  # float16 matrix (module docstring)
    vals = big.scatter.colour_data()
    assert np.corrcoef(vals, exact)[0, 1] > 0.9999
    assert int(np.argmax(vals)) == int(np.argmax(exact))
    before = vals.copy()
    big.color_by_query(emb[100])
    assert not np.allclose(before, big.scatter.colour_data())
    assert big.coloured_by == "query: query"


def test_category_codes_match_pandas_on_every_dtype():
    s = pd.Series([3, 1, 10, 1, np.nan, 3])
    codes, cats = category_codes(s)
    assert cats == ["1.0", "3.0", "10.0", "n/a"]
    np.testing.assert_array_equal(codes, [1, 0, 2, 0, 3, 1])
    c = pd.Series(pd.Categorical(["b", "a", "b"], categories=["b", "z", "a"]))
    assert category_codes(c)[1] == ["b", "a"]
    np.testing.assert_array_equal(category_codes(c)[0], [0, 1, 0])
    b = pd.Series([True, False, True])
    assert category_codes(b)[1] == ["False", "True"]


def test_texts_are_squares_and_static_export_subsamples(big, data, tmp_path):
    emb, _, _ = data
    big.add_texts(["near nine"], text_embeddings=emb[9:10])
    ann = big.scatter.widget.annotations
    assert len(ann) == 1 and "near nine" in big.texts_label.value
    fig = big.to_figure(max_points=100)
    assert len(fig.data[0].x) == 100 and "100 of 600" in fig.layout.title.text
    rows = np.asarray(fig.data[0].customdata, dtype=int)
    np.testing.assert_allclose(fig.data[0].x, big.points["x"].to_numpy()[rows], rtol=1e-6)
    full = big.to_figure()
    assert len(full.data[0].x) == 600 and list(full.data[1].text) == ["near nine"]
    big.write_html(tmp_path / "big.html", include_plotlyjs=False, max_points=50)
    assert (tmp_path / "big.html").stat().st_size > 0


class FakeCorpusLike:
    """Duck-typed like clipspace.corpus.Corpus: .embeddings, .table with a path column."""

    def __init__(self, embeddings, table):
        self.embeddings, self.table = embeddings, table

    def __len__(self):
        return len(self.embeddings)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.embeddings, dtype=dtype)


def test_a_corpus_like_object_is_accepted(tmp_path, data):
    emb, table, images = data
    paths = []
    for i, im in enumerate(images[:40]):
        paths.append(str(tmp_path / f"{i}.png"))
        im.save(paths[-1])
    mm = np.lib.format.open_memmap(tmp_path / "emb.npy", mode="w+", dtype=np.float32, shape=(40, 16))
    mm[:] = emb[:40]
    corpus = FakeCorpusLike(np.load(tmp_path / "emb.npy", mmap_mode="r"), table.iloc[:40].assign(path=paths))
    emap = EmbeddingMap.build(corpus, projection="pca", backend="scatter")
    assert list(emap.points.columns[:4]) == ["shape", "score", "count", "path"]
    emap.scatter.widget.hovering = 2
    assert paths[2].split("/")[-1] in emap.hover_label.value
    assert emap.thumbnails[2].getpixel((1, 1)) == images[2].getpixel((1, 1))
    plain = EmbeddingMap.build(emb[:40], table=table.iloc[:40])
    np.testing.assert_allclose(emap.points[["x", "y"]], plain.points[["x", "y"]], atol=1e-5)
