"""Karlo (Kakao Brain's unCLIP) as a `Decoder` and a prior: the paper-faithful 64 px pixel-space stack.

For users with a GPU and the weights: `kakaobrain/karlo-v1-alpha` (prior + decoder) and
`kakaobrain/karlo-v1-alpha-image-variations` (decoder) pair with OpenAI CLIP ViT-L/14
(768-d: `load_clip("ViT-L-14", pretrained="openai")`).

    clip = load_clip("ViT-L-14", pretrained="openai", device="cuda")
    prior = KarloPrior.from_pretrained("kakaobrain/karlo-v1-alpha", device="cuda")
    dec = KarloDecoder.from_pretrained("kakaobrain/karlo-v1-alpha", device="cuda",
                                       embedding_norm=prior.embedding_norm)
    lat = unclip.invert(dec, clip, images)          # 64 px: the super-resolution stages are not used

Karlo lives in diffusers' deprecated pipelines: since diffusers 0.38 the text projection is
imported from `diffusers.pipelines.deprecated.unclip` (the old `diffusers.pipelines.unclip.text_proj`
path is gone); if a later diffusers drops it, this module stops importing, and says so.

The decoder (the first stage of `UnCLIPImageVariationPipeline`), all inside `KarloDecoder`:
- pixel space, 64 px; `encode_pixels` / `decode_pixels` are the identity;
- conditioning is `UnCLIPTextProjModel`'s, as the paper builds it: Linear(z_i) + Linear(text
  embedding) added to the time embedding (`class_embed_type="identity"`), and four extra context
  tokens from z_i placed before LayerNorm(Linear(the text encoder's token states)); the attention
  mask is padded with four True values;
- the text is the empty prompt, for both halves of guidance, as the image-variation pipeline runs
  it: its pooled embedding, token states and mask are computed once, with Karlo's own text encoder;
- the unconditional branch of guidance is the text projection's **learned null embedding**
  (`learned_classifier_free_guidance_embeddings`), not zeros;
- the UNet's 6 output channels are epsilon plus a learned variance range: `predict` returns
  `[:, :3]` (DDIM's eta supplies its own sigma, and `DDIMScheduler.step` fails on 6 channels);
- sampling and inversion use `DDIMScheduler(beta_schedule="squaredcos_cap_v2", epsilon)`, whose
  `alphas_cumprod` are exactly the `UnCLIPScheduler`'s, with leading spacing ("trailing" reaches
  t = 999, where alpha_bar is 2.4e-9 and the round trip explodes) and no sample clipping (the
  pipeline's own scheduler clips x0 to [-1, 1]; inversion cannot). The pipeline itself cannot run
  DDIM (its step passes `prev_timestep`): parity is tested by driving its own UNet and text projection;
- scale: Karlo was trained on raw (unnormalised) ViT-L/14 image embeddings, clipspace passes unit
  ones, and here the scale matters (no LayerNorm after the projections of z). z is multiplied by
  `embedding_norm`: best, the prior's root-mean-square norm sqrt(|clip_mean|^2 + |clip_std|^2)
  (`KarloPrior.embedding_norm`); without one, the norm of the CLIP given's embedding of the all-zero
  preprocessed image (`clip=`). Shortcut: every image gets one typical norm, not its own.

The prior (`UnCLIPPipeline`'s first stage), `KarloPrior`: the same sampler as Kandinsky's
(`kandinsky.PipelinePrior`: the pipeline's own `_encode_prompt`, `UnCLIPScheduler` with the next
timestep passed, guidance against the empty caption), on `prior_scheduler`.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from clipspace.errors import DecoderMismatchError, InvalidArgumentError
from clipspace.unclip.decoder import UNetDecoder, classifier_free_guidance
from clipspace.unclip.kandinsky import (PipelinePrior, check_pairing, load_parts, resolve_embedding_norm, tiny_prior,
                                        tiny_text_encoder, tiny_tokenizer)

try:  # where diffusers keeps Karlo since 0.38 (deprecated pipelines)
    from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline, UnCLIPTextProjModel
except ImportError as e:  # pragma: no cover (depends on the installed diffusers)
    raise ImportError("this diffusers has no Karlo: UnCLIPTextProjModel is not in diffusers.pipelines.deprecated."
                      "unclip (diffusers 0.38-0.42 keep it there); install one of those to use clipspace.unclip.karlo"
                      ) from e

HUB_MODELS = {  # hub id -> the open_clip architecture of the CLIP it was trained on
    "kakaobrain/karlo-v1-alpha": "ViT-L-14",
    "kakaobrain/karlo-v1-alpha-image-variations": "ViT-L-14",
}
PRIOR_HUB_MODELS = {"kakaobrain/karlo-v1-alpha": "ViT-L-14"}


def ddim_for(scheduler) -> DDIMScheduler:
    """The DDIM scheduler on a Karlo UnCLIPScheduler's schedule: same betas (squaredcos_cap_v2), epsilon,
    leading spacing, no clipping."""
    c = scheduler.config
    return DDIMScheduler(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                         prediction_type=c.prediction_type, clip_sample=False, timestep_spacing="leading")


class KarloDecoder(UNetDecoder):
    """A `Decoder` over Karlo's 64 px decoder UNet and its text projection (`UnCLIPImageVariationPipeline`'s
    first stage; the pipeline's image encoder and super-resolution UNets are not used)."""

    what = "Karlo decoder"

    def __init__(self, decoder, text_proj, text_encoder, tokenizer, decoder_scheduler, clip_name: str,
                 embedding_norm: float | None = None, clip=None):
        self.unet, self.text_proj = decoder, text_proj
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        if decoder.config.class_embed_type != "identity":
            raise ValueError(f"not a Karlo decoder UNet: class_embed_type={decoder.config.class_embed_type!r} "
                             f"(expected 'identity': the text projection's embedding is added to the time embedding)")
        self.scheduler = ddim_for(decoder_scheduler)
        self.embed_dim = int(text_proj.config.clip_embeddings_dim)
        self.clip_name = clip_name
        self.image_size = int(decoder.config.sample_size)
        if clip is not None:
            self.check_clip(clip)
        self.embedding_norm = resolve_embedding_norm(embedding_norm, clip, None)
        with torch.no_grad():  # the empty prompt, once: what the image-variation pipeline conditions on
            ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
            out = text_encoder(ids.input_ids.to(text_encoder.device))
        self.prompt_embeds, self.text_hidden_states = out.text_embeds, out.last_hidden_state
        self.text_mask = ids.attention_mask.bool()

    def __repr__(self) -> str:
        return (f"KarloDecoder({self.image_size}px, clip={self.clip_name!r}, embed_dim={self.embed_dim}, "
                f"embedding_norm={self.embedding_norm}, prediction={self.scheduler.config.prediction_type})")

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "kakaobrain/karlo-v1-alpha",
                        clip_name: str | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, local_files_only: bool = False,
                        **kwargs) -> "KarloDecoder":
        """Load decoder/, text_proj/, text_encoder/, tokenizer/ and decoder_scheduler/ from a local
        directory (diffusers layout: either Karlo repo) or a hub id. kwargs go to the constructor:
        `embedding_norm=` (KarloPrior.embedding_norm is best), `clip=` (checked)."""
        from diffusers import UNet2DConditionModel, UnCLIPScheduler
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        name = os.fspath(name_or_dir)
        parts = load_parts(name, {"decoder": UNet2DConditionModel, "text_proj": UnCLIPTextProjModel,
                                  "text_encoder": CLIPTextModelWithProjection, "tokenizer": CLIPTokenizer,
                                  "decoder_scheduler": UnCLIPScheduler}, cls.what, local_files_only, dtype)
        if device is not None:
            for k in ("decoder", "text_proj", "text_encoder"):
                parts[k].to(device)
        clip_name = clip_name or HUB_MODELS.get(name.rstrip("/"), "")
        if not clip_name:
            raise ValueError(f"which CLIP does {name!r} pair with? pass clip_name='ViT-L-14' (Karlo)")
        return cls(**parts, clip_name=clip_name, **kwargs)

    # --- the Decoder protocol (device, dtype, latent_shape: UNetDecoder, in pixel space) ---------

    def to(self, device=None, dtype=None) -> "KarloDecoder":
        for m in (self.unet, self.text_proj, self.text_encoder):
            m.to(device=device, dtype=dtype)
        return self

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels  # pixel space

    def decode_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def conditioning(self, z: torch.Tensor, guided: bool) -> dict:
        """The UNet's conditioning kwargs for unit-norm z (N, D): encoder_hidden_states, class_labels and
        attention_mask, as the image-variation pipeline builds them (for guidance: the learned null
        first, then z, each with the empty prompt)."""
        if self.embedding_norm is None:
            raise InvalidArgumentError("this Karlo decoder has no embedding_norm: build it with embedding_norm= "
                                       "(KarloPrior.embedding_norm is best) or clip=")
        image = z.to(self.device, self.dtype) * self.embedding_norm
        reps = 2 * len(z) if guided else len(z)
        states, time = self.text_proj(
            image_embeddings=image, prompt_embeds=self.prompt_embeds.to(image).expand(reps, -1),
            text_encoder_hidden_states=self.text_hidden_states.to(image).expand(reps, -1, -1),
            do_classifier_free_guidance=guided)
        mask = F.pad(self.text_mask.to(self.device).expand(reps, -1), (self.text_proj.clip_extra_context_tokens, 0),
                     value=True)
        return dict(encoder_hidden_states=states, class_labels=time, attention_mask=mask)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t, z: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        guided = guidance != 1.0
        out = self.unet(torch.cat([x, x]) if guided else x, t, **self.conditioning(z, guided)).sample
        out = out[:, : x.shape[1]]  # epsilon; the learned variance range is dropped
        if not guided:
            return out
        uncond, cond = out.chunk(2)
        return classifier_free_guidance(uncond, cond, guidance)

    def check_clip(self, clip) -> None:
        check_pairing(DecoderMismatchError, self.what, self.embed_dim, self.clip_name, clip)


class KarloPrior(PipelinePrior):
    """Karlo's prior (`UnCLIPPipeline`'s first stage: prior, text encoder, tokenizer, prior_scheduler)."""

    what = "Karlo prior"
    scheduler_part = "prior_scheduler"

    @classmethod
    def make_pipe(cls, prior, text_encoder, tokenizer, scheduler):
        return UnCLIPPipeline(prior=prior, decoder=None, text_encoder=text_encoder, tokenizer=tokenizer,
                              text_proj=None, super_res_first=None, super_res_last=None, prior_scheduler=scheduler,
                              decoder_scheduler=None, super_res_scheduler=None)

    @classmethod
    def hub_models(cls) -> dict:
        return PRIOR_HUB_MODELS

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "kakaobrain/karlo-v1-alpha",
                        clip_name: str | None = None, device=None, dtype=None, local_files_only: bool = False,
                        **kwargs) -> "KarloPrior":
        return super().from_pretrained(name_or_dir, clip_name, device, dtype, local_files_only, **kwargs)


# ---------------------------------------------------------------------------------------------
# Tiny components, for tests: Karlo's code path without its weights (diffusers' removed fast-test configs)
# ---------------------------------------------------------------------------------------------
def tiny_components(embed_dim: int = 128, image_size: int = 16, max_length: int = 16, seed: int = 0) -> dict:
    """The decoder stage of the UnCLIP pipelines at toy size: `KarloDecoder(**tiny_components(), clip_name=...)`.
    The text encoder's width is `embed_dim` (the text projection takes token states and pooled text
    of the image embedding's size, as ViT-L/14's are)."""
    from diffusers import UnCLIPScheduler, UNet2DConditionModel

    tok = tiny_tokenizer(max_length)
    text_encoder = tiny_text_encoder(embed_dim, len(tok), max_length, seed)
    torch.manual_seed(seed + 2)
    text_proj = UnCLIPTextProjModel(clip_embeddings_dim=embed_dim, time_embed_dim=128, cross_attention_dim=100)
    with torch.no_grad():  # diffusers initialises the learned null to zeros; a trained one is not
        text_proj.learned_classifier_free_guidance_embeddings.normal_()
    decoder = UNet2DConditionModel(
        sample_size=image_size, in_channels=3, out_channels=6, down_block_types=(
            "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"), up_block_types=(
            "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"), mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=100, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type="identity")
    return dict(decoder=decoder.eval(), text_proj=text_proj.eval(), text_encoder=text_encoder, tokenizer=tok,
                decoder_scheduler=UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon",
                                                  num_train_timesteps=1000))


def tiny_prior_components(embed_dim: int = 128, max_length: int = 16, seed: int = 0) -> dict:
    """Karlo's prior stage at toy size: prior, text encoder, tokenizer and its UnCLIPScheduler (x0
    prediction, fixed_small_log variance, x0 clipped to +-5, as karlo-v1-alpha's prior_scheduler)."""
    from diffusers import UnCLIPScheduler

    tok = tiny_tokenizer(max_length)
    return dict(prior=tiny_prior(embed_dim, max_length, seed),
                text_encoder=tiny_text_encoder(embed_dim, len(tok), max_length, seed), tokenizer=tok,
                prior_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                                num_train_timesteps=1000, clip_sample_range=5.0))
