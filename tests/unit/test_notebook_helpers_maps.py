"""EmbeddingMap.reproject (what notebook 02's projection dropdown calls): the same figure moves to a
new projection, texts follow (transform for placed ones, the joint fit for fitted ones), colours and
selection stay, and a projection already fitted is fetched from the cache, not refitted."""
import numpy as np
import pytest
from sklearn.decomposition import PCA

from clipspace import world
from clipspace.maps.embedding_map import IMAGE_TRACE, TEXT_TRACE, EmbeddingMap, scene_table
from clipspace.maps.projections import ProjectionCache, knn_place


@pytest.fixture(scope="module")
def scenes():
    return world.mixed_scenes(30)


@pytest.fixture(scope="module")
def pictures(scenes):
    return [s.render(64) for s in scenes]


@pytest.fixture(scope="module")
def image_emb(tiny_clip, pictures):
    return np.asarray(tiny_clip.encode_images(pictures, progress=False))


def test_reproject_moves_points_in_place_and_back(tiny_clip, scenes, pictures, image_emb):
    cache = ProjectionCache()
    texts = ["a red circle", "two blue squares"]
    emap = EmbeddingMap.build(image_emb, pictures, scene_table(scenes), "pca", clip=tiny_clip, cache=cache,
                              texts=texts)
    fig = emap.figure
    pca_xy = emap.points[["x", "y"]].to_numpy().copy()
    emap.color_by("shape")
    colours = np.asarray(fig.data[IMAGE_TRACE].marker.color).copy()
    emap.select([1, 4, 9])

    proj = emap.reproject("tsne", perplexity=5, max_iter=250)
    assert emap.figure is fig and emap.projection is proj and proj.method == "tsne"
    np.testing.assert_allclose(emap.points[["x", "y"]].to_numpy(), proj.embedding_, atol=1e-6)
    np.testing.assert_array_equal(fig.data[IMAGE_TRACE].x, proj.embedding_[:, 0])
    np.testing.assert_array_equal(fig.data[IMAGE_TRACE].y, proj.embedding_[:, 1])
    # placed texts: t-SNE has no transform, so knn_place on the fitted images (its own reference)
    text_emb = tiny_clip.encode_texts(texts)
    want = knn_place(image_emb, proj.embedding_, text_emb, k=proj.transform_neighbors, metric="cosine")
    np.testing.assert_allclose(emap.texts[["x", "y"]].to_numpy(), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fig.data[TEXT_TRACE].x), want[:, 0], atol=1e-5)
    # colours and selection survive the move
    np.testing.assert_array_equal(np.asarray(fig.data[IMAGE_TRACE].marker.color), colours)
    assert emap.selected().tolist() == [1, 4, 9]

    fits = cache.fits
    emap.reproject("pca")  # fitted at build: from the cache, and the PCA coordinates again
    assert cache.fits == fits and cache.hits >= 1
    np.testing.assert_allclose(emap.points[["x", "y"]].to_numpy(), pca_xy, atol=1e-6)
    ref = PCA(n_components=2, random_state=0).fit(image_emb)
    np.testing.assert_allclose(emap.texts[["x", "y"]].to_numpy(), ref.transform(text_emb), atol=1e-5)
    emap.color_by("colour")  # recolouring never refits
    assert cache.fits == fits


def test_reproject_refits_texts_that_were_fitted_with_the_images(tiny_clip, image_emb):
    texts = ["a green star", "the word \"cat\"", "three red squares"]
    text_emb = tiny_clip.encode_texts(texts)
    emap = EmbeddingMap.build(image_emb, texts=texts, text_emb=text_emb, fit_texts=True, projection="pca",
                              cache=ProjectionCache())
    emap.add_texts(["a blue cross"], clip=tiny_clip)  # placed, not fitted
    emap.reproject("pca", whiten=True)
    joint = np.vstack([image_emb, text_emb])
    ref = PCA(n_components=2, whiten=True, random_state=0).fit(joint)
    np.testing.assert_allclose(emap.points[["x", "y"]].to_numpy(), ref.transform(image_emb), atol=1e-4)
    np.testing.assert_allclose(emap.texts[["x", "y"]].to_numpy()[:3], ref.transform(text_emb), atol=1e-4)
    np.testing.assert_allclose(emap.texts[["x", "y"]].to_numpy()[3:],
                               ref.transform(tiny_clip.encode_texts(["a blue cross"])), atol=1e-4)
    assert emap.texts["fitted"].tolist() == [True, True, True, False]


def test_reproject_bad_parameter_leaves_the_map_unchanged(image_emb):
    emap = EmbeddingMap.build(image_emb, projection="pca", cache=ProjectionCache())
    before = emap.points[["x", "y"]].to_numpy().copy()
    with pytest.raises(ValueError, match="perplexity=50"):
        emap.reproject("tsne", perplexity=50)
    with pytest.raises(TypeError, match="unknown parameter"):
        emap.reproject("umap", perplexity=5)
    np.testing.assert_array_equal(emap.points[["x", "y"]].to_numpy(), before)
    assert emap.projection.method == "pca"
