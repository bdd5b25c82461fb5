"""Notebook 02's map panel and notebook 00's gallery, driven headless by setting their controls."""
import numpy as np
import pytest
from sklearn.decomposition import PCA

from clipspace import world
from clipspace.maps.embedding_map import IMAGE_TRACE, EmbeddingMap, scene_table
from clipspace.notebook.gallery_panel import GalleryPanel
from clipspace.notebook.map_panel import MapPanel
from clipspace.maps.projections import ProjectionCache
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
