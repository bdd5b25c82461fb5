"""The library paths behind notebooks 01 (zero-shot), 04 (binding) and 05 (typographic attacks):
each widget callback's computation, checked against an independent route (sklearn, the model's own
encoders, a plain zero-shot run), plus the in-place FigureWidget update the callbacks use."""
import dataclasses

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from sklearn.metrics import confusion_matrix

from clipspace import world
from clipspace.probes.binding import binding_pairs, binding_probe, pair_scores_figure
from clipspace.probes.typographic import (SKIMAGE_CLASSES, attack_classnames, attack_scene, photo_attack,
                                   scene_attack)
from clipspace.probes.zero_shot import (OPENAI_TEMPLATES, WORLD_TEMPLATES, ArticleTemplate, confusion_figure,
                                 fill_templates, parse_classnames, templates_for, world_factor, world_zero_shot,
                                 zero_shot)


# --- 01: typed classes, template sets, the probe and its heatmap ----------------------------------
def test_parse_classnames_and_world_factor():
    assert parse_classnames(" circle,square , ,star ") == ["circle", "square", "star"]
    with pytest.raises(ValueError, match="commas"):
        parse_classnames(" , ")
    assert world_factor(["star", "circle"]) == "shape"
    assert world_factor(list(world.COLOURS)[:2]) == "colour"
    assert world_factor(["circle", "red"]) is None and world_factor(["ipod"]) is None


def test_templates_for_each_set():
    assert templates_for("imagenet", ["x"]) == OPENAI_TEMPLATES and len(OPENAI_TEMPLATES) == 80
    assert fill_templates("circle", templates_for("single", ["circle"])) == ["a photo of a circle."]
    assert templates_for("world", ["circle", "star"]) == WORLD_TEMPLATES["shape"]
    assert templates_for("world", ["red", "blue"]) == WORLD_TEMPLATES["colour"]
    mixed = templates_for("world", ["red circle", "orange star"])
    assert mixed == [ArticleTemplate("{a} {}")]
    assert fill_templates("orange star", mixed) == ["an orange star"]  # the world's article
    with pytest.raises(ValueError, match="template_set"):
        templates_for("fancy", ["circle"])


def test_world_zero_shot_scores_only_scenes_of_the_typed_classes(tiny_clip):
    scenes = world.single_objects(12, seed=5)
    names = ["circle", "square", "star"]
    probe = world_zero_shot(tiny_clip, scenes, names, "world")
    truth = [s.objects[0].shape for s in scenes]
    expected_index = [i for i, t in enumerate(truth) if t in names]
    assert probe.factor == "shape" and probe.index.tolist() == expected_index and expected_index
    # Every scene is classified exactly as a plain zero-shot run would; the scored subset carries the truth.
    ref = zero_shot(tiny_clip, scenes, names, WORLD_TEMPLATES["shape"])
    np.testing.assert_allclose(probe.result.probs, ref.probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probe.scored.probs, ref.probs[expected_index], rtol=1e-5, atol=1e-6)
    assert probe.scored.true_names == [truth[i] for i in expected_index]
    # Passing the embeddings (as the notebook does after embedding once) changes nothing.
    z = tiny_clip.encode_images([s.render(tiny_clip.image_size) for s in scenes])
    again = world_zero_shot(tiny_clip, scenes, names, "world", embeddings=z)
    np.testing.assert_allclose(again.result.probs, probe.result.probs, rtol=1e-5, atol=1e-6)
    # Names that are not a world factor: classified, not scored.
    free = world_zero_shot(tiny_clip, scenes, ["red circle", "ipod"], "world")
    assert free.scored is None and free.factor is None and free.result.probs.shape == (12, 2)
    with pytest.raises(ValueError, match="embeddings has 3 rows"):
        world_zero_shot(tiny_clip, scenes, names, embeddings=np.zeros((3, tiny_clip.embed_dim), np.float32))


def test_confusion_figure_matches_sklearn_and_updates_a_figurewidget_in_place(tiny_clip):
    scenes = world.single_objects(16, seed=3)
    names = list(world.SHAPES)
    probe = world_zero_shot(tiny_clip, scenes, names, "single")
    fig = confusion_figure(probe.scored, title="shape")
    ref = confusion_matrix(probe.scored.labels, probe.scored.predictions, labels=range(len(names)))
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), ref)
    correct = int(np.trace(ref))
    assert f"accuracy {correct / 16:.2f} ({correct}/16)" in fig.layout.title.text
    # The notebook's callback: the same FigureWidget object, new content.
    widget = go.FigureWidget(confusion_figure(world_zero_shot(tiny_clip, scenes, ["circle", "star"]).scored))
    with widget.batch_update():
        widget.update(data=fig.data, layout=fig.layout, overwrite=True)
    np.testing.assert_array_equal(np.asarray(widget.data[0].z), ref)
    assert list(widget.data[0].x) == names and widget.layout.title.text == fig.layout.title.text


# --- 04: the swap-kind scatter and a typed caption pair -------------------------------------------
def test_pair_scores_figure_shows_the_pairs_of_one_kind(tiny_clip):
    rows = binding_pairs(4)
    result = binding_probe(tiny_clip, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                           [r[3] for r in rows])
    summary = result.summary().set_index("kind")
    for kind in ("colour", "relation", "count", "all"):
        fig = pair_scores_figure(result, kind)
        mask = np.ones(12, bool) if kind == "all" else np.array(result.kinds) == kind
        np.testing.assert_allclose(fig.data[1].x, result.true_scores[mask])
        np.testing.assert_allclose(fig.data[1].y, result.swapped_scores[mask])
        assert f"wins {summary.loc[kind, 'accuracy']:.0%} of {mask.sum()}" in fig.layout.title.text
    with pytest.raises(ValueError, match="kind='size'"):
        pair_scores_figure(result, "size")


def test_a_typed_caption_pair_scores_as_the_model_does(tiny_clip):
    scene = binding_pairs(1, kinds=["colour"])[0][0]
    a, b = "a red circle", "two blue stars"
    r = binding_probe(tiny_clip, [scene], [a], [b])
    with torch.no_grad():  # the reference: open_clip's own encoders, normalised by hand
        img = tiny_clip.model.encode_image(tiny_clip.preprocess(scene.render(tiny_clip.image_size))[None])
        txt = tiny_clip.model.encode_text(tiny_clip.tokenizer([a, b]))
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    expected = (txt @ img[0]).numpy()
    np.testing.assert_allclose([r.true_scores[0], r.swapped_scores[0]], expected, atol=1e-5)
    with pytest.raises(ValueError, match="identical"):
        binding_probe(tiny_clip, [scene], [a], [a])


# --- 05: writing a word on one scene, the Figure-6 bars, the photo route ---------------------------
def test_attack_scene_writes_with_the_worlds_renderer():
    scene = dataclasses.replace(world.typographic_scenes(1)[0], text=None)
    hit = attack_scene(scene, " ipod ", x=0.5, y=0.8, size=0.3, opacity=0.5)
    assert hit.text == world.Text("ipod", 0.5, 0.8, 0.3, world._text_colour_for(scene.background), 0.5)
    assert hit.objects == scene.objects and scene.text is None  # the original is untouched
    clean, attacked = (np.asarray(s.render(64), int) for s in (scene, hit))
    changed = np.nonzero((clean != attacked).any(axis=(1, 2)))[0]
    assert changed.min() >= 64 * 0.55  # only the band around y = 0.8
    invisible = attack_scene(scene, "ipod", opacity=0.0)
    np.testing.assert_array_equal(np.asarray(invisible.render(64)), clean.astype(np.uint8))
    for bad in (dict(word=""), dict(word="cat", x=1.5), dict(word="cat", size=0), dict(word="cat", opacity=2),
                dict(word="cat", colour="chartreuse")):
        with pytest.raises(ValueError):
            attack_scene(scene, **bad)


def test_scene_attack_probabilities_equal_a_plain_zero_shot_run(tiny_clip):
    scene = world.typographic_scenes(2)[1]
    assert attack_classnames("star") == list(world.SHAPES)
    assert attack_classnames("ipod") == list(world.SHAPES) + ["ipod"]
    sa = scene_attack(tiny_clip, scene, "ipod", size=0.3, image_size=96)
    clean_scene = dataclasses.replace(scene, text=None)
    ref = zero_shot(tiny_clip, [clean_scene, attack_scene(clean_scene, "ipod", size=0.3)], sa.classnames,
                    WORLD_TEMPLATES["shape"])
    np.testing.assert_allclose(np.stack([sa.clean_probs, sa.attacked_probs]), ref.probs, rtol=1e-5, atol=1e-6)
    assert sa.clean.size == (96, 96) and sa.attacked.tobytes() != sa.clean.tobytes()
    assert sa.attacked_scene.text.word == "ipod" and sa.attacked_prediction == ref.predicted_names[1]
    fig = sa.figure(top=None)
    assert [t.name for t in fig.data] == ["clean", "attacked"]
    bar = {y: x for x, y in zip(fig.data[1].x, fig.data[1].y)}
    assert bar == pytest.approx(dict(zip(sa.classnames, sa.attacked_probs)))


def test_photo_attack_writes_the_word_on_skimage_photos(tiny_clip):
    result = photo_attack(tiny_clip, "ipod", names=["chelsea", "coffee"], templates=["a photo of a {}."])
    assert result.words == ["ipod", "ipod"] and result.clean.classnames == SKIMAGE_CLASSES
    assert result.clean.true_names == ["cat", "cup of coffee"]
    assert result.eligible.all()  # "ipod" is a class and neither photo's truth
    assert not np.allclose(result.clean.probs, result.attacked.probs)
