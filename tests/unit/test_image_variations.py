"""The SD image-variations adapter on tiny components built from configs (as diffusers' own fast tests do),
checked against `StableDiffusionImageVariationPipeline` itself with a DDIM scheduler."""
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionImageVariationPipeline
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from clipspace import world
from clipspace.errors import DecoderMismatchError, DecoderNotAvailableError, InvalidArgumentError
from clipspace.unclip.decoder import Decoder
from clipspace.unclip.image_variations import ImageVariationsDecoder, tiny_components, tiny_pipeline
from clipspace.unclip.latents import ddim_sample, decode, images_to_pixels, invert, random_noise

NORM = 7.5  # a raw-embedding norm that is not 1, so the rescaling is exercised


@pytest.fixture(scope="module")
def dec():
    return ImageVariationsDecoder(tiny_pipeline(), clip_name="clipspace-tiny", embedding_norm=NORM)


def unit(n, d=128, seed=0):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def reference_pipeline(dec, z):
    """The diffusers pipeline on the adapter's own UNet and VAE, with a DDIM on the adapter's schedule, and a
    real (tiny) CLIP vision tower whose output a forward hook replaces with z at the raw norm: the pipeline's
    own `_encode_image` then builds the conditioning (one token, zeros for the unconditional)."""
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=37, projection_dim=128,
                                                            num_hidden_layers=1, num_attention_heads=4, image_size=32,
                                                            patch_size=8))

    def swap(module, args, out):
        out.image_embeds = (z * dec.embedding_norm).to(out.image_embeds)
        return out

    vision.register_forward_hook(swap)
    pipe = StableDiffusionImageVariationPipeline(
        vae=dec.vae, unet=dec.unet, scheduler=DDIMScheduler.from_config(dec.scheduler.config), image_encoder=vision,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class ConditionRecorder:
    """A forward pre-hook on the UNet that records what it is given (encoder_hidden_states, timestep)."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        states = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        self.calls.append((states.detach().clone(), torch.as_tensor(t).clone()))

    def remove(self):
        self.handle.remove()


def test_implements_the_protocol(dec):
    assert isinstance(dec, Decoder)
    assert dec.image_size == 16 and dec.latent_shape == (4, 8, 8) and dec.embed_dim == 128
    # the shipped PNDM schedule, as a DDIM that inverts: no sample clipping, leading spacing
    assert not dec.scheduler.config.clip_sample and dec.scheduler.config.timestep_spacing == "leading"
    assert dec.scheduler.config.steps_offset == 1 and dec.config["guidance"] == 3.0


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_decode_equals_the_pipeline_and_so_does_the_conditioning(dec, guidance):
    """Same x_T, z, guidance and steps: the same latents and images, and the UNet receives the same
    encoder_hidden_states at the same timesteps (recorded by a forward hook on both runs)."""
    z, x_T = unit(2, seed=1), random_noise(dec, 2, seed=2)
    rec = ConditionRecorder(dec.unet)
    try:
        ours_latent = ddim_sample(dec, z, x_T, steps=4, guidance=guidance)
        ours = decode(dec, z, x_T, steps=4, guidance=guidance, output="pt")
        ours_calls = rec.calls[:4]
        rec.calls = []
        pipe = reference_pipeline(dec, z)
        image = torch.zeros(2, 3, 32, 32)  # a tensor goes straight to the (hooked) image encoder
        ref_latent = pipe(image, latents=x_T, guidance_scale=guidance, num_inference_steps=4, eta=0.0,
                          output_type="latent").images
        ref_calls = rec.calls[:4]
        ref = pipe(image, latents=x_T, guidance_scale=guidance, num_inference_steps=4, eta=0.0,
                   output_type="pt").images
    finally:
        rec.remove()
    torch.testing.assert_close(ours_latent, ref_latent, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((ours.clamp(-1, 1) + 1) / 2, ref, atol=1e-5, rtol=1e-5)
    assert len(ours_calls) == len(ref_calls) == 4
    for (s_ours, t_ours), (s_ref, t_ref) in zip(ours_calls, ref_calls):
        assert s_ours.shape == (2 if guidance == 1 else 4, 1, 128)  # one token per image (x2 with guidance)
        torch.testing.assert_close(s_ours, s_ref, atol=0, rtol=0)
        assert int(t_ours) == int(t_ref)
    if guidance != 1:
        assert s_ours[:2].abs().max() == 0  # the unconditional half is zeros
        torch.testing.assert_close(s_ours[2:, 0].norm(dim=-1), torch.full((2,), NORM))


def test_vae_space_is_the_pipelines(dec):
    """encode_pixels is the VAE mean times the scaling factor; decode_pixels undoes the scaling, as the pipeline does."""
    pixels = images_to_pixels(world.single_objects(2), dec.image_size)
    x = dec.encode_pixels(pixels)
    torch.testing.assert_close(x, dec.vae.encode(pixels).latent_dist.mean * 5.0)
    torch.testing.assert_close(dec.decode_pixels(x), dec.vae.decode(x / 5.0).sample)


@pytest.mark.parametrize("method", ["ddim", "fixed_point"])
def test_inversion_then_decoding_runs_the_same_path(tiny_clip, dec, method):
    """Random weights do not converge under inversion, so: shapes, determinism, and that decoding the
    inverted latent is the sampler run on it (not a PSNR)."""
    scenes = world.single_objects(2)
    a = invert(dec, tiny_clip, scenes, steps=3, method=method, iterations=2)
    b = invert(dec, tiny_clip, scenes, steps=3, method=method, iterations=2)
    assert a.x_T.shape == (2, 4, 8, 8) and a.z.shape == (2, 128)
    torch.testing.assert_close(a.x_T, b.x_T, atol=0, rtol=0)
    torch.testing.assert_close(a.z.norm(dim=-1), torch.ones(2))
    assert torch.isfinite(a.x_T).all()
    out = decode(dec, a.z, a.x_T, steps=3, output="pt")
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out, dec.decode_pixels(ddim_sample(dec, a.z, a.x_T, steps=3)).float())


def test_clip_mismatch_and_missing_norm_are_clear_errors(tiny_clip):
    small = ImageVariationsDecoder(tiny_pipeline(embed_dim=64), clip_name="clipspace-tiny", embedding_norm=1.0)
    with pytest.raises(DecoderMismatchError, match=r"64-d 'clipspace-tiny'.*'clipspace-tiny' \(128-d\)"):
        small.check_clip(tiny_clip)
    with pytest.raises(DecoderMismatchError):
        invert(small, tiny_clip, world.single_objects(1), steps=2)
    vit_l = ImageVariationsDecoder(tiny_pipeline(), clip_name="ViT-L-14", embedding_norm=1.0)
    with pytest.raises(DecoderMismatchError, match=r"pairs with 'ViT-L-14'.*load_clip\('ViT-L-14', pretrained='openai'\)"):
        vit_l.check_clip(tiny_clip)
    bare = ImageVariationsDecoder(tiny_pipeline(), clip_name="clipspace-tiny")
    with pytest.raises(InvalidArgumentError, match="embedding_norm is not set.*calibrate"):
        bare.predict(torch.zeros(1, 4, 8, 8), 10, unit(1))


def test_calibrate_measures_the_raw_norm(tiny_clip):
    """The norm is the CLIP's own raw (unnormalised) embedding norm, averaged over the bundled photos."""
    from clipspace.photos import PHOTOS, photo

    dec = ImageVariationsDecoder(tiny_pipeline(), clip_name="clipspace-tiny").calibrate(tiny_clip)
    with torch.no_grad():
        x = torch.stack([tiny_clip.preprocess(photo(n).resize((tiny_clip.image_size,) * 2)) for n in PHOTOS])
        raw = tiny_clip.model.encode_image(x).norm(dim=-1).mean()
    assert dec.embedding_norm == pytest.approx(float(raw), rel=2e-2)  # resized by load_images: Lanczos, not PIL's default
    assert dec.embedding_norm != pytest.approx(1.0, abs=1e-3)


def test_loads_from_a_local_directory(tmp_path, dec):
    StableDiffusionImageVariationPipeline(image_encoder=None, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False, **tiny_components()).save_pretrained(tmp_path / "iv")
    back = ImageVariationsDecoder.from_pretrained(tmp_path / "iv", clip_name="clipspace-tiny", embedding_norm=NORM)
    x, z = torch.randn(1, *dec.latent_shape), unit(1)
    torch.testing.assert_close(back.predict(x, 500, z, guidance=2.0), dec.predict(x, 500, z, guidance=2.0))
    assert back.pipe.image_encoder is None and back.pipe.safety_checker is None


def test_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DecoderNotAvailableError, match="huggingface-cli download lambdalabs/sd-image-variations"):
        ImageVariationsDecoder.from_pretrained("lambdalabs/sd-image-variations-diffusers", local_files_only=True,
                                               cache_dir=str(tmp_path))
    with pytest.raises(DecoderNotAvailableError, match="model_index.json"):
        ImageVariationsDecoder.from_pretrained(tmp_path / "nothing-here")
