"""Caption to images through both unCLIP stages, with the three seed systems' sampling tricks.

    images = generate(prior, decoder, clip, "a red square", n=4, seed=0)

- The prior samples z_i from the caption's z_t (`DiffusionPrior.sample`), the decoder draws each
  z_i from seeded noise (`latents.decode`, DDIM at eta 0). Both take classifier-free guidance
  (GLIDE): `prior_guidance`, `decoder_guidance`.
- `thresholding=True`: Imagen's dynamic thresholding in the decoder's sampler, through diffusers'
  own `DDIMScheduler(thresholding=True)`: at each step x0's `THRESHOLD_RATIO` percentile of |x0|,
  s (kept in [1, `THRESHOLD_MAX`]), clips x0 to [-s, s] and divides by s, so high guidance does not
  push pixels past the ends; the step's noise estimate is re-derived from that x0. Pixel space only
  (it means nothing for VAE latents). Off by default: plain sampling (`latents.decode`), and the
  inversion, are unchanged.
- `rerank(clip, images, caption)`: DALL-E 1's reranking, the images ordered by CLIP score with the
  caption (best first).
- `decode_embeddings(...)`: the decoder stage alone, for z from any route (zero, z_t, ridge, prior, true z_i).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler

from clipspace.errors import InvalidArgumentError
from clipspace.unclip.latents import check_args, decode, embed_images, embed_texts, pixels_to_images, random_noise
from clipspace.unclip.prior import check_guidance, check_texts

THRESHOLD_RATIO = 0.995  # Imagen's p = 99.5
THRESHOLD_MAX = 1.5  # the largest s: past it, x0 is clipped to [-1.5, 1.5] before rescaling (as DeepFloyd IF)
SATURATED = 0.995  # |pixel| at or above this (in [-1, 1]) rounds to 0 or 255: the world never paints those


def thresholding_scheduler(decoder, steps: int, ratio: float = THRESHOLD_RATIO,
                           max_value: float = THRESHOLD_MAX) -> DDIMScheduler:
    """The decoder's DDIM scheduler with diffusers' dynamic thresholding on, set to `steps`."""
    c, h, w = decoder.latent_shape
    if (c, h, w) != (3, decoder.image_size, decoder.image_size):  # a VAE's latents: 4 channels, 1/8 the size
        raise InvalidArgumentError("thresholding is for pixel-space decoders: this decoder diffuses in a latent space")
    sched = DDIMScheduler.from_config(decoder.scheduler.config, thresholding=True,
                                      dynamic_thresholding_ratio=float(ratio), sample_max_value=float(max_value))
    sched.set_timesteps(steps)
    return sched


@torch.no_grad()
def ddim_sample_thresholded(decoder, z: torch.Tensor, x_T: torch.Tensor, steps: int = 25,
                            guidance: float = 1.0) -> torch.Tensor:
    """`latents.ddim_sample` at eta 0 with dynamic thresholding of each step's x0. The noise estimate is
    re-derived from the thresholded x0 (`use_clipped_model_output`, as GLIDE and Imagen do): without
    it, DDIM mixes a rescaled x0 with the unscaled model noise and, at guidance 8, drew wrong colours
    and shapes for 4 of 4 captions here."""
    sched = thresholding_scheduler(decoder, steps)
    x = x_T.to(decoder.device, decoder.dtype) * sched.init_noise_sigma
    z = z.to(decoder.device, decoder.dtype)
    for t in sched.timesteps:
        x = sched.step(decoder.predict(x, t, z, guidance), t, x, use_clipped_model_output=True).prev_sample
    return x


def decode_embeddings(decoder, z, seed: int = 0, steps: int = 25, guidance: float | None = None,
                      thresholding: bool = False, output: str = "pil"):
    """Draw embeddings z (N, D) with the decoder, each from its own x_T (`random_noise(decoder, N, seed)`).
    guidance None: the decoder config's. output as `latents.decode`."""
    z, steps, output = check_args(decoder, z=z, steps=steps, output=output)
    if guidance is None:
        guidance = float(getattr(decoder, "config", {}).get("guidance", 1.0))
    guidance = check_guidance(guidance, "decoder_guidance")
    x_T = random_noise(decoder, len(z), seed=seed)
    if not thresholding:
        return decode(decoder, z, x_T, steps=steps, guidance=guidance, output=output)
    pixels = decoder.decode_pixels(ddim_sample_thresholded(decoder, z, x_T, steps, guidance)).float()
    if output == "pil":
        return pixels_to_images(pixels)
    return pixels if output == "pt" else ((pixels.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()


def generate(prior, decoder, clip, prompt: str, n: int = 4, prior_guidance: float | None = None,
             decoder_guidance: float | None = None, steps: int = 25, prior_steps: int = 25, seed: int = 0,
             thresholding: bool = False, best_of: int = 1, output: str = "pil"):
    """n images for one caption: the prior's n z_i (seeded), each decoded from seeded noise."""
    text = check_texts(prompt)
    if isinstance(text, torch.Tensor) or len(text) != 1:
        raise InvalidArgumentError(f"prompt must be one caption (a string), got {prompt!r}")
    decoder.check_clip(clip)
    z = prior.sample(text, n=n, guidance=prior_guidance, steps=prior_steps, seed=seed, clip=clip, best_of=best_of)
    return decode_embeddings(decoder, z, seed=seed, steps=steps, guidance=decoder_guidance,
                             thresholding=thresholding, output=output)


@dataclass
class Ranking:
    order: np.ndarray  # indices of the images, highest CLIP score first
    scores: np.ndarray  # (N,) cosine of each image (in the order given) with the caption


def rerank(clip, images, caption: str) -> Ranking:
    """DALL-E 1's reranker: the images ordered by the cosine of their CLIP embedding with the caption's.
    Ties keep the given order (a stable sort)."""
    if not isinstance(caption, str) or not caption.strip():
        raise InvalidArgumentError(f"caption is empty or not a string ({caption!r}): pass the caption to rank by")
    z = embed_images(clip, images).numpy()
    scores = z @ embed_texts(clip, [caption]).numpy()[0]
    return Ranking(np.argsort(-scores, kind="stable"), scores)


def saturation(pixels: torch.Tensor) -> float:
    """Share of channel values of decoded [-1, 1] pixels (before clamping) at or past the ends."""
    return float((pixels.detach().abs() >= SATURATED).float().mean())
