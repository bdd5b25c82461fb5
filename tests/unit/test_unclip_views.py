"""Notebook 06's views: each is checked against the unclip function it wraps, on a tiny decoder."""
import numpy as np
import pytest
import torch
from PIL import Image

from clipspace import world
from clipspace.unclip.decoder import build_decoder
from clipspace.unclip.latents import decode
from clipspace.unclip.views import (SCALE, interpolation_view, reconstruction, text_diff_view,
                                    variation_view)


STEPS = 4


@pytest.fixture(scope="module")
def decoder(tiny_config, tiny_clip):
    return build_decoder(tiny_config(clip_model=tiny_clip.name, clip_embed_dim=tiny_clip.embed_dim), seed=0)


@pytest.fixture(scope="module")
def scenes():
    return world.single_objects(3)


@pytest.fixture(scope="module")
def latents(decoder, tiny_clip, scenes):
    return [reconstruction(decoder, tiny_clip, s.render(64), steps=STEPS)[0] for s in scenes[:2]]


def arr(images):
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def test_reconstruction_decodes_the_inverted_latent(decoder, tiny_clip, scenes):
    lat, view = reconstruction(decoder, tiny_clip, scenes[0].render(64), scenes[1].render(64), steps=STEPS)
    assert lat.x_T.shape == (1, *decoder.latent_shape)
    again = decode(decoder, lat.z, lat.x_T, steps=STEPS)[0]
    assert np.array_equal(arr([view.images[0]]), arr([again]))
    assert view.images[0].size == (16, 16) and view.grid.width >= 3 * 16 * SCALE  # source, rec, wrong z
    assert view.numbers["psnr"] != view.numbers["psnr_wrong_z"]


def test_variations_at_eta_zero_are_the_reconstruction(decoder, latents):
    still = variation_view(decoder, latents[0], eta=0.0, n=2, steps=STEPS)
    assert still.numbers["mean_abs_change"] == 0.0
    moved = variation_view(decoder, latents[0], eta=1.0, n=2, steps=STEPS, seed=3)
    assert moved.numbers["mean_abs_change"] > 0
    again = variation_view(decoder, latents[0], eta=1.0, n=2, steps=STEPS, seed=3)
    assert np.array_equal(arr(moved.images), arr(again.images))  # seeded
    with pytest.raises(ValueError, match="eta"):
        variation_view(decoder, latents[0], eta=1.5)


def test_interpolation_ends_and_modes(decoder, latents):
    a, b = latents
    view = interpolation_view(decoder, a, b, t=0.3, n=3, slerp_noise=True, steps=STEPS)
    assert view.numbers["t"] == [0.0, 0.3, 0.5, 1.0]  # the chosen t joins the trajectory
    ends = [decode(decoder, lat.z, lat.x_T, steps=STEPS)[0] for lat in (a, b)]
    assert np.abs(arr([view.images[0], view.images[-1]]) - arr(ends)).max() <= 1  # both reconstructions
    fixed = interpolation_view(decoder, a, b, t=0.3, n=3, slerp_noise=False, steps=STEPS)
    b_with_a_noise = decode(decoder, b.z, a.x_T, steps=STEPS)[0]
    assert np.abs(arr([fixed.images[-1]]) - arr([b_with_a_noise])).max() <= 1
    with pytest.raises(ValueError, match="t must"):
        interpolation_view(decoder, a, b, t=2.0)


def test_text_diff_starts_at_the_reconstruction(decoder, tiny_clip, latents):
    view = text_diff_view(decoder, tiny_clip, latents[0], "a blue star", "a red star", theta=0.5, n=3, steps=STEPS)
    assert view.numbers["thetas"] == [0.0, 0.25, 0.5]
    rec = decode(decoder, latents[0].z, latents[0].x_T, steps=STEPS)[0]
    assert np.abs(arr([view.images[0]]) - arr([rec])).max() <= 1
    assert np.abs(arr([view.images[-1]]) - arr([rec])).max() > 0
    with pytest.raises(ValueError, match="target text is empty"):
        text_diff_view(decoder, tiny_clip, latents[0], " ", "a red star", theta=0.5)


def test_reconstruction_reads_images_as_invert_does(decoder, tiny_clip, rng, tmp_path):
    """A transparent image is composited onto white (not black), and a path is read like any image."""
    rgba = np.concatenate([rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), np.full((16, 16, 1), 255, np.uint8)], 2)
    rgba[:8, :, 3] = 0  # the top half transparent, over coloured pixels
    on_white = Image.fromarray(np.where(rgba[..., 3:] > 0, rgba[..., :3], 255).astype(np.uint8))
    want, _ = reconstruction(decoder, tiny_clip, on_white, steps=STEPS)
    got, _ = reconstruction(decoder, tiny_clip, Image.fromarray(rgba, "RGBA"), steps=STEPS)
    torch.testing.assert_close(got.z, want.z)
    torch.testing.assert_close(got.x_T, want.x_T)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    from_file, _ = reconstruction(decoder, tiny_clip, tmp_path / "logo.png", steps=STEPS)
    torch.testing.assert_close(from_file.z, want.z)


def test_views_check_counts_and_angles(decoder, tiny_clip, latents):
    a, b = latents
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        text_diff_view(decoder, tiny_clip, a, "a blue star", "a red star", theta=0.5, n=0, steps=STEPS)
    with pytest.raises(ValueError, match="theta must be a finite number"):
        text_diff_view(decoder, tiny_clip, a, "a blue star", "a red star", theta=float("nan"), n=3, steps=STEPS)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        interpolation_view(decoder, a, b, t=0.5, n=0, steps=STEPS)
    with pytest.raises(ValueError, match="t must be in"):
        interpolation_view(decoder, a, b, t=float("nan"), steps=STEPS)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        variation_view(decoder, a, eta=0.5, n=0, steps=STEPS)
