"""The Kandinsky 2.2 adapters on tiny components built from diffusers' own fast-test configs, checked
against diffusers' KandinskyV22Pipeline (with a DDIM scheduler) and KandinskyV22PriorPipeline."""
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, KandinskyV22Pipeline, KandinskyV22PriorPipeline
from PIL import Image

from clipspace import world
from clipspace.errors import DecoderMismatchError, DecoderNotAvailableError, InvalidArgumentError, PriorMismatchError
from clipspace.unclip.decoder import Decoder
from clipspace.unclip.kandinsky import (KandinskyDecoder, KandinskyPrior, tiny_components, tiny_prior_components,
                                        zero_image_embedding)
from clipspace.unclip.latents import decode, embed_images, invert, random_noise

CAPTIONS = ["a red circle", "a blue square"]


def unit(n, d=128, seed=0):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module")
def parts():
    return tiny_components()


@pytest.fixture(scope="module")
def prior_parts():
    return tiny_prior_components()


@pytest.fixture(scope="module")
def prior_pipe(prior_parts):
    pipe = KandinskyV22PriorPipeline(**prior_parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def dec(parts, prior_pipe):
    # the unconditional input as the pipelines make it: the prior pipeline's own get_zero_embed
    return KandinskyDecoder(**parts, clip_name="clipspace-tiny", zero_embed=prior_pipe.get_zero_embed()[0])


@pytest.fixture(scope="module")
def prior(prior_parts):
    p = prior_parts
    return KandinskyPrior.from_components(p["prior"], p["text_encoder"], p["tokenizer"], p["scheduler"],
                                          clip_name="clipspace-tiny")


def record_unet_inputs(unet, calls):
    """A forward pre-hook keeping what the UNet is given: sample, timestep and image_embeds."""
    def hook(module, args, kwargs):
        sample = kwargs.get("sample", args[0] if args else None)
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        calls.append((sample.clone(), float(t), kwargs["added_cond_kwargs"]["image_embeds"].clone(),
                      kwargs.get("encoder_hidden_states")))
    return unet.register_forward_pre_hook(hook, with_kwargs=True)


def test_the_decoder_implements_the_protocol(dec):
    assert isinstance(dec, Decoder)
    assert dec.image_size == 16 and dec.latent_shape == (4, 8, 8) and dec.embed_dim == 128
    cfg = dec.scheduler.config
    assert cfg.timestep_spacing == "leading" and not cfg.clip_sample and cfg.steps_offset == 1
    assert dec.embedding_norm == pytest.approx(float(dec.zero_embed.norm()))  # no norm given: the zero embedding's


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_decode_equals_the_pipeline_with_ddim(parts, dec, guidance):
    """Our decode at eta 0 and KandinskyV22Pipeline with the same DDIM schedule give the same images from
    the same x_T, embeddings and guidance, and the UNet sees the same image_embeds at every call."""
    z, x_T = unit(2, seed=1), random_noise(dec, 2, seed=2)
    ours_calls, ref_calls = [], []
    h = record_unet_inputs(parts["unet"], ours_calls)
    try:
        ours = decode(dec, z, x_T, steps=4, guidance=guidance, output="pt")
    finally:
        h.remove()
    pipe = KandinskyV22Pipeline(**dict(parts, scheduler=DDIMScheduler.from_config(dec.scheduler.config)))
    pipe.set_progress_bar_config(disable=True)
    h = record_unet_inputs(parts["unet"], ref_calls)
    try:
        ref = pipe(image_embeds=z * dec.embedding_norm, negative_image_embeds=dec.zero_embed.expand(2, -1),
                   height=16, width=16, num_inference_steps=4, guidance_scale=guidance, latents=x_T,
                   generator=torch.Generator().manual_seed(0), output_type="pt").images
    finally:
        h.remove()
    assert len(ours_calls) == len(ref_calls) == 4
    for (xs, ts, cs, hs), (xr, tr, cr, hr) in zip(ours_calls, ref_calls):
        assert ts == tr and hs is None and hr is None  # no text reaches the decoder
        torch.testing.assert_close(cs, cr, atol=0, rtol=0)
        torch.testing.assert_close(xs, xr, atol=1e-5, rtol=1e-5)
    if guidance != 1.0:  # the unconditional half is the zero-image embedding, first, as the pipeline batches it
        torch.testing.assert_close(ours_calls[0][2][:2], dec.zero_embed.expand(2, -1))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_movq_round_trip_is_the_pipelines_decode(parts, dec):
    """encode_pixels is the MoVQ encoder before quantisation; decode_pixels decodes with force_not_quantize."""
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    lat = dec.encode_pixels(pixels)
    assert lat.shape == (2, *dec.latent_shape)
    movq = parts["movq"]
    with torch.no_grad():
        torch.testing.assert_close(lat, movq.quant_conv(movq.encoder(pixels)))
        torch.testing.assert_close(dec.decode_pixels(lat), movq.decode(lat, force_not_quantize=True).sample)
        assert not torch.allclose(dec.decode_pixels(lat), movq.decode(lat).sample)  # quantising would differ


def test_the_unconditional_input_is_the_embedding_of_zero_pixels(parts, tiny_clip):
    """From a clipspace CLIP: zeros after the preprocess's normalisation (the mean colour), raw, as
    get_zero_embed feeds the prior's image encoder: the embedding of a mean-colour image, not of black."""
    d = KandinskyDecoder(**parts, clip_name="clipspace-tiny", clip=tiny_clip)
    mean = np.asarray(tiny_clip.preprocess.transforms[-1].mean)
    grey = Image.fromarray(np.full((tiny_clip.image_size,) * 2 + (3,), np.round(mean * 255), np.uint8))
    with torch.no_grad():
        as_image = tiny_clip.model.encode_image(tiny_clip.preprocess(grey)[None])[0]
        black = tiny_clip.model.encode_image(tiny_clip.preprocess(Image.new("RGB", (32, 32)))[None])[0]
    torch.testing.assert_close(d.zero_embed, zero_image_embedding(tiny_clip))
    cos = torch.nn.functional.cosine_similarity
    assert cos(d.zero_embed, as_image, dim=0) > 0.999 > cos(d.zero_embed, black, dim=0)
    assert d.embedding_norm == pytest.approx(float(d.zero_embed.norm()))
    stated = KandinskyDecoder(**parts, clip_name="clipspace-tiny", clip=tiny_clip, embedding_norm=7.0)
    assert stated.embedding_norm == 7.0
    bare = KandinskyDecoder(**parts, clip_name="clipspace-tiny", embedding_norm=3.0)
    x = torch.randn(1, *bare.latent_shape)
    assert bare.predict(x, 500, unit(1)).shape == x.shape  # guidance 1 needs no unconditional input
    with pytest.raises(InvalidArgumentError, match="zero-image embedding.*clip="):
        bare.predict(x, 500, unit(1), guidance=2.0)


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_prior_samples_equal_the_prior_pipeline(prior, prior_pipe, guidance):
    """Same seed, same z_i: our sampler is the pipeline's loop (UnCLIPScheduler, x0 prediction, ancestral
    noise from one generator); the pipeline is given our initial noise and a generator in the same state."""
    ours = prior.sample(CAPTIONS, n=2, guidance=guidance, steps=5, seed=3)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(4, 128, generator=g)
    ref = prior_pipe(CAPTIONS, num_images_per_prompt=2, num_inference_steps=5, generator=g, latents=noise,
                     guidance_scale=guidance).image_embeds
    assert ours.shape == (4, 128)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(ours, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours[0], ours[1], atol=1e-3)  # two samples of one caption differ


def test_prior_best_of_keeps_the_candidate_closest_to_the_caption(prior, prior_pipe):
    both = prior.sample(CAPTIONS, n=2, steps=5, seed=1)  # the same noise as 2 candidates per caption
    best = prior.sample(CAPTIONS, n=1, best_of=2, steps=5, seed=1)
    text, _, _ = prior_pipe._encode_prompt(CAPTIONS, torch.device("cpu"), 1, False)
    text = torch.nn.functional.normalize(text, dim=-1)
    for i in range(2):
        cands = both[2 * i: 2 * i + 2]
        torch.testing.assert_close(best[i], cands[int((cands @ text[i]).argmax())])
    assert prior.embedding_norm == pytest.approx(float((prior.transformer.clip_mean.pow(2).sum()
                                                         + prior.transformer.clip_std.pow(2).sum()).sqrt().detach()))
    with pytest.raises(InvalidArgumentError, match="captions"):
        prior.sample(unit(1))


@pytest.mark.parametrize("method", ["ddim", "fixed_point"])
def test_invert_then_decode_runs_through_the_same_path(parts, tiny_clip, method):
    """Random-weight epsilon models do not converge under inversion: assert the path (the UNet calls and
    their conditioning), the shapes and determinism, not a reconstruction."""
    d = KandinskyDecoder(**parts, clip_name="clipspace-tiny", clip=tiny_clip)
    scenes = world.single_objects(2)
    calls = []
    h = record_unet_inputs(parts["unet"], calls)
    try:
        lat = invert(d, tiny_clip, scenes, steps=3, guidance=2.0, method=method, iterations=2)
        n_invert = len(calls)
        out = decode(d, lat.z, lat.x_T, steps=3, guidance=2.0, output="pt")
    finally:
        h.remove()
    assert lat.x_T.shape == (2, 4, 8, 8) and out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(lat.z, embed_images(tiny_clip, scenes))
    assert n_invert == (3 if method == "ddim" else 3 * (1 + 2)) and len(calls) == n_invert + 3
    # every call, inverting or decoding, is guided with [zero embedding, z * norm] batched
    want = torch.cat([d.zero_embed.expand(2, -1), lat.z * d.embedding_norm])
    for _, _, c, _ in calls:
        torch.testing.assert_close(c, want)
    again = invert(d, tiny_clip, scenes, steps=3, guidance=2.0, method=method, iterations=2)
    torch.testing.assert_close(again.x_T, lat.x_T, atol=0, rtol=0)
    assert torch.isfinite(lat.x_T).all() and torch.isfinite(out).all()


def test_clip_mismatch_names_both_and_the_right_clip(tiny_clip, prior_parts):
    small = KandinskyDecoder(**tiny_components(embed_dim=64), clip_name="ViT-bigG-14", embedding_norm=1.0)
    with pytest.raises(DecoderMismatchError, match=r"64-d 'ViT-bigG-14'.*'clipspace-tiny' \(128-d\).*"
                                                   r"load_clip\('ViT-bigG-14', pretrained='laion2b_s39b_b160k'\)"):
        small.check_clip(tiny_clip)
    with pytest.raises(DecoderMismatchError):
        invert(small, tiny_clip, world.single_objects(1), steps=2)
    same_size = KandinskyDecoder(**tiny_components(), clip_name="ViT-bigG-14", embedding_norm=1.0)
    with pytest.raises(DecoderMismatchError, match="pairs with 'ViT-bigG-14'.*'clipspace-tiny'.*laion2b_s39b_b160k"):
        same_size.check_clip(tiny_clip)
    p = tiny_prior_components(embed_dim=64)
    prior = KandinskyPrior.from_components(p["prior"], p["text_encoder"], p["tokenizer"], p["scheduler"], "ViT-bigG-14")
    with pytest.raises(PriorMismatchError, match=r"64-d 'ViT-bigG-14'.*'clipspace-tiny' \(128-d\).*load_clip"):
        prior.sample(CAPTIONS, clip=tiny_clip)


def test_missing_weights_fail_at_once_naming_the_repo_and_where(tmp_path):
    with pytest.raises(DecoderNotAvailableError, match=r"(?s)kandinsky-community/kandinsky-2-2-decoder.*"
                                                       r"Hugging Face cache \(.*\).*huggingface-cli download"):
        KandinskyDecoder.from_pretrained("kandinsky-community/kandinsky-2-2-decoder", local_files_only=True)
    with pytest.raises(DecoderNotAvailableError, match="kandinsky-community/kandinsky-2-2-prior.*Hugging Face cache"):
        KandinskyPrior.from_pretrained(local_files_only=True)
    missing = tmp_path / "nothing-here"
    with pytest.raises(DecoderNotAvailableError, match=f"{missing}.*model_index.json"):
        KandinskyDecoder.from_pretrained(missing)
    with pytest.raises(DecoderNotAvailableError, match=f"{missing}.*model_index.json"):
        KandinskyPrior.from_pretrained(missing)


def test_loads_local_folders_in_diffusers_layout(tmp_path, parts, prior_parts, dec, prior):
    KandinskyV22Pipeline(**parts).save_pretrained(tmp_path / "decoder")
    KandinskyV22PriorPipeline(**prior_parts).save_pretrained(tmp_path / "prior")
    back = KandinskyDecoder.from_pretrained(tmp_path / "decoder", clip_name="clipspace-tiny", local_files_only=True,
                                            zero_embed=dec.zero_embed)
    x, z = torch.randn(1, *dec.latent_shape), unit(1)
    torch.testing.assert_close(back.predict(x, 500, z, guidance=2.0), dec.predict(x, 500, z, guidance=2.0))
    assert back.scheduler.config.timestep_spacing == "leading"
    pback = KandinskyPrior.from_pretrained(tmp_path / "prior", clip_name="clipspace-tiny", local_files_only=True)
    torch.testing.assert_close(pback.sample(CAPTIONS, steps=3), prior.sample(CAPTIONS, steps=3))
    with pytest.raises(ValueError, match="clip_name="):
        KandinskyDecoder.from_pretrained(tmp_path / "decoder")



def test_hf_hub_offline_fails_at_once_naming_the_repo_and_the_cache(monkeypatch):
    """HF_HUB_OFFLINE=1 (huggingface_hub reads it at import: set here on its constants) and no weights:
    the hub is never tried, and the error names the repo and the cache folder it looked in."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for load, repo in ((KandinskyDecoder.from_pretrained, "kandinsky-community/kandinsky-2-2-decoder"),
                       (KandinskyPrior.from_pretrained, "kandinsky-community/kandinsky-2-2-prior")):
        with pytest.raises(DecoderNotAvailableError) as e:
            load(repo)
        assert repo in str(e.value) and f"Hugging Face cache ({constants.HF_HUB_CACHE})" in str(e.value)
