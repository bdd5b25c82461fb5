"""The unCLIP prior (clipspace.unclip.prior) and caption-to-image generation (clipspace.unclip.generate)."""
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from clipspace.errors import ClipspaceError, InvalidArgumentError, PriorMismatchError, PriorNotFoundError
from clipspace.unclip.decoder import build_decoder
from clipspace.unclip.generate import (SATURATED, THRESHOLD_MAX, THRESHOLD_RATIO, decode_embeddings, generate, rerank,
                                       saturation, thresholding_scheduler)
from clipspace.unclip.latents import embed_texts, random_noise
from clipspace.unclip.prior import build_prior, get_prior_config, load_prior, prior_for, sample_loop, save_prior


def tiny_prior_config(**over) -> dict:
    cfg = get_prior_config("prior-tiny")
    cfg["transformer"].update(num_layers=1, num_attention_heads=2, attention_head_dim=16)
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def prior(tiny_clip):
    p = build_prior(tiny_prior_config(clip_model=tiny_clip.name, clip_embed_dim=tiny_clip.embed_dim), seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # statistics that are not the identity, so the (de)normalisation is exercised
        p.transformer.clip_mean.copy_(torch.randn(1, p.embed_dim, generator=g) * 0.05)
        p.transformer.clip_std.copy_(torch.rand(1, p.embed_dim, generator=g) * 0.1 + 0.05)
    p.clip = tiny_clip
    return p


@pytest.fixture(scope="module")
def z_t(tiny_clip):
    return embed_texts(tiny_clip, ["a red circle", "a blue square to the left of a green star"])


CAPTIONS = ["a red circle", "a blue square to the left of a green star"]


# --- sampling -------------------------------------------------------------------------------------
def test_sample_shapes_unit_norm_and_caption_major_order(prior, tiny_clip, z_t):
    z = prior.sample(CAPTIONS, n=3, steps=4, seed=0, clip=tiny_clip)
    assert z.shape == (6, tiny_clip.embed_dim) and z.dtype == torch.float32
    np.testing.assert_allclose(z.norm(dim=1), 1.0, atol=1e-5)
    # captions embedded by the CLIP equal the embeddings given directly
    np.testing.assert_allclose(prior.sample(z_t, n=3, steps=4, seed=0), z, atol=1e-5)
    # caption by caption: the first caption's three samples come first
    first = prior.sample(z_t[:1], n=3, steps=4, seed=0)
    assert not torch.allclose(first, z[3:])


def test_sample_is_deterministic_per_seed(prior, z_t):
    a, b = prior.sample(z_t, n=2, steps=4, seed=7), prior.sample(z_t, n=2, steps=4, seed=7)
    assert torch.equal(a, b)
    assert not torch.allclose(a, prior.sample(z_t, n=2, steps=4, seed=8))
    # eta > 0 draws fresh noise from the same seeded generator: still reproducible
    assert torch.equal(prior.sample(z_t, steps=4, seed=3, eta=1.0), prior.sample(z_t, steps=4, seed=3, eta=1.0))


def test_guidance_one_is_the_conditional_model_and_others_extrapolate(prior, z_t):
    x = torch.randn(2, prior.embed_dim)
    t = torch.tensor(500)
    net = prior.transformer
    with torch.no_grad():
        cond = net(x, t, proj_embedding=z_t).predicted_image_embedding
        uncond = net(x, t, proj_embedding=torch.zeros_like(z_t)).predicted_image_embedding
    torch.testing.assert_close(prior.predict(x, t, z_t, 1.0), cond)
    torch.testing.assert_close(prior.predict(x, t, z_t, 3.0), uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prior.predict(x, t, z_t, 0.0), uncond, atol=1e-6, rtol=1e-5)


def _reference_ddim(prior, z_t, noise, steps, guidance):
    """DDIM at eta 0 written out from the paper's update (Song et al. 2021, eq. 12) on the scheduler's
    alphas and timesteps, with diffusers' UnCLIPPipeline prior-loop structure (batch the unconditional
    and conditional halves, guide, step, post_process_latents): an independent reference. Each step
    goes to t - 1000 // steps (diffusers' DDIM convention), alpha 1 below 0 (set_alpha_to_one)."""
    cfg = prior.scheduler.config
    sched = DDIMScheduler.from_config(cfg)
    sched.set_timesteps(steps)
    a_bar = sched.alphas_cumprod.double()
    ts = sched.timesteps.tolist()
    x = noise.double()
    net = prior.transformer.double()
    try:
        for t in ts:
            with torch.no_grad():
                out = net(torch.cat([x, x]), torch.tensor(t), proj_embedding=torch.cat(
                    [torch.zeros_like(z_t), z_t]).double()).predicted_image_embedding
            uncond, cond = out.chunk(2)
            x0 = (uncond + guidance * (cond - uncond)).clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
            a_t = a_bar[t]
            prev = t - cfg.num_train_timesteps // steps
            a_prev = a_bar[prev] if prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        z = x * net.clip_std + net.clip_mean
    finally:
        net.float()
    return torch.nn.functional.normalize(z, dim=-1).float()


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_the_loop_matches_an_independent_ddim_reference(prior, z_t, guidance):
    g = torch.Generator().manual_seed(5)
    noise = torch.randn((len(z_t), prior.embed_dim), generator=g)
    ours = prior.sample(z_t, steps=6, seed=5, guidance=guidance)
    torch.testing.assert_close(ours, _reference_ddim(prior, z_t, noise, 6, guidance), atol=2e-4, rtol=1e-4)
    # and the lower-level loop is what sample() runs
    torch.testing.assert_close(torch.nn.functional.normalize(sample_loop(prior, z_t, noise, 6, guidance), dim=-1),
                               ours, atol=1e-6, rtol=1e-6)


def test_trailing_spacing_starts_from_pure_noise(prior):
    sched = DDIMScheduler.from_config(prior.scheduler.config)
    sched.set_timesteps(25)
    assert int(sched.timesteps[0]) == 999


def test_best_of_keeps_the_candidate_closest_to_the_text(prior, z_t):
    cands = prior.sample(z_t, n=3, steps=4, seed=2)  # the same noise draws, as n=1 best_of=3 uses
    best = prior.sample(z_t, n=1, steps=4, seed=2, best_of=3)
    for i in range(len(z_t)):
        c = cands[3 * i:3 * i + 3]
        torch.testing.assert_close(best[i], c[(c @ z_t[i]).argmax()])
    assert ((best * z_t).sum(1) >= (cands.reshape(2, 3, -1) * z_t[:, None]).sum(-1).mean(1) - 1e-6).all()


@pytest.mark.parametrize("kwargs, name", [
    ({"n": 0}, "n"), ({"n": 1.5}, "n"), ({"n": True}, "n"), ({"steps": 0}, "steps"),
    ({"guidance": float("nan")}, "guidance"), ({"guidance": -1.0}, "guidance"), ({"guidance": "big"}, "guidance"),
    ({"best_of": 0}, "best_of"), ({"eta": 2.0}, "eta"),
])
def test_bad_arguments_are_named(prior, z_t, kwargs, name):
    with pytest.raises(InvalidArgumentError, match=rf"^{name}\b"):
        prior.sample(z_t, **kwargs)


@pytest.mark.parametrize("texts", [[], "", ["a red circle", "  "], None, [3]])
def test_empty_or_non_string_texts_are_refused(prior, tiny_clip, texts):
    with pytest.raises(InvalidArgumentError, match="texts"):
        prior.sample(texts, clip=tiny_clip)


def test_text_embeddings_must_be_finite_and_of_the_right_size(prior):
    with pytest.raises(InvalidArgumentError, match="NaN"):
        prior.sample(torch.full((1, prior.embed_dim), float("nan")))
    with pytest.raises(InvalidArgumentError, match="128-d"):
        prior.sample(torch.ones(1, 5))


def test_captions_need_a_clip(tiny_clip):
    p = build_prior(tiny_prior_config(clip_model=tiny_clip.name), seed=0)
    with pytest.raises(InvalidArgumentError, match="clip"):
        p.sample(["a red circle"])


# --- loading, pairing ---------------------------------------------------------------------------------
def test_save_load_round_trip(prior, tiny_clip, z_t, tmp_path):
    save_prior(prior, tmp_path / "p", extra={"trained_steps": 3})
    back = load_prior(tmp_path / "p", clip=tiny_clip)
    assert back.config["trained_steps"] == 3 and back.clip is tiny_clip
    torch.testing.assert_close(back.sample(z_t, steps=4, seed=1), prior.sample(z_t, steps=4, seed=1))
    save_prior(prior, tmp_path / "half", fp16=True)
    half = load_prior(tmp_path / "half")
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "half" / "prior.safetensors"))
    assert stored["clip_std"].dtype == torch.float32 and stored["proj_in.weight"].dtype == torch.float16
    assert float((half.sample(z_t, steps=4, seed=1) * prior.sample(z_t, steps=4, seed=1)).sum(1).min()) > 0.99


def test_load_prior_checks_the_clip(prior, build_random_clip, tmp_path):
    save_prior(prior, tmp_path / "p")
    other = build_random_clip("ViT-S-32-alt", seed=1)
    with pytest.raises(PriorMismatchError, match="ViT-S-32-alt") as e:
        load_prior(tmp_path / "p", clip=other)
    assert isinstance(e.value, ClipspaceError) and "load_clip('clipspace-tiny')" in str(e.value)


def test_prior_for_says_why_there_is_none(build_random_clip):
    other = build_random_clip("ViT-S-32-alt", seed=1)
    p, why = prior_for(other)
    assert p is None and why.startswith("No prior pairs with 'ViT-S-32-alt'")


def test_missing_prior_directory(tmp_path):
    with pytest.raises(PriorNotFoundError, match="not a prior directory"):
        load_prior(tmp_path)


# --- generation: decoding, thresholding, reranking ---------------------------------------------------------
@pytest.fixture(scope="module")
def decoder(tiny_config, tiny_clip):
    return build_decoder(tiny_config(clip_model=tiny_clip.name, clip_embed_dim=tiny_clip.embed_dim), seed=0)


def test_generate_is_seeded_and_gives_n_images(prior, decoder, tiny_clip):
    a = generate(prior, decoder, tiny_clip, "a red circle", n=2, steps=3, prior_steps=3, seed=4, output="np")
    b = generate(prior, decoder, tiny_clip, "a red circle", n=2, steps=3, prior_steps=3, seed=4, output="np")
    assert a.shape == (2, decoder.image_size, decoder.image_size, 3) and np.array_equal(a, b)
    with pytest.raises(InvalidArgumentError, match="prompt"):
        generate(prior, decoder, tiny_clip, ["a", "b"], n=1)
    with pytest.raises(InvalidArgumentError, match="decoder_guidance"):
        generate(prior, decoder, tiny_clip, "a red circle", n=1, decoder_guidance=float("inf"))


class _X0Decoder:
    """A stub pixel decoder predicting a fixed clean image (prediction_type 'sample'): x0 known exactly."""

    def __init__(self, x0: torch.Tensor):
        self.x0, self.image_size, self.embed_dim, self.clip_name = x0, x0.shape[-1], 4, "stub"
        self.scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                       prediction_type="sample", clip_sample=False, set_alpha_to_one=True)
        self.config = {"guidance": 1.0}
        self.latent_shape, self.device, self.dtype = tuple(x0.shape[1:]), torch.device("cpu"), torch.float32

    def encode_pixels(self, p):
        return p

    def decode_pixels(self, x):
        return x

    def predict(self, x, t, z, guidance=1.0):
        return self.x0.expand(len(x), -1, -1, -1)


def test_thresholding_is_diffusers_and_reduces_saturation():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 3, 8, 8, generator=g) * 0.8  # about 20% of values past +-1: over-saturated
    dec = _X0Decoder(x0)
    z = torch.ones(1, 4) / 2
    plain = decode_embeddings(dec, z, steps=5, output="pt")
    on = decode_embeddings(dec, z, steps=5, thresholding=True, output="pt")
    torch.testing.assert_close(plain, x0, atol=1e-5, rtol=1e-5)  # the last step returns x0
    # Imagen's dynamic thresholding, written out: s = the 99.5th percentile of |x0|, kept in [1, 1.5]
    s = np.clip(np.quantile(np.abs(x0.numpy()).ravel(), THRESHOLD_RATIO), 1.0, THRESHOLD_MAX)
    np.testing.assert_allclose(on.numpy(), np.clip(x0.numpy(), -s, s) / s, atol=1e-5)
    # ... which is diffusers' DDIMScheduler(thresholding=True) step for step (the noise re-derived from x0)
    sched = DDIMScheduler.from_config(dec.scheduler.config, thresholding=True,
                                      dynamic_thresholding_ratio=THRESHOLD_RATIO, sample_max_value=THRESHOLD_MAX)
    sched.set_timesteps(5)
    x = random_noise(dec, 1, seed=0)
    for t in sched.timesteps:
        x = sched.step(dec.predict(x, t, z), t, x, use_clipped_model_output=True).prev_sample
    torch.testing.assert_close(on, x)
    assert saturation(on) < saturation(plain) and saturation(plain) > 0.1
    assert float((plain.abs() >= SATURATED).float().mean()) == saturation(plain)


def test_thresholding_leaves_the_decoder_and_plain_sampling_alone(decoder):
    from clipspace.unclip.latents import decode

    assert thresholding_scheduler(decoder, 5).config.thresholding and not decoder.scheduler.config.thresholding
    z = torch.nn.functional.normalize(torch.randn(2, decoder.embed_dim), dim=-1)
    plain = decode_embeddings(decoder, z, seed=1, steps=3, output="pt")  # thresholding off: latents.decode itself
    torch.testing.assert_close(plain, decode(decoder, z, random_noise(decoder, 2, seed=1), steps=3,
                                             guidance=decoder.config["guidance"], output="pt"))


def test_rerank_orders_by_clip_score(tiny_clip):
    from clipspace import world

    images = [s.render(32) for s in world.single_objects(5)]
    r = rerank(tiny_clip, images, "a red circle")
    z = tiny_clip.encode_images(images, progress=False)  # the other embedding path: clipspace.embedding
    t = tiny_clip.encode_texts(["a red circle"], progress=False)[0]
    np.testing.assert_allclose(r.scores, z @ t, atol=1e-5)
    assert list(r.order) == sorted(range(5), key=lambda i: -float(z[i] @ t))
    with pytest.raises(InvalidArgumentError, match="caption"):
        rerank(tiny_clip, images, " ")
