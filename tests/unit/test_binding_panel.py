"""Notebook 04's panel, driven headless by setting its controls' values and pressing its button.

The figures are checked against cosines computed here from clip.encode_images / clip.encode_texts."""
import numpy as np
import pytest

from clipspace import load_clip  # noqa: F401 (load_clip's module registers the tiny architecture)
from clipspace.probes.binding import binding_pairs
from clipspace.notebook.binding_panel import BindingPanel

N = 3  # pairs per kind


@pytest.fixture(scope="module")
def rows():
    return binding_pairs(N)


@pytest.fixture
def panel(tiny_clip, rows):
    return BindingPanel(tiny_clip, rows)


def cosine(clip, scene, caption) -> float:
    z = clip.encode_images([scene.render(clip.image_size)], progress=False)[0]
    t = clip.encode_texts([caption])[0]
    return float(z @ t / (np.linalg.norm(z) * np.linalg.norm(t)))


def test_opens_on_the_colour_pairs_scored_by_hand(panel, tiny_clip, rows):
    assert all(d.last_error is None for d in panel._draw.values())
    colour = [r for r in rows if r[3] == "colour"]
    points = panel.scatter.data[1]
    np.testing.assert_allclose(points.x, [cosine(tiny_clip, r[0], r[1]) for r in colour], atol=1e-5)
    np.testing.assert_allclose(points.y, [cosine(tiny_clip, r[0], r[2]) for r in colour], atol=1e-5)
    assert panel.controls.pair.max == N - 1
    assert (panel.controls.caption_a.value, panel.controls.caption_b.value) == colour[0][1:3]
    assert set(panel.figures()) == {"binding_pair_scores", "binding_caption_pair"}


def test_the_pair_slider_shows_that_pair_and_its_two_cosines(panel, tiny_clip, rows):
    panel.controls.kind.value = "relation"
    panel.controls.pair.value = 2
    scene, true_caption, swapped, _ = [r for r in rows if r[3] == "relation"][2]
    assert (panel.controls.caption_a.value, panel.controls.caption_b.value) == (true_caption, swapped)
    want = [cosine(tiny_clip, scene, true_caption), cosine(tiny_clip, scene, swapped)]
    np.testing.assert_allclose(panel.pair_bars.data[0].y, want, atol=1e-5)
    assert panel.pair_bars.layout.title.text.startswith(f"A {want[0]:.3f} vs B {want[1]:.3f}")
    assert f"margin {want[0] - want[1]:+.3f}" in panel.scores_text.value


def test_typed_captions_are_scored_when_the_button_is_pressed(panel, tiny_clip, rows):
    before = tuple(panel.pair_bars.data[0].y)
    panel.controls.caption_b.value = "a circle that is red"
    assert tuple(panel.pair_bars.data[0].y) == before  # typing alone scores nothing
    panel.controls.score.click()
    scene = rows[0][0]
    want = [cosine(tiny_clip, scene, panel.controls.caption_a.value), cosine(tiny_clip, scene, "a circle that is red")]
    np.testing.assert_allclose(panel.pair_bars.data[0].y, want, atol=1e-5)
    np.testing.assert_allclose(panel.scores, want, atol=1e-5)


def test_all_kinds_and_back_keeps_the_pair_in_range(panel, rows):
    panel.controls.kind.value = "all"
    assert panel.controls.pair.max == len(rows) - 1 and len(panel.scatter.data[1].x) == len(rows)
    assert panel.scatter.layout.title.text != ""
    panel.controls.pair.value = len(rows) - 2
    panel.controls.kind.value = "count"
    assert panel.controls.pair.max == N - 1 and panel.controls.pair.value == N - 1
    assert panel.controls.caption_a.value == [r for r in rows if r[3] == "count"][N - 1][1]
    assert all(d.last_error is None for d in panel._draw.values())


def test_identical_captions_show_the_error_in_the_panel(panel):
    panel.controls.caption_b.value = panel.controls.caption_a.value
    panel.controls.score.click()
    assert isinstance(panel._draw["score"].last_error, ValueError)
    assert "identical" in "".join(o.get("text", "") for o in panel.output.outputs)


def test_a_given_result_is_used_as_is(tiny_clip, rows):
    first = BindingPanel(tiny_clip, rows)
    again = BindingPanel(tiny_clip, rows, first.result)
    assert again.result is first.result
    np.testing.assert_array_equal(again.scatter.data[1].x, first.scatter.data[1].x)
