"""Typographic attacks: writing leaves the original alone and lands where asked; the probe's rates
equal the ones computed by hand from two plain zero-shot runs."""
import dataclasses
from pathlib import Path

import numpy as np
import open_clip
import pytest
from PIL import Image

from clipspace import world
from clipspace.probes.typographic import (SKIMAGE_CLASSES, SKIMAGE_LABELS, TypographicResult, class_probability_bars,
                                   skimage_photos, typographic_attack, world_attack, write_text)
from clipspace.probes.zero_shot import WORLD_TEMPLATES, ZeroShotResult, world_classnames, zero_shot


@pytest.fixture
def grey():
    return Image.new("RGB", (64, 64), (128, 128, 128))


def test_write_text_writes_a_new_image_where_asked(grey):
    before = grey.tobytes()
    out = write_text(grey, "ipod", position="bottom", size=0.2, colour="white")
    assert grey.tobytes() == before and out is not grey and out.size == grey.size
    diff = np.abs(np.asarray(out, int) - np.asarray(grey, int)).sum(axis=2) > 0
    rows = np.nonzero(diff.any(axis=1))[0]
    assert rows.min() >= 64 * 0.6 and rows.max() <= 63  # only the bottom band changed
    centre = write_text(grey, "ipod", position=(0.5, 0.5), size=0.2)
    rows = np.nonzero((np.asarray(centre, int) != np.asarray(grey, int)).any(axis=(1, 2)))[0]
    assert 20 <= rows.min() and rows.max() <= 44
    # Invisible text changes nothing; a box covers more pixels than the letters alone.
    assert write_text(grey, "ipod", opacity=0.0).tobytes() == before
    boxed = write_text(grey, "ipod", box="white", colour="black")
    assert (np.asarray(boxed) != np.asarray(grey)).any(axis=2).sum() > diff.sum()
    # Long words shrink to fit instead of running off the edge.
    wide = write_text(grey, "a very long label indeed", position="center", size=0.3)
    cols = np.nonzero((np.asarray(wide) != np.asarray(grey)).any(axis=(0, 2)))[0]
    assert cols.min() > 0 and cols.max() < 63


def test_write_text_fonts_and_bad_input(grey, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ttf"):
        write_text(grey, "cat", font=tmp_path / "nope.ttf")
    with pytest.raises(ValueError, match="position"):
        write_text(grey, "cat", position="left")
    with pytest.raises(ValueError, match="colour"):
        write_text(grey, "cat", colour="chartreuse")
    with pytest.raises(ValueError, match="text"):
        write_text(grey, "")
    dejavu = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if dejavu.exists():
        a = write_text(grey, "cat", font=dejavu, size=0.3)
        assert a.tobytes() != write_text(grey, "cat", size=0.3).tobytes()


def _result(probs, labels, classes):
    probs = np.asarray(probs, float)
    return ZeroShotResult(classes, np.log(probs), probs, np.asarray(labels), 2)


def test_flip_rate_counts_only_words_that_are_other_classes():
    classes = ["circle", "square", "star"]
    labels = [0, 0, 1, 2, 1]
    words = ["square", "star", "circle", "star", "ipod"]  # image 3's word is its own class, image 4's no class
    clean = _result([[.8, .1, .1], [.6, .1, .3], [.1, .8, .1], [.1, .1, .8], [.2, .7, .1]], labels, classes)
    attacked = _result([[.2, .7, .1], [.6, .1, .3], [.7, .2, .1], [.1, .1, .8], [.5, .4, .1]], labels, classes)
    r = TypographicResult(clean, attacked, words)
    np.testing.assert_array_equal(r.eligible, [True, True, True, False, False])
    s = r.summary().iloc[0]
    assert s["n"] == 5 and s["n_eligible"] == 3
    assert s["clean_accuracy"] == 1.0 and s["attacked_accuracy"] == pytest.approx(2 / 5)
    assert s["flip_rate"] == pytest.approx(2 / 3) and s["clean_word_rate"] == 0.0
    per = r.per_class().set_index("class")
    assert per.loc["circle", "flip_rate"] == 0.5 and per.loc["square", "flip_rate"] == 1.0
    assert np.isnan(per.loc["star", "flip_rate"]) and per.loc["square", "n"] == 2
    t = r.table()
    assert list(t["attacked_prediction"]) == ["square", "circle", "circle", "star", "circle"]
    assert t["attacked_p_word"].iloc[0] == pytest.approx(0.7) and np.isnan(t["attacked_p_word"].iloc[4])


def test_world_attack_equals_the_hand_computed_rates(tiny_clip):
    scenes = world.typographic_scenes(8, seed=5)
    r = world_attack(tiny_clip, n=8, seed=5)
    classes, truth = world_classnames("shape"), np.array([s.objects[0].shape for s in scenes])
    # By hand: one embedding call for clean then attacked renders (a random model's scores nearly
    # tie, so the same batch keeps the argmax comparable), open_clip's classifier, numpy argmax.
    images = [dataclasses.replace(s, text=None).render(64) for s in scenes] + [s.render(64) for s in scenes]
    z = tiny_clip.encode_images(images)
    w = open_clip.build_zero_shot_classifier(tiny_clip.model, tiny_clip.tokenizer, classes,
                                             WORLD_TEMPLATES["shape"], device="cpu").numpy()
    pred = np.array(classes)[(z @ w).argmax(1)]
    clean, attacked = pred[:8], pred[8:]
    np.testing.assert_array_equal(r.clean.predicted_names, clean)
    np.testing.assert_array_equal(r.attacked.predicted_names, attacked)
    words = np.array([s.text.word for s in scenes])  # every word is another shape: all eligible
    s = r.summary().iloc[0]
    assert s["n_eligible"] == 8 and s["flip_rate"] == pytest.approx(np.mean(attacked == words))
    assert s["clean_word_rate"] == pytest.approx(np.mean(clean == words))
    assert s["clean_accuracy"] == pytest.approx(np.mean(clean == truth))
    assert s["attacked_accuracy"] == pytest.approx(np.mean(attacked == truth))


def test_attack_on_plain_images_writes_the_word(tiny_clip, grey):
    images = [grey, Image.new("RGB", (64, 64), (200, 30, 30))]
    r = typographic_attack(tiny_clip, images, ["circle", "star"], "square", ["circle", "square", "star"],
                           ["a {}"], size=0.3, colour="white")
    direct = zero_shot(tiny_clip, [write_text(im, "square", size=0.3, colour="white") for im in images],
                       ["circle", "square", "star"], ["a {}"])
    np.testing.assert_allclose(r.attacked.probs, direct.probs, atol=1e-5)
    with pytest.raises(ValueError, match="attack_words"):
        typographic_attack(tiny_clip, images, ["circle", "star"], None, ["circle", "star"], ["a {}"])


def test_probability_bars():
    classes = ["a", "b", "c", "d"]
    fig = class_probability_bars({"clean": [0.7, 0.1, 0.1, 0.1], "attacked": [0.1, 0.05, 0.8, 0.05]}, classes,
                                 "x", top=2)
    assert [t.name for t in fig.data] == ["clean", "attacked"]
    # the two classes most probable in either image, the most probable (c) drawn on top (last)
    assert list(fig.data[0].y) == ["a", "c"] and list(fig.data[1].x) == [0.1, 0.8]
    with pytest.raises(ValueError, match="classnames"):
        class_probability_bars([0.5, 0.5], classes)


def test_skimage_photos_are_bundled_rgb_images():
    photos = skimage_photos()
    assert set(photos) == set(SKIMAGE_LABELS) and set(SKIMAGE_LABELS.values()) <= set(SKIMAGE_CLASSES)
    assert all(im.mode == "RGB" and min(im.size) >= 256 for im in photos.values())
    with pytest.raises(ValueError, match="bundled"):
        skimage_photos(["lena"])
