"""The bipartite latent on tiny random decoders: the DDIM equations, round trips, seeds, the edits."""
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from clipspace import world
from clipspace.errors import BadImageError, DecoderMismatchError
from clipspace.unclip.decoder import build_decoder, get_decoder_config
from clipspace.unclip.latents import (Latents, ddim_invert, ddim_sample, decode, embed_images, images_to_pixels, interpolate,
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
    # a batch is scored image by image (not one pooled MSE): 10 log10(range^2 / MSE) of each, by hand
    batch_a = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch_b = (batch_a + 0.05 * torch.arange(1, 4).view(3, 1, 1, 1) * torch.randn(batch_a.shape)).clamp(-1, 1)
    mse = (batch_a - batch_b).double().pow(2).mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(psnr(batch_a, batch_b), 10 * np.log10(2.0 ** 2 / mse), rtol=1e-12)
    np.testing.assert_allclose(psnr((batch_a + 1) / 2, (batch_b + 1) / 2, data_range=1.0),
                               10 * np.log10(2.0 ** 2 / mse), rtol=1e-6)


def test_latents_index_and_embed(tiny_clip, scenes):
    z = embed_images(tiny_clip, scenes)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2))
    # a Scene is embedded from its render at the CLIP's size, as a PIL image would be
    torch.testing.assert_close(embed_images(tiny_clip, [s.render(64) for s in scenes]), z)
    lat = Latents(z, torch.zeros(2, 3, 16, 16), 10, 1.0)
    assert len(lat) == 2 and len(lat[1]) == 1 and lat[1].steps == 10


# ---------------------------------------------------------------------------------------------
# Images enter through clipspace.images.load_image, as clip.encode_images reads them
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world_clip():
    """The offline default CLIP, trained on the shapes world: unlike random weights (whose embeddings
    of any two pictures have cosine > 0.999) it tells a rotated or re-backed picture apart."""
    from clipspace.factory import load_clip

    return load_clip()


def rotated_jpeg(path):
    """A JPEG stored sideways with EXIF orientation 6, and the upright picture a viewer shows."""
    from PIL import Image

    scene = world.Scene((world.Obj("triangle", "blue", "large", x=0.3),), background="black")
    picture = np.asarray(scene.render(64))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(picture[8:56]).save(path, exif=exif, quality=95)  # 64 x 48: the rotation swaps the sides
    stored = Image.fromarray(np.asarray(Image.open(path).convert("RGB")))  # the pixels as stored, no EXIF
    return stored.transpose(Image.Transpose.ROTATE_270)


def transparent_png(path):
    """An RGBA PNG whose background is transparent (over black pixels), and it composited onto white."""
    from PIL import Image

    rgb = np.asarray(world.Scene((world.Obj("square", "green", "large"),), background="black").render(64))
    opaque = ~(rgb == rgb[0, 0]).all(-1, keepdims=True)
    Image.fromarray(np.concatenate([rgb, opaque.astype(np.uint8) * 255], axis=2), "RGBA").save(path)
    return Image.fromarray(np.where(opaque, rgb, 255).astype(np.uint8))


def cosine(a, b) -> float:
    a, b = (torch.as_tensor(np.asarray(v)) for v in (a, b))
    return float(torch.nn.functional.cosine_similarity(a, b)[0])


@pytest.mark.parametrize("make", [rotated_jpeg, transparent_png], ids=["exif-rotated", "transparent"])
def test_invert_reads_image_files_as_encode_images_does(world_clip, dec, tmp_path, make):
    path = tmp_path / ("photo.jpg" if make is rotated_jpeg else "logo.png")
    upright = make(path)
    lat = invert(dec, world_clip, [path], steps=2)
    assert cosine(lat.z, world_clip.encode_images([path])) > 0.9999
    assert cosine(embed_images(world_clip, path), lat.z) > 0.9999
    # the decoder sees the same upright, white-backed picture
    torch.testing.assert_close(images_to_pixels([path], dec.image_size), images_to_pixels([upright], dec.image_size))
    torch.testing.assert_close(lat.x_T, invert(dec, world_clip, [upright], steps=2).x_T)
    if make is transparent_png:  # a background of the caller's own is used for both
        black = invert(dec, world_clip, [path], steps=2, background=(0, 0, 0)).z
        assert cosine(black, world_clip.encode_images([path], background=(0, 0, 0))) > 0.9999
        assert cosine(black, lat.z) < 0.99


def test_unreadable_image_files_name_the_file(tiny_clip, dec, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(BadImageError, match="corrupt.png"):
        invert(dec, tiny_clip, [corrupt], steps=2)
    with pytest.raises(BadImageError, match="missing.jpg"):
        invert(dec, tiny_clip, [tmp_path / "missing.jpg"], steps=2)
    big = tmp_path / "big.jpg"
    rotated_jpeg(big)
    with pytest.raises(BadImageError, match=r"big\.jpg.*over the limit"):
        invert(dec, tiny_clip, [big], steps=2, max_pixels=1000)


# ---------------------------------------------------------------------------------------------
# Bad arguments: a clear ValueError naming the argument, before any work
# ---------------------------------------------------------------------------------------------
NAN = float("nan")


def nan_at(t, i=0):
    t = t.clone()
    t.view(-1)[i] = NAN
    return t


BAD_ARGUMENTS = {  # name: (call(dec, clip, z, x_T, scenes), the message it must raise)
    "decode z NaN": (lambda d, c, z, x, s: decode(d, nan_at(z), x, steps=2), r"z has NaN"),
    "decode x_T NaN": (lambda d, c, z, x, s: decode(d, z, nan_at(x, 5), steps=2), r"x_T has NaN"),
    "decode guidance NaN": (lambda d, c, z, x, s: decode(d, z, x, steps=2, guidance=NAN), r"guidance must be a finite"),
    "decode eta > 1": (lambda d, c, z, x, s: decode(d, z, x, eta=1.5, steps=2), r"eta must be in \[0, 1\]"),
    "decode eta < 0": (lambda d, c, z, x, s: decode(d, z, x, eta=-0.1, steps=2), r"eta must be in \[0, 1\]"),
    "decode eta NaN": (lambda d, c, z, x, s: decode(d, z, x, eta=NAN, steps=2), r"eta must be in \[0, 1\]"),
    "decode steps 0": (lambda d, c, z, x, s: decode(d, z, x, steps=0), r"steps must be an int >= 1"),
    "decode steps -3": (lambda d, c, z, x, s: decode(d, z, x, steps=-3), r"steps must be an int >= 1"),
    "variations n 0": (lambda d, c, z, x, s: variations(d, z, x, n=0, steps=2), r"n must be an int >= 1"),
    "variations eta 2": (lambda d, c, z, x, s: variations(d, z, x, eta=2.0, steps=2), r"eta must be in \[0, 1\]"),
    "interpolate n 0": (lambda d, c, z, x, s: interpolate(d, z, z, x, n=0, steps=2), r"n must be an int >= 1"),
    "interpolate ts NaN": (lambda d, c, z, x, s: interpolate(d, z, z, x, ts=[0.0, NAN], steps=2), r"ts must be finite"),
    "interpolate z2 NaN": (lambda d, c, z, x, s: interpolate(d, z, nan_at(z), x, n=2, steps=2), r"z2 has NaN"),
    "interpolate x_T2 NaN": (lambda d, c, z, x, s: interpolate(d, z, z, x, nan_at(x), n=2, steps=2), r"x_T2 has NaN"),
    "text_diff thetas NaN": (lambda d, c, z, x, s: text_diff(d, z, x, z, thetas=(0.0, NAN), steps=2),
                             r"thetas must be finite"),
    "text_diff no thetas": (lambda d, c, z, x, s: text_diff(d, z, x, z, thetas=(), steps=2),
                            r"thetas must be a non-empty"),
    "text_diff z_d NaN": (lambda d, c, z, x, s: text_diff(d, z, x, nan_at(z), steps=2), r"z_d has NaN"),
    "text_direction empty target": (lambda d, c, z, x, s: text_direction(c, " ", "a red circle"),
                                    r"target text is empty"),
    "pca_decode no ks": (lambda d, c, z, x, s: pca_decode(d, z, x, PCA(2).fit(unit(5)), ks=(), steps=2),
                         r"ks must be a non-empty"),
    "random_noise n 0": (lambda d, c, z, x, s: random_noise(d, 0), r"n must be an int >= 1"),
    "invert steps 0": (lambda d, c, z, x, s: invert(d, c, s, steps=0), r"steps must be an int >= 1"),
    "invert guidance NaN": (lambda d, c, z, x, s: invert(d, c, s, steps=2, guidance=NAN), r"guidance must be a finite"),
    "Latents steps 0": (lambda d, c, z, x, s: Latents(z, x, 0, 1.0), r"steps must be an int >= 1"),
    "Latents x_T NaN": (lambda d, c, z, x, s: Latents(z, nan_at(x), 10, 1.0), r"x_T has NaN"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_are_clear_errors(tiny_clip, dec, scenes, case):
    call, message = BAD_ARGUMENTS[case]
    with pytest.raises(ValueError, match=message):
        call(dec, tiny_clip, unit(1), random_noise(dec, 1), scenes)


def test_empty_batches_are_clear_errors(tiny_clip, dec):
    with pytest.raises(ValueError, match="images is empty"):
        invert(dec, tiny_clip, [], steps=2)
    with pytest.raises(ValueError, match="images is empty"):
        embed_images(tiny_clip, [])
    with pytest.raises(ValueError, match=r"z is empty \(shape \(0, 128\)\)"):
        decode(dec, torch.zeros(0, 128), random_noise(dec, 1), steps=2)
    with pytest.raises(ValueError, match=r"x_T is empty \(shape \(0, 3, 16, 16\)\)"):
        decode(dec, unit(1), torch.zeros(0, 3, 16, 16), steps=2)


def test_shape_mismatches_name_both_shapes(dec):
    z, x = unit(1), random_noise(dec, 1)
    with pytest.raises(ValueError, match=r"z has shape \(1, 64\), but the decoder takes 128-d"):
        decode(dec, unit(1, d=64), x, steps=2)
    with pytest.raises(ValueError, match=r"x_T has shape \(1, 3, 8, 8\), but .* \(N, 3, 16, 16\)"):
        decode(dec, z, torch.randn(1, 3, 8, 8), steps=2)
    with pytest.raises(ValueError, match=r"z \(2, 128\) and x_T \(3, 3, 16, 16\) have different batch sizes"):
        decode(dec, unit(2), random_noise(dec, 3), steps=2)
    with pytest.raises(ValueError, match=r"z2 has shape \(1, 64\)"):
        interpolate(dec, z, unit(1, d=64), x, n=2, steps=2)
    with pytest.raises(ValueError, match=r"x_T2 has shape \(1, 3, 8, 8\)"):
        interpolate(dec, z, z, x, torch.randn(1, 3, 8, 8), n=2, steps=2)
    with pytest.raises(ValueError, match=r"z_d has shape \(1, 64\)"):
        text_diff(dec, z, x, unit(1, d=64), steps=2)
    with pytest.raises(ValueError, match=r"z \(2, 128\) and x_T \(3, 3, 16, 16\)"):
        Latents(unit(2), random_noise(dec, 3), 10, 1.0)
    with pytest.raises(ValueError, match=r"z \(1, 128\) and x_T \(3, 3, 16, 16\)"):
        Latents(z, random_noise(dec, 3), 10, 1.0)  # a Latents holds one x_T per z, none shared


def test_latents_index_from_the_end(dec):
    lat = Latents(unit(3), random_noise(dec, 3), 10, 1.0)
    torch.testing.assert_close(lat[-1].z, lat.z[2:])
    with pytest.raises(IndexError):
        lat[3]
