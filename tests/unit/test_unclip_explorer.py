"""Notebook 06's panel, driven headless by setting its controls' values, as a slider in the browser does."""
import numpy as np
import pytest

from clipspace import unclip
from clipspace.unclip.decoder import build_decoder, decoder_for
from clipspace.notebook.unclip_explorer import VIEWS, UnclipExplorer
from clipspace.world import single_object_scene, single_objects


@pytest.fixture(scope="module")
def panel(tiny_config, tiny_clip):
    decoder = build_decoder(tiny_config(clip_model=tiny_clip.name, clip_embed_dim=tiny_clip.embed_dim), seed=0)
    return UnclipExplorer(tiny_clip, decoder, presets=single_objects(4), steps=3)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_opens_with_every_view_drawn_and_the_numbers_of_the_first_scene(panel, tiny_clip):
    assert set(panel.grids) == set(VIEWS) and all(panel.images[v].value for v in VIEWS)
    assert all(panel._draw[v].last_error is None for v in VIEWS)
    # the numbers are those of a direct inversion of the first preset
    lat = unclip.invert(panel.decoder, tiny_clip, [panel.presets[0].render(panel.decoder.image_size)], steps=3)
    np.testing.assert_allclose(panel.latents.z, lat.z, atol=1e-5)
    assert panel.summary().startswith("round trip PSNR")


def test_theta_redraws_the_text_diff_only(panel):
    before = {v: panel.grids[v] for v in VIEWS}
    panel.controls.theta.value = 1.0
    assert panel.grids["text_diff"] is not before["text_diff"]
    assert not np.array_equal(pixels(panel.grids["text_diff"]), pixels(before["text_diff"]))
    assert all(panel.grids[v] is before[v] for v in VIEWS if v != "text_diff")


def test_seed_matters_only_when_eta_is_above_zero(panel):
    def grid_at(eta, seed):
        panel.controls.eta.value, panel.controls.seed.value = eta, seed
        return pixels(panel.grids["variations"])

    assert np.array_equal(grid_at(0.0, 3), grid_at(0.0, 5))  # DDIM at eta 0 is deterministic
    assert not np.array_equal(grid_at(1.0, 3), grid_at(1.0, 5))


def test_building_a_scene_reinverts_and_refreshes_every_view(panel):
    before = {v: panel.grids[v] for v in VIEWS}
    panel.controls.source.value = -1
    panel.controls.shape.value, panel.controls.colour.value = "circle", "green"
    assert panel.scene == single_object_scene("circle", "green", panel.controls.background.value)
    assert all(panel.grids[v] is not before[v] for v in VIEWS)
    assert panel.default_texts() == ("a blue circle", panel.scene.caption(0))


def test_without_a_decoder_the_panel_is_the_reason(tiny_clip, build_random_clip):
    other = build_random_clip("ViT-S-32-alt", seed=1)
    decoder, why = decoder_for(other)
    assert decoder is None and "No decoder pairs with 'ViT-S-32-alt'" in why
    p = UnclipExplorer(other, decoder, reason=why)
    assert p.summary() == why and p.figures() == {}
    assert why in p.section("reconstruction").value and p.section("variations").value == ""
    with pytest.raises(ValueError, match="view="):
        p.section("nope")


def test_interpolation_target_is_inverted_as_the_reconstruction_view_inverts(panel):
    from clipspace.unclip.views import reconstruction

    target = panel.controls.other.value
    image = panel.presets[target].render(panel.decoder.image_size)
    lat, _ = reconstruction(panel.decoder, panel.clip, image, steps=panel.steps)
    np.testing.assert_allclose(panel._inverted[target].z, lat.z, atol=1e-6)
    np.testing.assert_allclose(panel._inverted[target].x_T, lat.x_T, atol=1e-5)
