"""Notebook 07's panel, driven headless by setting its controls' values, as a widget in the browser does."""
import numpy as np
import pytest

from clipspace.notebook.prior_panel import ROUTES, VIEWS, PriorPanel, built_caption, modality_gap
from clipspace.unclip.decoder import build_decoder
from clipspace.unclip.prior import build_prior, prior_for
from test_prior import tiny_prior_config


@pytest.fixture(scope="module")
def panel(tiny_config, tiny_clip):
    decoder = build_decoder(tiny_config(clip_model=tiny_clip.name, clip_embed_dim=tiny_clip.embed_dim), seed=0)
    prior = build_prior(tiny_prior_config(clip_model=tiny_clip.name), seed=0)
    return PriorPanel(tiny_clip, prior, decoder, steps=2, prior_steps=3, reference=8)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_opens_with_every_view_drawn(panel):
    assert all(panel._draw[v].last_error is None for v in VIEWS)
    assert set(panel.grids) == {"routes", "rerank"} and panel.projection is not None
    assert list(panel.numbers) == list(ROUTES)  # the built caption names a scene: all four routes
    assert panel.summary().startswith("zero: cos to z_i 0.00")
    assert len(panel.ranking.order) == panel.controls.n.value
    names = [t.name for t in panel.projection.data]
    assert names[:4] == ["held-out z_t", "held-out z_i", "this caption's z_t", "prior samples"]


def test_factor_dropdowns_build_the_caption_and_redraw(panel):
    before = panel.grids["routes"]
    panel.controls.colour.value = "orange"
    assert panel.controls.caption.value == built_caption("square", "orange") == "an orange square"
    assert panel.grids["routes"] is not before and panel.current_scene().objects[0].colour == "orange"


def test_a_typed_caption_without_a_scene_has_three_routes(panel):
    panel.controls.caption.value = "a red square to the left of a blue circle"
    assert panel.current_scene() is None and list(panel.numbers) == ["zero", "z_t", "prior"]
    assert panel._draw["projection"].last_error is None


def test_guidance_and_thresholding_change_the_pictures(panel):
    panel.controls.caption.value = "a red circle"
    base = pixels(panel.grids["rerank"])
    panel.controls.decoder_guidance.value = 8.0
    guided = pixels(panel.grids["rerank"])
    assert not np.array_equal(base, guided)
    panel.controls.thresholding.value = True
    assert panel._draw["routes"].last_error is None and not np.array_equal(guided, pixels(panel.grids["rerank"]))


def test_rerank_n_redraws_the_strip_only(panel):
    routes = panel.grids["routes"]
    panel.controls.n.value = 4
    assert len(panel.ranking.order) == 4 and panel.grids["routes"] is routes
    scores = panel.ranking.scores[panel.ranking.order]
    assert (np.diff(scores) <= 0).all()


def test_without_a_prior_the_panel_is_the_reason(build_random_clip):
    other = build_random_clip("ViT-S-32-alt", seed=1)
    prior, why = prior_for(other)
    assert prior is None
    p = PriorPanel(other, prior, None, reason=why)
    assert p.summary() == why and p.figures() == {}
    assert why in p.section("routes").value and p.section("rerank").value == ""
    with pytest.raises(ValueError, match="view="):
        p.section("nope")


def test_modality_gap_numbers(panel, tiny_clip):
    gap = modality_gap(panel.prior, tiny_clip, n=4)
    assert set(gap) == {"z_t_mean_gap", "z_t_cosine", "prior_mean_gap", "prior_cosine"}
    assert all(np.isfinite(v) for v in gap.values())
