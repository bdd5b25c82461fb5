"""The Karlo adapters on tiny components built from diffusers' (removed) fast-test configs, checked against
diffusers' deprecated UnCLIPImageVariationPipeline (decoder conditioning, exactly, through a hook; the
pipeline cannot run DDIM, so DDIM decoding is checked by driving its own UNet and text projection) and
UnCLIPPipeline (the prior's samples)."""
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel, UnCLIPScheduler
from diffusers.pipelines.deprecated.unclip import UnCLIPImageVariationPipeline, UnCLIPPipeline
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from clipspace import world
from clipspace.errors import DecoderMismatchError, DecoderNotAvailableError, PriorMismatchError
from clipspace.unclip.decoder import Decoder
from clipspace.unclip.karlo import KarloDecoder, KarloPrior, tiny_components, tiny_prior_components
from clipspace.unclip.latents import decode, embed_images, invert, random_noise

CAPTIONS = ["a red circle", "a blue square"]
NORM = 5.0  # a stated embedding norm (the real one comes from the prior's statistics)


def unit(n, d=128, seed=0):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def super_res(seed):
    """The pipelines' super-resolution UNets at toy size (clipspace never runs them; the pipelines do)."""
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=32, layers_per_block=1, down_block_types=("ResnetDownsampleBlock2D",) * 2,
                       up_block_types=("ResnetUpsampleBlock2D",) * 2, block_out_channels=(32, 64), in_channels=6,
                       out_channels=3).eval()


def stages():
    return dict(super_res_first=super_res(1), super_res_last=super_res(2),
                super_res_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon"))


@pytest.fixture(scope="module")
def parts():
    return tiny_components()


@pytest.fixture(scope="module")
def prior_parts():
    return tiny_prior_components()


@pytest.fixture(scope="module")
def dec(parts):
    return KarloDecoder(**parts, clip_name="clipspace-tiny", embedding_norm=NORM)


@pytest.fixture(scope="module")
def variation_pipe(parts):
    torch.manual_seed(3)  # the image encoder is only read for its dtype when embeddings are given
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, projection_dim=128, num_hidden_layers=1,
                                                            num_attention_heads=4, image_size=32, intermediate_size=37,
                                                            patch_size=8))
    pipe = UnCLIPImageVariationPipeline(**parts, image_encoder=vision, feature_extractor=CLIPImageProcessor(
        crop_size=32, size=32), **stages())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def text_pipe(parts, prior_parts):
    pipe = UnCLIPPipeline(**prior_parts, decoder=parts["decoder"], text_proj=parts["text_proj"],
                          decoder_scheduler=parts["decoder_scheduler"], **stages())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def prior(prior_parts):
    p = prior_parts
    return KarloPrior.from_components(p["prior"], p["text_encoder"], p["tokenizer"], p["prior_scheduler"],
                                      clip_name="clipspace-tiny")


def record_unet(unet, calls):
    """Forward hooks keeping each UNet call's inputs (sample, timestep, conditioning) and output."""
    def pre(module, args, kwargs):
        sample = kwargs.get("sample", args[0] if args else None)
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        calls.append(dict(sample=sample.clone(), t=float(t), **{k: kwargs[k].clone() for k in (
            "encoder_hidden_states", "class_labels", "attention_mask")}))

    def post(module, args, kwargs, out):
        calls[-1]["out"] = out.sample.clone()
    return [unet.register_forward_pre_hook(pre, with_kwargs=True), unet.register_forward_hook(post, with_kwargs=True)]


def remove(hooks):
    for h in hooks:
        h.remove()


def test_the_decoder_implements_the_protocol(dec, parts):
    assert isinstance(dec, Decoder)
    assert dec.image_size == 16 and dec.latent_shape == (3, 16, 16) and dec.embed_dim == 128
    cfg = dec.scheduler.config
    assert cfg.timestep_spacing == "leading" and not cfg.clip_sample and cfg.prediction_type == "epsilon"
    # the DDIM schedule is exactly Karlo's UnCLIPScheduler's
    torch.testing.assert_close(dec.scheduler.alphas_cumprod, parts["decoder_scheduler"].alphas_cumprod, atol=0, rtol=0)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_conditioning_and_prediction_are_the_variation_pipelines(parts, dec, variation_pipe, guidance):
    """The pipeline runs (its own UnCLIPScheduler); at every one of its UNet calls, our predict on the same
    x and t hands the UNet the same encoder_hidden_states, class_labels and attention mask (learned null
    first, empty prompt in both halves) and returns the pipeline's guided epsilon (first 3 channels)."""
    z = unit(2, seed=1)
    ref = []
    hooks = record_unet(parts["decoder"], ref)
    try:
        variation_pipe(image_embeddings=z * NORM, decoder_num_inference_steps=3, super_res_num_inference_steps=2,
                       decoder_guidance_scale=guidance, generator=torch.Generator().manual_seed(0), output_type="np")
    finally:
        remove(hooks)
    ref = ref[:3]  # the decoder's calls (the super-resolution UNets are other modules)
    guided = guidance != 1.0
    for call in ref:
        ours = []
        hooks = record_unet(parts["decoder"], ours)
        try:
            x = call["sample"][:2]
            eps = dec.predict(x, call["t"], z, guidance)
        finally:
            remove(hooks)
        (o,) = ours
        # float tolerance: the pipeline encodes the empty prompt once per image, we once and expand it
        for k in ("encoder_hidden_states", "class_labels", "attention_mask", "sample"):
            torch.testing.assert_close(o[k], call[k], atol=1e-6, rtol=1e-5)
        out = call["out"][:, :3]
        want = out[:2] + guidance * (out[2:] - out[:2]) if guided else out
        torch.testing.assert_close(eps, want, atol=1e-4, rtol=1e-4)
    if guided:  # the unconditional half's 4 extra tokens come from the learned null, not from zeros
        null = parts["text_proj"].learned_classifier_free_guidance_embeddings
        tokens = parts["text_proj"].clip_extra_context_tokens_proj(null).reshape(-1, 4).T
        torch.testing.assert_close(ref[0]["encoder_hidden_states"][0, :4], tokens.detach())
        assert ref[0]["attention_mask"][:, :4].all()


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_decode_equals_ddim_on_the_pipelines_own_modules(variation_pipe, dec, guidance):
    """DDIM at eta 0 written out over the pipeline's own _encode_prompt (the empty prompt), text_proj and
    UNet, on a DDIMScheduler built here from Karlo's schedule: the same images as our decode."""
    z, x_T = unit(2, seed=1), random_noise(dec, 2, seed=2)
    ours = decode(dec, z, x_T, steps=4, guidance=guidance, output="pt")
    p, guided = variation_pipe, guidance > 1.0
    with torch.no_grad():
        embeds, hidden, mask = p._encode_prompt([""] * 2, torch.device("cpu"), 1, guided)
        hidden, time = p.text_proj(image_embeddings=z * NORM, prompt_embeds=embeds, text_encoder_hidden_states=hidden,
                                   do_classifier_free_guidance=guided)
        mask = F.pad(mask, (p.text_proj.clip_extra_context_tokens, 0), value=True)
        sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                              clip_sample=False, timestep_spacing="leading")
        sched.set_timesteps(4)
        x = x_T.clone()
        for t in sched.timesteps:
            out = p.decoder(torch.cat([x, x]) if guided else x, t, encoder_hidden_states=hidden, class_labels=time,
                            attention_mask=mask).sample[:, :3]
            if guided:
                u, c = out.chunk(2)
                out = u + guidance * (c - u)
            x = sched.step(out, t, x, eta=0.0).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_prior_samples_equal_the_unclip_pipelines_prior(prior, text_pipe, guidance):
    """The whole UnCLIPPipeline runs; a hook on its text projection takes the prior's z_i as the decoder
    receives them. Same initial noise and a generator in the same state: the same z_i."""
    got = {}
    h = text_pipe.text_proj.register_forward_pre_hook(
        lambda m, a, kw: got.update(z=kw["image_embeddings"].clone()), with_kwargs=True)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(4, 128, generator=g)
    try:
        text_pipe(CAPTIONS, num_images_per_prompt=2, generator=g, prior_latents=noise, prior_guidance_scale=guidance,
                  decoder_guidance_scale=guidance, prior_num_inference_steps=5, decoder_num_inference_steps=2,
                  super_res_num_inference_steps=2, output_type="np")
    finally:
        h.remove()
    ours = prior.sample(CAPTIONS, n=2, guidance=guidance, steps=5, seed=3)
    assert ours.shape == (4, 128)
    torch.testing.assert_close(ours, F.normalize(got["z"], dim=-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["ddim", "fixed_point"])
def test_invert_then_decode_runs_through_the_same_path(parts, tiny_clip, method):
    """Random-weight epsilon models do not converge under inversion: assert the path (the UNet calls and
    their conditioning), the shapes and determinism, not a reconstruction."""
    d = KarloDecoder(**parts, clip_name="clipspace-tiny", clip=tiny_clip)  # norm: the zero-image embedding's
    scenes = world.single_objects(2)
    calls = []
    hooks = record_unet(parts["decoder"], calls)
    try:
        lat = invert(d, tiny_clip, scenes, steps=3, guidance=2.0, method=method, iterations=2)
        n_invert = len(calls)
        out = decode(d, lat.z, lat.x_T, steps=3, guidance=2.0, output="pt")
    finally:
        remove(hooks)
    assert lat.x_T.shape == (2, 3, 16, 16) and out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(lat.z, embed_images(tiny_clip, scenes))
    assert n_invert == (3 if method == "ddim" else 3 * (1 + 2)) and len(calls) == n_invert + 3
    want = d.conditioning(lat.z, guided=True)  # the same conditioning inverting and decoding
    for c in calls:
        for k in ("encoder_hidden_states", "class_labels", "attention_mask"):
            torch.testing.assert_close(c[k], want[k])
    again = invert(d, tiny_clip, scenes, steps=3, guidance=2.0, method=method, iterations=2)
    torch.testing.assert_close(again.x_T, lat.x_T, atol=0, rtol=0)
    assert torch.isfinite(lat.x_T).all() and torch.isfinite(out).all()


def test_clip_mismatch_names_both_and_the_right_clip(tiny_clip):
    small = KarloDecoder(**tiny_components(embed_dim=64), clip_name="ViT-L-14", embedding_norm=1.0)
    with pytest.raises(DecoderMismatchError, match=r"64-d 'ViT-L-14'.*'clipspace-tiny' \(128-d\).*"
                                                   r"load_clip\('ViT-L-14', pretrained='openai'\)"):
        small.check_clip(tiny_clip)
    with pytest.raises(DecoderMismatchError):
        invert(small, tiny_clip, world.single_objects(1), steps=2)
    with pytest.raises(DecoderMismatchError, match="pairs with 'ViT-L-14'.*'clipspace-tiny'.*openai"):
        KarloDecoder(**tiny_components(), clip_name="ViT-L-14", clip=tiny_clip)
    p = tiny_prior_components(embed_dim=64)
    prior = KarloPrior.from_components(p["prior"], p["text_encoder"], p["tokenizer"], p["prior_scheduler"], "ViT-L-14")
    with pytest.raises(PriorMismatchError, match=r"64-d 'ViT-L-14'.*'clipspace-tiny' \(128-d\).*pretrained='openai'"):
        prior.check_clip(tiny_clip)


def test_missing_weights_fail_at_once_naming_the_repo_and_where(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(DecoderNotAvailableError, match=r"(?s)kakaobrain/karlo-v1-alpha-image-variations.*"
                                                       r"Hugging Face cache \(.*\).*huggingface-cli download"):
        KarloDecoder.from_pretrained("kakaobrain/karlo-v1-alpha-image-variations", local_files_only=True)
    with pytest.raises(DecoderNotAvailableError, match="kakaobrain/karlo-v1-alpha.*Hugging Face cache"):
        KarloPrior.from_pretrained(local_files_only=True)
    missing = tmp_path / "nothing-here"
    with pytest.raises(DecoderNotAvailableError, match=f"{missing}.*model_index.json"):
        KarloDecoder.from_pretrained(missing)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1: the hub is never tried
    with pytest.raises(DecoderNotAvailableError, match=r"kakaobrain/karlo-v1-alpha'.*Hugging Face cache"):
        KarloDecoder.from_pretrained("kakaobrain/karlo-v1-alpha")


def test_loads_a_local_folder_in_diffusers_layout(tmp_path, text_pipe, dec, prior):
    """karlo-v1-alpha's layout (UnCLIPPipeline.save_pretrained): the decoder and the prior load from it,
    and only their parts are read."""
    text_pipe.save_pretrained(tmp_path / "karlo")
    back = KarloDecoder.from_pretrained(tmp_path / "karlo", clip_name="clipspace-tiny", local_files_only=True,
                                        embedding_norm=NORM)
    x, z = torch.randn(1, *dec.latent_shape), unit(1)
    torch.testing.assert_close(back.predict(x, 500, z, guidance=2.0), dec.predict(x, 500, z, guidance=2.0))
    pback = KarloPrior.from_pretrained(tmp_path / "karlo", clip_name="clipspace-tiny", local_files_only=True)
    torch.testing.assert_close(pback.sample(CAPTIONS, steps=3), prior.sample(CAPTIONS, steps=3))
    assert pback.pipe.decoder is None and pback.pipe.super_res_first is None
