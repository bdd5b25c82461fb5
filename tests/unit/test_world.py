"""The shapes world: determinism, captions that match the factors, JSON round trips, rendering."""
import dataclasses
import re

import numpy as np
import pytest

from clipspace import world
from clipspace.world import COLOURS, Obj, Scene, Text


def test_generators_are_deterministic():
    a = [s.to_json() for s in world.mixed_scenes(50, seed=3)]
    b = [s.to_json() for s in world.mixed_scenes(50, seed=3)]
    c = [s.to_json() for s in world.mixed_scenes(50, seed=4)]
    assert a == b and a != c
    batch1 = next(world.training_pairs(7, 32))
    batch2 = next(world.training_pairs(7, 32))
    assert [(s.to_json(), c) for s, c in batch1] == [(s.to_json(), c) for s, c in batch2]


def test_rendering_is_deterministic_and_sized():
    s = world.mixed_scenes(1, seed=1)[0]
    for size in (32, 64, 224):
        img = s.render(size)
        assert img.size == (size, size) and img.mode == "RGB"
    assert np.array_equal(np.asarray(s.render(64)), np.asarray(s.render(64)))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_object_colour_and_position_are_where_the_scene_says(size):
    s = Scene((Obj("square", "blue", "large", 0.25, 0.7),), "white")
    arr = np.asarray(s.render(size)).astype(int)
    y, x = int(0.7 * size), int(0.25 * size)
    assert np.abs(arr[y, x] - COLOURS["blue"]).max() < 10  # centre of the square is blue
    assert np.abs(arr[2, size - 3] - world.BACKGROUNDS["white"]).max() < 10  # far corner is background


def test_renders_at_several_sizes_agree():
    s = world.relation_scenes(1)[0]
    small = np.asarray(s.render(32)).astype(float)
    big = np.asarray(s.render(128).resize((32, 32))).astype(float)
    assert np.abs(small - big).mean() < 8  # same picture, different resolution


def test_written_word_changes_pixels_and_opacity_matters():
    base = Scene((Obj("circle", "red", "small", 0.5, 0.35),), "white")
    written = dataclasses.replace(base, text=Text("star", 0.5, 0.8, 0.25, "black", 1.0))
    faint = dataclasses.replace(base, text=Text("star", 0.5, 0.8, 0.25, "black", 0.3))
    a, b, c = (np.asarray(s.render(64)).astype(int) for s in (base, written, faint))
    ink_full, ink_faint = np.abs(a - b).sum(), np.abs(a - c).sum()
    assert ink_full > 0 and 0 < ink_faint < ink_full
    assert np.abs(a[:32] - b[:32]).sum() < ink_full * 0.05  # the label sits in the lower band


def test_json_round_trip():
    for s in world.mixed_scenes(40, seed=11) + world.typographic_scenes(5):
        again = Scene.from_json(s.to_json())
        assert again == s
        assert np.array_equal(np.asarray(again.render(48)), np.asarray(s.render(48)))


def test_captions_name_the_factors():
    for s in world.single_objects(30):
        o = s.objects[0]
        for t in range(4):
            cap = s.caption(t)
            assert o.colour in cap and o.shape in cap
    for s in world.relation_scenes(30):
        a, b = s.objects
        rel = s.relation()
        cap = s.caption(0)
        assert cap.index(f"{a.colour} {a.shape}") < cap.index(f"{b.colour} {b.shape}")
        assert {"left of": "to the left of", "right of": "to the right of"}.get(rel, rel) in cap
        # the relation really is where the pixels are
        if rel == "left of":
            assert a.x < b.x
        if rel == "above":
            assert a.y < b.y
    for s in world.count_scenes(9):
        number = {1: "a", 2: "two", 3: "three"}[s.count]
        assert s.caption(0).startswith(number + " ")
    for s in world.typographic_scenes(10):
        assert f'the word "{s.text.word}"' in s.caption(0)
        assert s.text.word != s.objects[0].shape and s.text.word in world.SHAPES


def test_example_captions_read_as_english():
    s = Scene((Obj("circle", "red", "small", 0.2, 0.5), Obj("square", "blue", "small", 0.8, 0.5)), "white")
    assert s.caption(0) == "a red circle to the left of a blue square"
    s2 = Scene((Obj("star", "yellow", "small", 0.2, 0.5), Obj("star", "yellow", "small", 0.8, 0.5)), "white")
    assert s2.caption(0) == "two yellow stars"
    s3 = Scene((Obj("triangle", "green"),), "white", Text("circle"))
    assert s3.caption(0) == 'a green triangle with the word "circle" written on it'
    assert Scene((Obj("circle", "orange"),), "gray").caption(0) == "an orange circle"


def test_training_batches_pair_minimal_changes_and_have_unique_captions():
    batch = next(world.training_pairs(0, 64))
    caps = [c for _, c in batch]
    assert len(caps) == 64 and len(set(caps)) == 64
    # consecutive pairs differ in exactly one kind of factor; at least one pair is a colour swap
    swaps = 0
    for (s1, c1), (s2, c2) in zip(batch[0::2], batch[1::2]):
        assert s1 != s2 and c1 != c2
        if len(s1.objects) == 2 and len(s2.objects) == 2 and s1.text == s2.text:
            cols1, cols2 = [o.colour for o in s1.objects], [o.colour for o in s2.objects]
            swaps += cols1 == cols2[::-1] and cols1 != cols2
    assert swaps >= 1


def test_counted_objects_do_not_overlap():
    for s in world.count_scenes(30):
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1:]:
                assert np.hypot(a.x - b.x, a.y - b.y) > 2 * a.radius


def test_unknown_factor_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        Scene((Obj("circle", "teal"),)).render()
    with pytest.raises(ValueError, match="unknown shape"):
        Scene((Obj("blob", "red"),)).render()


def test_words_are_drawn_from_the_probe_vocabulary():
    scenes = world.word_scenes(len(world.WORDS))
    assert sorted(s.text.word for s in scenes) == sorted(world.WORDS)
    assert all(re.fullmatch(r'the word "\w+"', s.caption(0)) for s in scenes)
