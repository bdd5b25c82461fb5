"""Notebook 01's panel, driven headless by setting its controls' values, as the widgets in the browser do.

The figures are checked against zero-shot computed here by hand: prompt-ensembled class embeddings
from clip.encode_texts, cosines with clip.encode_images, sklearn's confusion matrix."""
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from clipspace import load_clip, world  # noqa: F401 (load_clip's module registers the tiny architecture)
from clipspace.notebook.zero_shot_panel import ZeroShotPanel
from clipspace.probes.zero_shot import PHOTO_TEMPLATES, WORLD_TEMPLATES, fill_templates, logit_scale

N = 8


@pytest.fixture(scope="module")
def scenes():
    return world.single_objects(N)


@pytest.fixture(scope="module")
def scene_emb(tiny_clip, scenes):
    return tiny_clip.encode_images([s.render(tiny_clip.image_size) for s in scenes], progress=False)


@pytest.fixture
def panel(tiny_clip, scenes, scene_emb):
    return ZeroShotPanel(tiny_clip, scenes, embeddings=scene_emb)


def hand_probs(clip, emb, classnames, templates):
    """softmax(scale * cos(image, mean of the normalised template embeddings)) for each scene."""
    w = np.stack([clip.encode_texts(fill_templates(c, templates)).mean(axis=0) for c in classnames])
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    z = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    logits = logit_scale(clip) * z @ w.T
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def hand_confusion(probs, scenes, classnames):
    truth = [classnames.index(s.objects[0].shape) for s in scenes]
    return confusion_matrix(truth, probs.argmax(axis=1), labels=range(len(classnames)))


def bar_probs(bars) -> dict:
    """{class: probability} as the horizontal bars show them."""
    return dict(zip(bars.data[0].y, bars.data[0].x))


def test_opens_with_the_world_shape_classifier_and_its_confusion_matrix(panel, tiny_clip, scenes, scene_emb):
    assert panel._draw["classifier"].last_error is None
    shapes = list(world.SHAPES)
    probs = hand_probs(tiny_clip, scene_emb, shapes, WORLD_TEMPLATES["shape"])
    np.testing.assert_array_equal(np.asarray(panel.confusion.data[0].z), hand_confusion(probs, scenes, shapes))
    assert list(panel.confusion.data[0].x) == shapes
    assert panel.confusion.layout.title.text.startswith("shape, world templates: accuracy")
    assert set(panel.figures()) == {"zero_shot_confusion", "zero_shot_bars"}


def test_template_set_single_rebuilds_the_classifier(panel, tiny_clip, scenes, scene_emb):
    panel.controls.template_set.value = "single"
    probs = hand_probs(tiny_clip, scene_emb, list(world.SHAPES), PHOTO_TEMPLATES)
    np.testing.assert_array_equal(np.asarray(panel.confusion.data[0].z),
                                  hand_confusion(probs, scenes, list(world.SHAPES)))
    assert 'a single "a photo of a {}."' in panel.confusion.layout.title.text
    got = bar_probs(panel.bars)
    np.testing.assert_allclose([got[c] for c in world.SHAPES], probs[0], atol=1e-5)


def test_the_scene_slider_shows_that_scenes_probabilities(panel, tiny_clip, scenes, scene_emb):
    z_before = np.asarray(panel.confusion.data[0].z).copy()
    panel.controls.scene.value = 5
    probs = hand_probs(tiny_clip, scene_emb, list(world.SHAPES), WORLD_TEMPLATES["shape"])[5]
    got = bar_probs(panel.bars)
    np.testing.assert_allclose([got[c] for c in world.SHAPES], probs, atol=1e-5)
    assert panel.bars.layout.title.text == f"{scenes[5].caption(0)} → {world.SHAPES[int(probs.argmax())]}"
    np.testing.assert_array_equal(np.asarray(panel.confusion.data[0].z), z_before)  # only the bars redraw
    assert panel.picture.value


def test_colour_names_score_colours(panel, tiny_clip, scenes, scene_emb):
    colours = list(world.COLOURS)
    panel.controls.classes.value = ", ".join(colours)
    probs = hand_probs(tiny_clip, scene_emb, colours, WORLD_TEMPLATES["colour"])
    truth = [colours.index(s.objects[0].colour) for s in scenes]
    np.testing.assert_array_equal(np.asarray(panel.confusion.data[0].z),
                                  confusion_matrix(truth, probs.argmax(axis=1), labels=range(len(colours))))
    assert panel.confusion.layout.title.text.startswith("colour, world templates")


def test_names_the_world_does_not_know_keep_the_last_confusion_matrix(panel):
    panel.controls.template_set.value = "single"
    z_before, title = np.asarray(panel.confusion.data[0].z).copy(), panel.confusion.layout.title.text
    panel.controls.classes.value = "ipod, dog"
    assert panel._draw["classifier"].last_error is None and panel.probe.scored is None
    np.testing.assert_array_equal(np.asarray(panel.confusion.data[0].z), z_before)
    assert panel.confusion.layout.title.text == title
    assert set(bar_probs(panel.bars)) == {"ipod", "dog"}


def test_a_probe_seed_draws_new_scenes_and_zero_returns_to_the_given_ones(panel, scenes):
    panel.controls.seed.value = 3
    assert panel.scenes == world.single_objects(N, world.PROBE_SEED + 3)
    assert panel.embeddings.shape == (N, panel.clip.embed_dim)
    assert int(np.asarray(panel.confusion.data[0].z).sum()) == N
    panel.controls.seed.value = 0
    assert panel.scenes is panel.given and panel.scenes == scenes


def test_an_empty_class_box_shows_the_error_in_the_panel(panel):
    panel.controls.classes.value = " , "
    assert isinstance(panel._draw["classifier"].last_error, ValueError)
    assert "no class names" in "".join(o.get("text", "") for o in panel.output.outputs)
    panel.controls.classes.value = "circle, square"
    assert panel._draw["classifier"].last_error is None and panel.output.outputs == ()
