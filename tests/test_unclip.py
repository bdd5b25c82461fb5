"""The bipartite latent on tiny random decoders: the DDIM equations, round trips, seeds, the edits."""
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from clipspace import world
from clipspace.decoder import DecoderMismatchError, build_decoder, get_decoder_config
from clipspace.unclip import (Latents, ddim_invert, ddim_sample, decode, embed_images, images_to_pixels, interpolate,
                              invert, pca_decode, pca_reconstruct, psnr, random_noise, text_diff, text_direction,
                              variations)


def tiny_decoder(prediction_type="v_prediction", seed=0, **over):
    cfg = get_decoder_config("decoder-tiny")
    cfg["image_size"] = 16
    cfg["unet"].update(block_out_channels=[8, 16], norm_num_groups=4,
                       down_block_types=["DownBlock2D"] * 2, up_block_types=["UpBlock2D"] * 2)
    cfg["scheduler"]["prediction_type"] = prediction_type
    cfg.update(over)
    dec = build_decoder(cfg, seed=seed)
    torch.nn.init.normal_(dec.unet.class_embedding.linear_1.weight, std=0.3)  # make z matter
    return dec


@pytest.fixture(scope="module")
def dec():
    return tiny_decoder()


@pytest.fixture(scope="module")
def scenes():
    return world.single_objects(2)


def unit(n, d=128, seed=0):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_inversion_follows_the_ddim_equations(prediction_type):
    """Each inversion step, written out (Song et al. 2021, eq. 12 run from a_prev up to a_t)."""
    dec = tiny_decoder(prediction_type)
    x0, z = torch.rand(2, *dec.latent_shape) * 2 - 1, unit(2)
    steps, T = 4, dec.scheduler.config.num_train_timesteps
    alphas = dec.scheduler.alphas_cumprod.double()
    x = x0.double()
    for t in range(0, T, T // steps):  # 'leading' spacing: 0, 250, 500, 750
        a_prev = alphas[t - T // steps] if t >= T // steps else torch.tensor(1.0, dtype=torch.float64)  # set_alpha_to_one
        a_t = alphas[t]
        out = dec.predict(x.float(), t, z).double()
        if prediction_type == "epsilon":
            eps = out
            x0_hat = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
        else:  # v = sqrt(a) eps - sqrt(1 - a) x0
            x0_hat = a_prev.sqrt() * x - (1 - a_prev).sqrt() * out
            eps = a_prev.sqrt() * out + (1 - a_prev).sqrt() * x
        x = a_t.sqrt() * x0_hat + (1 - a_t).sqrt() * eps
    got = ddim_invert(dec, x0, z, steps=steps)
    torch.testing.assert_close(got.double(), x, atol=1e-4, rtol=1e-4)


def test_sampling_follows_the_ddim_equations(dec):
    x_T, z = torch.randn(2, *dec.latent_shape), unit(2)
    steps, T = 4, dec.scheduler.config.num_train_timesteps
    alphas = dec.scheduler.alphas_cumprod.double()
    x = x_T.double()
    for t in range(T - T // steps, -1, -T // steps):  # 750, 500, 250, 0
        a_t = alphas[t]
        a_prev = alphas[t - T // steps] if t >= T // steps else torch.tensor(1.0, dtype=torch.float64)
        v = dec.predict(x.float(), t, z).double()
        x0_hat, eps = a_t.sqrt() * x - (1 - a_t).sqrt() * v, a_t.sqrt() * v + (1 - a_t).sqrt() * x
        x = a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(ddim_sample(dec, z, x_T, steps=steps).double(), x, atol=1e-4, rtol=1e-4)


def test_invert_decode_round_trip_is_close_and_converges(tiny_clip, scenes):
    dec = tiny_decoder().to(dtype=torch.float64)
    target = images_to_pixels(scenes, dec.image_size).double()
    errors = {}
    for steps in (10, 100):
        lat = invert(dec, tiny_clip, scenes, steps=steps)
        assert lat.x_T.shape == (2, *dec.latent_shape) and lat.steps == steps
        out = decode(dec, lat.z, lat.x_T, steps=steps, output="pt").double()
        errors[steps] = (out - target).abs().max().item()
    # DDIM inversion is exact in the limit of small steps: first order, error ~ 1/steps
    assert errors[100] < errors[10] / 3
    assert psnr(out, target).min() > 38  # on [-1, 1] pixels (250 steps give 47 dB)
    # and the noise is noise-like, not the image: near unit variance
    assert 0.5 < lat.x_T.std().item() < 1.5


def test_invert_checks_the_clip(tiny_clip, scenes):
    with pytest.raises(DecoderMismatchError):
        invert(tiny_decoder(clip_model="ViT-B-32"), tiny_clip, scenes, steps=2)


def test_decoding_is_seeded_and_eta_adds_variation(dec):
    z, x_T = unit(1), random_noise(dec, 1, seed=3)
    torch.testing.assert_close(random_noise(dec, 1, seed=3), x_T)
    base = decode(dec, z, x_T, steps=8, output="pt")
    torch.testing.assert_close(decode(dec, z, x_T, steps=8, seed=99, output="pt"), base)  # eta 0: no noise drawn
    v1 = decode(dec, z, x_T, eta=1.0, steps=8, seed=1, output="pt")
    torch.testing.assert_close(decode(dec, z, x_T, eta=1.0, steps=8, seed=1, output="pt"), v1)
    v2 = decode(dec, z, x_T, eta=1.0, steps=8, seed=2, output="pt")
    assert (v1 - base).abs().mean() > 1e-3 and (v1 - v2).abs().mean() > 1e-3
    many = variations(dec, z[0], x_T[0], n=3, eta=1.0, steps=8, seed=1, output="pt")
    assert many.shape == (3, 3, 16, 16) and (many[0] - many[1]).abs().mean() > 1e-3
    torch.testing.assert_close(many, variations(dec, z, x_T, n=3, eta=1.0, steps=8, seed=1, output="pt"))


def test_batch_decodes_equal_single_decodes(dec):
    z, x_T = unit(3), random_noise(dec, 3, seed=0)
    batch = decode(dec, z, x_T, steps=6, guidance=3.0, output="pt")
    for i in range(3):
        torch.testing.assert_close(decode(dec, z[i], x_T[i], steps=6, guidance=3.0, output="pt")[0], batch[i],
                                   atol=1e-5, rtol=1e-4)
    pil = decode(dec, z, x_T, steps=6, guidance=3.0)
    assert len(pil) == 3 and pil[0].size == (16, 16)


def test_interpolation_modes(dec):
    z1, z2 = unit(2)
    x1, x2 = random_noise(dec, 2, seed=5)
    ends = decode(dec, torch.stack([z1, z2]), torch.stack([x1, x2]), steps=6, output="pt")
    both = interpolate(dec, z1, z2, x1, x2, n=4, steps=6, output="pt")
    torch.testing.assert_close(both[0], ends[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both[-1], ends[1], atol=1e-5, rtol=1e-4)
    fixed = interpolate(dec, z1, z2, x1, n=4, steps=6, output="pt")
    torch.testing.assert_close(fixed[0], ends[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fixed[-1], decode(dec, z2, x1, steps=6, output="pt")[0], atol=1e-5, rtol=1e-4)
    assert (fixed[1] - both[1]).abs().mean() > 1e-3


def test_text_direction_and_trajectory(tiny_clip, dec):
    import open_clip

    z_d = text_direction(tiny_clip, "a blue circle", "a red circle")
    with torch.no_grad():
        t = tiny_clip.model.encode_text(open_clip.get_tokenizer("clipspace-tiny")(["a blue circle", "a red circle"]),
                                        normalize=True)
    ref = torch.nn.functional.normalize(t[0] - t[1], dim=0)
    torch.testing.assert_close(z_d, ref, atol=1e-5, rtol=1e-5)
    z, x_T = unit(1, seed=4), random_noise(dec, 1)
    frames = text_diff(dec, z, x_T, z_d, thetas=(0.0, 0.25, 0.5), steps=6, output="pt")
    torch.testing.assert_close(frames[0], decode(dec, z, x_T, steps=6, output="pt")[0], atol=1e-5, rtol=1e-4)
    assert (frames[2] - frames[0]).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="identically"):
        text_direction(tiny_clip, "a red circle", "a red circle")


def test_pca_reconstruction(dec):
    zs = unit(200, seed=7).numpy()
    pca = PCA(n_components=20).fit(zs)
    full = pca_reconstruct(zs[:3], pca, 20).numpy()
    proj = pca.inverse_transform(pca.transform(zs[:3]))
    np.testing.assert_allclose(full, proj / np.linalg.norm(proj, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(pca_reconstruct(zs[:3], pca, 2).numpy(), axis=1), 1.0, atol=1e-6)

    class Fitted:  # only components_ and mean_, as a hand-rolled PCA would have
        components_, mean_ = pca.components_, pca.mean_

    torch.testing.assert_close(pca_reconstruct(zs[:3], Fitted(), 5), pca_reconstruct(zs[:3], pca, 5))
    # more components come closer to the original
    cos = [float(pca_reconstruct(zs[:1], pca, k)[0] @ torch.from_numpy(zs[0])) for k in (1, 5, 20)]
    assert cos[0] < cos[1] < cos[2]
    frames = pca_decode(dec, zs[0], random_noise(dec, 1), pca, ks=(1, 20), steps=4, output="pt")
    assert frames.shape == (2, 3, 16, 16)


def test_psnr_matches_scikit_image(rng):
    from skimage.metrics import peak_signal_noise_ratio

    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    ref = peak_signal_noise_ratio(a, b, data_range=255)
    from PIL import Image

    assert psnr(a, b) == pytest.approx(ref)
    assert psnr(Image.fromarray(a), Image.fromarray(b)) == pytest.approx(ref)
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert psnr(ta, tb)[0] == pytest.approx(ref, abs=1e-4)
    assert psnr(a, a) == np.inf


def test_latents_index_and_embed(tiny_clip, scenes):
    z = embed_images(tiny_clip, scenes)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2))
    # a Scene is embedded from its render at the CLIP's size, as a PIL image would be
    torch.testing.assert_close(embed_images(tiny_clip, [s.render(64) for s in scenes]), z)
    lat = Latents(z, torch.zeros(2, 3, 16, 16), 10, 1.0)
    assert len(lat) == 2 and len(lat[1]) == 1 and lat[1].steps == 10
