"""Zero-shot: the prompt-ensemble classifier equals open_clip's own, and the scores match sklearn."""
import json

import numpy as np
import open_clip
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, top_k_accuracy_score

from clipspace import world
from clipspace.probes.zero_shot import (OPENAI_TEMPLATES, SIMPLE_TEMPLATES, WORLD_TEMPLATES, ZeroShotClassifier,
                                 build_classifier, classify, fill_templates, logit_scale, world_classnames,
                                 world_labels, zero_shot)


CLASSES = ["circle", "square", "triangle", "star", "orange blob"]


@pytest.fixture(scope="module")
def micro_vit(build_random_clip):
    """A second open_clip architecture (a ViT with its own text tower), tiny and random."""
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    cfg = {"embed_dim": 48,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
           "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    (d / "test-micro-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    return build_random_clip("test-micro-vit", seed=1)


def _open_clip_weights(clip, classnames, templates, per_batch):
    w = open_clip.build_zero_shot_classifier(clip.model, clip.tokenizer, classnames, templates,
                                             num_classes_per_batch=per_batch, device="cpu", use_tqdm=False)
    return w.numpy()


@pytest.mark.parametrize("templates", [SIMPLE_TEMPLATES, ["a photo of a {}.", "a drawing of a {}"],
                                       WORLD_TEMPLATES["colour"]], ids=["simple-lambdas", "format", "world-article"])
def test_build_classifier_equals_open_clip(tiny_clip, templates):
    ours = build_classifier(tiny_clip, CLASSES, templates, batch_size=7)
    ref = _open_clip_weights(tiny_clip, CLASSES, templates, per_batch=2)
    assert ours.shape == (tiny_clip.embed_dim, len(CLASSES))
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=0), 1.0, atol=1e-5)


def test_build_classifier_equals_open_clip_on_a_vit(micro_vit):
    templates = OPENAI_TEMPLATES[:12]
    ours = build_classifier(micro_vit, CLASSES, templates)
    np.testing.assert_allclose(ours, _open_clip_weights(micro_vit, CLASSES, templates, None), atol=1e-5)


def test_probabilities_predictions_and_scores_match_references(tiny_clip):
    scenes = world.single_objects(10, seed=3)
    images = [s.render(64) for s in scenes]
    labels = world_labels(scenes, "shape")
    classes = world_classnames("shape")
    res = zero_shot(tiny_clip, images, classes, WORLD_TEMPLATES["shape"], labels=labels, top_k=3)

    # Reference: open_clip's encoders and classifier straight from torch.
    with torch.no_grad():
        pixels = torch.stack([tiny_clip.preprocess(im) for im in images])
        z = tiny_clip.model.encode_image(pixels, normalize=True).numpy()
    w = _open_clip_weights(tiny_clip, classes, WORLD_TEMPLATES["shape"], None)
    logits = tiny_clip.model.logit_scale.exp().item() * z @ w
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(res.probs, probs, atol=1e-4)
    # the probabilities are the softmax of the model's own logits, stable at any temperature
    np.testing.assert_allclose(res.probs, torch.softmax(torch.from_numpy(res.logits).double(), 1).numpy(), atol=1e-7)
    hot = ZeroShotClassifier(res.classnames, ["{}"], w, 1e4).classify(z).probs  # logits ~1e4: no overflow
    assert np.isfinite(hot).all() and np.allclose(hot.sum(1), 1)
    top2 = np.sort(probs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4  # a random model nearly ties; compare argmax where it does not
    np.testing.assert_array_equal(res.predictions[clear], probs.argmax(1)[clear])
    assert abs(logit_scale(tiny_clip) - 1 / 0.07) < 1e-3  # open_clip's initial temperature

    y = np.array([classes.index(lab) for lab in labels])
    assert res.accuracy == pytest.approx(accuracy_score(y, res.predictions))
    assert res.top_k_accuracy() == pytest.approx(top_k_accuracy_score(y, res.probs, k=3,
                                                                      labels=range(len(classes))))
    np.testing.assert_array_equal(res.confusion_matrix().to_numpy(),
                                  confusion_matrix(y, res.predictions, labels=range(len(classes))))
    assert res.per_class()["n"].sum() == 10

    table = res.table()
    assert list(table.columns) == ["image", "prediction", "probability", "top_k", "true", "correct"]
    assert len(table) == 10 and table["correct"].mean() == pytest.approx(res.accuracy)
    assert all(len(t.split(", ")) == 3 for t in table["top_k"])
    assert [row[0][0] for row in res.top_k()] == res.predicted_names

    # Embeddings in, same answer out; a prebuilt weight matrix too; Scenes are rendered for the model.
    again = zero_shot(tiny_clip, z, classes, WORLD_TEMPLATES["shape"], labels=labels)
    np.testing.assert_allclose(again.probs, res.probs, atol=1e-5)
    np.testing.assert_allclose(classify(tiny_clip, z, classes, weights=w).probs, probs, atol=1e-4)
    from_scenes = zero_shot(tiny_clip, scenes, classes, WORLD_TEMPLATES["shape"])
    np.testing.assert_allclose(from_scenes.probs, res.probs, atol=1e-4)


def test_a_temperature_override_sharpens_but_keeps_the_ranking(tiny_clip, rng):
    z = rng.normal(size=(6, tiny_clip.embed_dim)).astype(np.float32)
    zsc = ZeroShotClassifier.from_clip(tiny_clip, CLASSES, ["a {}"], scale=100.0)
    soft = ZeroShotClassifier(zsc.classnames, zsc.templates, zsc.weights, 1.0)
    a, b = zsc.classify(z), soft.classify(z)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert a.probs.max(1).mean() > b.probs.max(1).mean()


def test_world_templates_speak_the_worlds_captions():
    for shape in world.SHAPES:
        captions = {world.Scene((world.Obj(shape, c),)).caption(0) for c in world.COLOURS}
        assert set(fill_templates(shape, WORLD_TEMPLATES["shape"])) == captions
    for colour in world.COLOURS:
        captions = {world.Scene((world.Obj(s, colour),)).caption(0) for s in world.SHAPES}
        assert set(fill_templates(colour, WORLD_TEMPLATES["colour"])) == captions
    assert "an orange star" in fill_templates("orange", WORLD_TEMPLATES["colour"])
    word = world.Scene((), "white", world.Text("star"))
    assert fill_templates("star", WORLD_TEMPLATES["word"]) == [word.caption()]


def test_bad_input_says_what_to_do(tiny_clip):
    with pytest.raises(TypeError, match="bare string"):
        build_classifier(tiny_clip, CLASSES, "a photo of a {}")
    with pytest.raises(ValueError, match="one '\\{\\}'"):
        build_classifier(tiny_clip, CLASSES, ["a photo"])
    with pytest.raises(ValueError, match="repeats"):
        build_classifier(tiny_clip, ["cat", "cat"], ["a {}"])
    z = np.eye(2, tiny_clip.embed_dim, dtype=np.float32)
    with pytest.raises(ValueError, match="not one of the classnames"):
        zero_shot(tiny_clip, z, CLASSES, ["a {}"], labels=["circle", "dog"])
    with pytest.raises(ValueError, match="no labels"):
        _ = zero_shot(tiny_clip, z, CLASSES, ["a {}"]).accuracy
    with pytest.raises(ValueError, match="factor"):
        world_classnames("texture")
