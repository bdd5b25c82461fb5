"""The Stable unCLIP adapter on tiny components built from configs (as diffusers' own fast tests do):
the same code path as the real model, checked against the pipeline itself."""
import math

import pytest
import torch
from diffusers import StableUnCLIPImg2ImgPipeline
from diffusers.models.embeddings import get_timestep_embedding
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from clipspace import world
from clipspace.errors import DecoderMismatchError
from clipspace.unclip.decoder import Decoder, build_decoder
from clipspace.unclip.stable_unclip import StableUnclipDecoder, StableUnclipNotAvailableError, tiny_components
from clipspace.unclip.latents import ddim_sample, decode, images_to_pixels, invert, psnr, random_noise


def tiny_pipe(**kw):
    return StableUnCLIPImg2ImgPipeline(feature_extractor=None, image_encoder=None, **tiny_components(**kw))


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe()


@pytest.fixture(scope="module")
def dec(pipe):
    return StableUnclipDecoder(pipe, clip_name="clipspace-tiny", noise_level=100)


def unit(n, d=128, seed=0):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_both_decoders_implement_the_protocol(dec):
    assert isinstance(dec, Decoder) and isinstance(build_decoder("decoder-tiny"), Decoder)
    assert dec.image_size == 16 and dec.latent_shape == (4, 8, 8) and dec.embed_dim == 128


def test_noise_augmentation_is_the_pipelines(dec, pipe):
    """Written out: normalise, add noise at noise_level on the noising schedule, unnormalise, then
    concatenate the sinusoidal embedding of noise_level."""
    z = unit(3)
    norm = pipe.image_normalizer
    mean, std = norm.mean.detach(), norm.std.detach()
    assert dec.embedding_norm == pytest.approx(math.sqrt(float(mean.pow(2).sum() + std.pow(2).sum())))
    noise = torch.randn(3, 128, generator=torch.Generator().manual_seed(dec.noise_seed))
    a = pipe.image_noising_scheduler.alphas_cumprod[100]
    scaled = (z * dec.embedding_norm - mean) / std
    noised = (a.sqrt() * scaled + (1 - a).sqrt() * noise) * std + mean
    level = get_timestep_embedding(torch.tensor([100] * 3), 128, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(dec.condition(z), torch.cat([noised, level], 1), atol=1e-5, rtol=1e-5)


def test_decode_equals_the_pipeline_itself(pipe, dec):
    """Our loop and the pipeline's __call__ give the same image from the same x_T, z and guidance."""
    z, x_T = unit(1, seed=1), random_noise(dec, 1, seed=2)
    ours = decode(dec, z, x_T, steps=4, guidance=3.0, output="pt")
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=37, projection_dim=128,
                                                            num_hidden_layers=1, num_attention_heads=4, image_size=32,
                                                            patch_size=8))  # only its dtype is read when given embeds
    ref_pipe = StableUnCLIPImg2ImgPipeline(**dict(pipe.components, image_encoder=vision, feature_extractor=None))
    ref_pipe.set_progress_bar_config(disable=True)
    ref = ref_pipe(image_embeds=z * dec.embedding_norm, latents=x_T, noise_level=100, guidance_scale=3.0,
                   num_inference_steps=4, eta=0.0, generator=torch.Generator().manual_seed(dec.noise_seed),
                   output_type="pt").images
    torch.testing.assert_close((ours.clamp(-1, 1) + 1) / 2, ref, atol=1e-4, rtol=1e-4)


def test_invert_decode_round_trip_in_latent_space(tiny_clip, dec):
    scenes = world.single_objects(2)
    x0 = dec.encode_pixels(images_to_pixels(scenes, dec.image_size))
    errors = {}
    for steps in (10, 40):
        lat = invert(dec, tiny_clip, scenes, steps=steps)
        assert lat.x_T.shape == (2, 4, 8, 8)
        errors[steps] = (ddim_sample(dec, lat.z, lat.x_T, steps=steps) - x0).abs().max().item()
    from_noise = (ddim_sample(dec, lat.z, random_noise(dec, 2), steps=10) - x0).abs().max().item()
    # DDIM inversion converges (first order in the step) on a latent decoder too
    assert errors[40] < errors[10] / 2.5 and errors[40] < from_noise / 10
    # and in pixels the target is the VAE's own round trip: inversion cannot undo the autoencoder's error
    out = decode(dec, lat.z, lat.x_T, steps=40, output="pt")
    vae_only = dec.decode_pixels(x0)
    noise_only = decode(dec, lat.z, random_noise(dec, 2), steps=10, output="pt")
    assert psnr(out, vae_only).min() > psnr(noise_only, vae_only).max() + 10


def test_clip_mismatch_is_a_clear_error(tiny_clip):
    small = StableUnclipDecoder(tiny_pipe(embed_dim=64), clip_name="clipspace-tiny")
    with pytest.raises(DecoderMismatchError, match=r"64-d.*'clipspace-tiny' \(128-d\)"):
        small.check_clip(tiny_clip)
    with pytest.raises(DecoderMismatchError):
        invert(small, tiny_clip, world.single_objects(1), steps=2)
    with pytest.raises(DecoderMismatchError, match="'ViT-H-14'.*clip_name="):
        StableUnclipDecoder(tiny_pipe(), clip_name="ViT-H-14").check_clip(tiny_clip)
    with pytest.raises(ValueError, match="192 dims.*64-d"):
        StableUnclipDecoder(tiny_pipe(embed_dim=64, proj_dim=192), clip_name="x")


def test_loads_from_a_local_directory(tmp_path, pipe, dec):
    pipe.save_pretrained(tmp_path / "su")
    back = StableUnclipDecoder.from_pretrained(tmp_path / "su", clip_name="clipspace-tiny", noise_level=100)
    x, z = torch.randn(1, *dec.latent_shape), unit(1)
    torch.testing.assert_close(back.predict(x, 500, z, guidance=2.0), dec.predict(x, 500, z, guidance=2.0))
    assert back.pipe.image_encoder is None  # clipspace's CLIP gives z: the pipeline's encoder is not loaded


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(StableUnclipNotAvailableError, match="huggingface-cli download"):
        StableUnclipDecoder.from_pretrained("stabilityai/stable-diffusion-2-1-unclip", local_files_only=True)
    with pytest.raises(StableUnclipNotAvailableError, match="model_index.json"):
        StableUnclipDecoder.from_pretrained(tmp_path / "nothing-here")
