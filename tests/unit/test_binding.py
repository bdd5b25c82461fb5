"""Attribute binding: the pairs differ only in binding, and the scores equal cosines computed by hand."""
import re
from collections import Counter

import numpy as np
import pytest
from scipy.stats import binomtest

from clipspace.probes.binding import (BindingResult, binding_figure, binding_pairs, binding_probe, wilson_interval,
                               world_binding)


def test_pairs_swap_only_the_binding():
    rows = binding_pairs(9)
    assert Counter(r[3] for r in rows) == {"colour": 9, "relation": 9, "count": 9}
    for scene, true, swapped, kind in rows:
        assert true == scene.caption(0) and true != swapped
        words = lambda c: Counter(re.findall(r"\w+", c))  # noqa: E731
        if kind == "colour":  # same bag of words, other binding
            assert words(true) == words(swapped)
        if kind == "relation":
            mirrored = {"left": "right", "right": "left", "above": "below", "below": "above"}
            assert " ".join(mirrored.get(w, w) for w in true.split()) == swapped
        if kind == "count":
            number = {"a": 1, "an": 1, "two": 2, "three": 3}
            k_true, k_swap = number[true.split()[0]], number[swapped.split()[0]]
            assert k_true == scene.count and abs(k_swap - k_true) == 1  # a neighbouring count
            assert true.split()[1] == swapped.split()[1]  # same colour (and shape, singular or plural)
            assert swapped.split()[2].startswith(scene.objects[0].shape)
    again = binding_pairs(9)
    assert [(r[0].to_json(), r[1], r[2]) for r in rows] == [(r[0].to_json(), r[1], r[2]) for r in again]
    assert binding_pairs(3, seed=1)[0][1] != rows[0][1] or binding_pairs(3, seed=1)[0][0] != rows[0][0]
    with pytest.raises(ValueError, match="binding kind"):
        binding_pairs(2, kinds=["texture"])


def test_probe_scores_are_the_cosines(tiny_clip):
    rows = binding_pairs(4)
    images = [r[0].render(64) for r in rows]
    res = binding_probe(tiny_clip, images, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
    z = tiny_clip.encode_images(images)
    t, s = tiny_clip.encode_texts([r[1] for r in rows]), tiny_clip.encode_texts([r[2] for r in rows])
    true, swap = (z * t).sum(1), (z * s).sum(1)
    np.testing.assert_allclose(res.true_scores, true, atol=1e-5)
    np.testing.assert_allclose(res.swapped_scores, swap, atol=1e-5)
    summary = res.summary().set_index("kind")
    assert list(summary.index) == ["colour", "relation", "count", "all"]
    for kind in ("colour", "relation", "count"):
        m = np.array([r[3] == kind for r in rows])
        assert summary.loc[kind, "accuracy"] == pytest.approx(np.mean(true[m] > swap[m]))
        assert summary.loc[kind, "n"] == 4
    assert summary.loc["all", "accuracy"] == pytest.approx(np.mean(true > swap))
    # the world shortcut is the same probe
    np.testing.assert_allclose(world_binding(tiny_clip, 4).true_scores, res.true_scores, atol=1e-5)
    assert len(binding_figure(res).data) == 1


def test_wins_ties_and_intervals():
    r = BindingResult(["a"] * 4, ["b"] * 4, ["x", "x", "y", "y"], np.array([.3, .2, .1, .5]),
                      np.array([.1, .2, .4, .5]))
    np.testing.assert_array_equal(r.wins, [1, .5, 0, .5])
    s = r.summary().set_index("kind")
    assert s.loc["x", "accuracy"] == .75 and s.loc["y", "accuracy"] == .25 and s.loc["all", "accuracy"] == .5
    for k, n in [(0, 10), (7, 10), (10, 10), (41, 60)]:
        ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
        np.testing.assert_allclose(wilson_interval(k, n), (ci.low, ci.high), atol=1e-9)


def test_bad_pairs_are_refused(tiny_clip):
    z = np.eye(2, tiny_clip.embed_dim, dtype=np.float32)
    with pytest.raises(ValueError, match="identical"):
        binding_probe(tiny_clip, z, ["a red circle", "x"], ["a red circle", "y"])
    with pytest.raises(ValueError, match="one entry per image"):
        binding_probe(tiny_clip, z, ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="caption pairs"):
        binding_probe(tiny_clip, z, ["a"], ["b"])
