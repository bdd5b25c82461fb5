"""Factor probes: balanced scenes whose labels match what is drawn; a probe reads a factor that is in
the features by construction and reads nothing from noise."""
import numpy as np
import pandas as pd
import pytest

from clipspace import world
from clipspace.probes.factors import (FACTORS, POSITIONS, WORD_CLASSES, factor_bar_chart, factor_captions,
                                     factor_labels, factor_scenes, factor_table, probe_accuracy,
                                     world_factor_table)


@pytest.fixture(scope="module")
def scenes():
    return factor_scenes(120, seed=1)


def test_scenes_are_balanced_deterministic_and_well_formed(scenes):
    labels = factor_labels(scenes)
    for f, classes in [("colour", world.COLOURS), ("shape", world.SHAPES), ("count", (1, 2, 3)),
                       ("position", POSITIONS), ("background", world.BACKGROUNDS), ("size", world.SIZES),
                       ("word", WORD_CLASSES)]:
        counts = labels[f].value_counts()
        assert set(counts.index) == set(classes), f
        assert counts.max() - counts.min() <= 1, f
    assert labels["size"].notna().sum() == 40 and labels["word"].notna().sum() == 60
    assert [s.to_json() for s in factor_scenes(120, seed=1)] == [s.to_json() for s in scenes]
    assert [s.to_json() for s in factor_scenes(120, seed=2)] != [s.to_json() for s in scenes]
    for s in scenes:
        objs = s.objects
        for i, a in enumerate(objs):  # inside the image, not overlapping
            assert a.radius <= a.x <= 1 - a.radius and a.radius <= a.y <= 1 - a.radius
            for b in objs[i + 1:]:
                assert np.hypot(a.x - b.x, a.y - b.y) > 2 * a.radius
        if s.text is not None:  # objects stay clear of the word's band
            assert max(o.y + o.radius for o in objs) <= 0.62 + 1e-9
    caps = factor_captions(scenes[:8])
    assert caps == [s.caption(i % 4) for i, s in enumerate(scenes[:8])]


def test_labels_are_read_off_the_scene():
    a = world.Obj("circle", "red", "large", x=0.2)
    b = world.Obj("square", "blue", "small", x=0.9)
    lab = factor_labels([world.Scene((a,), "gray"), world.Scene((a, b), "black", world.Text("cat"))])
    first = lab.iloc[0].to_dict()
    assert pd.isna(first.pop("word"))
    assert first == {"colour": "red", "shape": "circle", "size": "large", "position": "left", "count": 1,
                     "background": "gray"}
    row = lab.iloc[1]
    assert pd.isna(row["colour"]) and pd.isna(row["shape"]) and pd.isna(row["size"])
    assert row["position"] == "centre" and row["count"] == 2 and row["word"] == "cat"


def test_probe_reads_a_planted_factor_and_not_noise(scenes, rng):
    labels = factor_labels(scenes)
    colours = list(world.COLOURS)
    onehot = np.eye(len(colours))[[colours.index(c) for c in labels["colour"]]]
    planted = np.hstack([onehot, 0.1 * rng.normal(size=(len(scenes), 20))])
    noise = rng.normal(size=(len(scenes), 28))
    table = factor_table(scenes, planted, noise, seed=0).set_index("factor")
    assert list(table.index) == list(FACTORS)
    assert table.loc["colour", "image_accuracy"] == 1.0
    assert table.loc["colour", "chance"] == pytest.approx(1 / 8)
    assert table.loc["count", "chance"] == pytest.approx(1 / 3) and table.loc["size", "n"] == 40
    # noise: every factor near chance (generous bound: 120 scenes, 5 folds)
    assert (table["text_accuracy"] < table["chance"] + 0.2).all()
    # the planted colour says nothing about the other factors, which are balanced independently
    others = table.drop(index="colour")
    assert (others["image_accuracy"] < others["chance"] + 0.25).all()
    # same seed, same folds, same number
    assert factor_table(scenes, planted, None, factors=["colour"], seed=0)["image_accuracy"].iloc[0] == 1.0
    fig = factor_bar_chart(table.reset_index())
    assert [t.name for t in fig.data] == ["image embedding", "caption embedding", "chance"]


def test_probe_accuracy_edge_cases(rng):
    X = rng.normal(size=(10, 3))
    assert np.isnan(probe_accuracy(X, ["a"] * 10))  # one class
    assert np.isnan(probe_accuracy(X, ["a"] * 9 + ["b"]))  # a class with one example
    y = np.array(["a", "b"] * 5)
    assert probe_accuracy(X + 5 * (y == "a")[:, None], y) == 1.0
    assert probe_accuracy(X, y, seed=3) == probe_accuracy(X, y, seed=3)
    with pytest.raises(ValueError, match="labels"):
        probe_accuracy(X, y[:5])
    with pytest.raises(ValueError, match="one row per scene"):
        factor_table(factor_scenes(4), X, None)


def test_runs_on_a_real_clip(tiny_clip):
    table = world_factor_table(tiny_clip, n=36, seed=3, factors=["colour", "position", "word"])
    assert isinstance(table, pd.DataFrame) and list(table["factor"]) == ["colour", "position", "word"]
    assert table["image_accuracy"].between(0, 1).all() and table["text_accuracy"].between(0, 1).all()
