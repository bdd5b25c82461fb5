"""The bipartite latent (z_i, x_T) of unCLIP, over any decoder (`clipspace.decoder.Decoder`).

An image x is encoded as z_i, its CLIP image embedding, and x_T, the noise that the decoder's
deterministic DDIM sampler (eta = 0) maps back to x given z_i: found by DDIM inversion, running
the same update backwards from the clean image to noise. From there (Ramesh et al. 2022, sec. 3):

- `decode(decoder, z, x_T)`: the reconstruction at eta = 0; `variations(...)`: eta > 0, seeded.
  What survives across variations is what z_i encodes.
- `interpolate(...)`: slerp between two images' z_i, with x_T slerped too or held fixed.
- `text_diff(...)`: rotate z_i toward z_d = normalise(z_t - z_t0) (`text_direction`), decoding
  every step from the same x_T.
- `pca_decode(...)`: z_i rebuilt from its first k principal components, decoded with a fixed x_T.

Both loops are ten lines on diffusers' `DDIMScheduler` / `DDIMInverseScheduler`, built fresh from
`decoder.scheduler.config` (the two mirror each other step for step), with the decoder's model
output in its own prediction type. Embeddings z are unit-norm float tensors (N, D); z = 0 is the
unconditional model. Decoding a z of your own: normalise it first (`pca_reconstruct` does).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from PIL import Image

from .decoder import Decoder
from .slerp import slerp

# The source caption for text diffs when none is given: the paper's neutral "a photo". The tiny CLIP
# saw it only as the opening of "a photo of a red circle"; when the current image's caption is
# known (always, in the shapes world), pass it as `source`: "a red circle" -> "a blue circle".
NEUTRAL_CAPTION = "a photo"


@dataclass
class Latents:
    """The bipartite latent of N images, and the schedule x_T was inverted with."""

    z: torch.Tensor  # (N, D) unit-norm CLIP image embeddings
    x_T: torch.Tensor  # (N, C, h, w) DDIM-inverted noise, in the decoder's diffusion space
    steps: int
    guidance: float

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, i) -> "Latents":
        i = slice(i, i + 1) if isinstance(i, int) else i
        return Latents(self.z[i], self.x_T[i], self.steps, self.guidance)


# ---------------------------------------------------------------------------------------------
# Images in and out
# ---------------------------------------------------------------------------------------------
def _as_pil(image, size: int | None = None) -> Image.Image:
    """A PIL RGB image from a PIL image, a path, an (H, W, 3) uint8 array or a world Scene
    (rendered at `size`, the size it is wanted at)."""
    if hasattr(image, "render") and hasattr(image, "objects"):
        return image.render(size) if size else image.render()
    if isinstance(image, (str, os.PathLike)):
        if not Path(image).is_file():
            raise FileNotFoundError(f"image {str(image)!r} does not exist")
        return Image.open(image).convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"numpy images must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        return Image.fromarray(image).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise TypeError(f"cannot read an image from {type(image).__name__}; pass PIL images, paths, "
                    f"(H, W, 3) uint8 arrays or world Scenes")


def _as_list(images) -> list:
    if isinstance(images, (Image.Image, str, os.PathLike)) or hasattr(images, "objects") or \
            (isinstance(images, np.ndarray) and images.ndim == 3):
        return [images]
    return list(images)


def images_to_pixels(images, size: int) -> torch.Tensor:
    """(N, 3, size, size) float tensor in [-1, 1]; images are resized (Lanczos) to `size` square."""
    out = []
    for im in _as_list(images):
        pil = _as_pil(im, size)
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.LANCZOS)
        out.append(np.asarray(pil, dtype=np.float32) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def pixels_to_images(pixels: torch.Tensor) -> list[Image.Image]:
    arr = ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).cpu().numpy()]


def _output(pixels: torch.Tensor, output: str):
    if output == "pil":
        return pixels_to_images(pixels)
    if output == "pt":
        return pixels.float()  # [-1, 1]
    if output == "np":
        return ((pixels.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()  # [0, 1]
    raise ValueError(f"output={output!r}: use 'pil', 'pt' ([-1, 1] tensor) or 'np' ([0, 1] array)")


# ---------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def embed_images(clip, images) -> torch.Tensor:
    """Unit-norm CLIP image embeddings (N, D), float32, through the CLIP's own preprocess."""
    pixels = torch.stack([clip.preprocess(_as_pil(im, clip.image_size)) for im in _as_list(images)])
    z = clip.model.encode_image(pixels.to(clip.device), normalize=True)
    return z.float().cpu().clone()


@torch.inference_mode()
def embed_texts(clip, texts: Sequence[str]) -> torch.Tensor:
    texts = [texts] if isinstance(texts, str) else list(texts)
    z = clip.model.encode_text(clip.tokenizer(texts).to(clip.device), normalize=True)
    return z.float().cpu().clone()


def text_direction(clip, target: str, source: str = NEUTRAL_CAPTION) -> torch.Tensor:
    """z_d = normalise(z_t - z_t0): the direction from the `source` caption to the `target` one (D,)."""
    z_t, z_t0 = embed_texts(clip, [target, source])
    d = z_t - z_t0
    if float(d.norm()) < 1e-6:
        raise ValueError(f"target {target!r} and source {source!r} embed identically: no direction")
    return d / d.norm()


def _as_z(z, n: int | None = None) -> torch.Tensor:
    z = torch.as_tensor(np.asarray(z) if not isinstance(z, torch.Tensor) else z).float()
    z = z[None] if z.ndim == 1 else z
    return z.expand(n, -1) if n is not None and len(z) == 1 else z


def _as_x(x_T, n: int | None = None) -> torch.Tensor:
    x = torch.as_tensor(x_T)
    x = x[None] if x.ndim == 3 else x
    return x.expand(n, *x.shape[1:]) if n is not None and len(x) == 1 else x


# ---------------------------------------------------------------------------------------------
# The two loops
# ---------------------------------------------------------------------------------------------
def random_noise(decoder: Decoder, n: int, seed: int = 0) -> torch.Tensor:
    """n seeded Gaussian x_T of the decoder's latent shape (float32, CPU: same on every device)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *decoder.latent_shape), generator=g)


@torch.no_grad()
def ddim_sample(decoder: Decoder, z: torch.Tensor, x_T: torch.Tensor, eta: float = 0.0, steps: int = 50,
                guidance: float = 1.0, seed: int = 0) -> torch.Tensor:
    """DDIM from x_T to a clean x (diffusion space). eta = 0 is deterministic; eta > 0 draws fresh
    noise each step from a generator seeded with `seed`."""
    sched = DDIMScheduler.from_config(decoder.scheduler.config)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = x_T.to(decoder.device, decoder.dtype) * sched.init_noise_sigma
    z = z.to(decoder.device, decoder.dtype)
    for t in sched.timesteps:
        out = decoder.predict(x, t, z, guidance)
        x = sched.step(out, t, x, eta=eta, generator=g).prev_sample
    return x


@torch.no_grad()
def ddim_invert(decoder: Decoder, x0: torch.Tensor, z: torch.Tensor, steps: int = 50,
                guidance: float = 1.0) -> torch.Tensor:
    """DDIM inversion: the same update run backwards, clean x (diffusion space) to x_T. Each step
    uses the model's output at the current x in place of the (unknown) one at the next x, so the
    round trip is exact only in the limit of many steps (or a model that varies slowly)."""
    if decoder.scheduler.config.get("timestep_spacing", "leading") not in ("leading", "trailing"):
        raise ValueError("DDIM inversion needs timestep_spacing 'leading' or 'trailing' in the decoder's "
                         f"scheduler, not {decoder.scheduler.config.timestep_spacing!r}")
    sched = DDIMInverseScheduler.from_config(decoder.scheduler.config)
    sched.set_timesteps(steps)
    x = x0.to(decoder.device, decoder.dtype)
    z = z.to(decoder.device, decoder.dtype)
    for t in sched.timesteps:
        x = sched.step(decoder.predict(x, t, z, guidance), t, x).prev_sample
    return x


# ---------------------------------------------------------------------------------------------
# The bipartite latent
# ---------------------------------------------------------------------------------------------
def invert(decoder: Decoder, clip, images, steps: int = 50, guidance: float = 1.0) -> Latents:
    """Encode images as (z_i, x_T). Decode with the same `steps` and `guidance` at eta = 0 to
    reconstruct; guidance 1 (the conditional model alone) inverts most faithfully."""
    decoder.check_clip(clip)
    images = _as_list(images)
    z = embed_images(clip, images)
    x0 = decoder.encode_pixels(images_to_pixels(images, decoder.image_size).to(decoder.device, decoder.dtype))
    x_T = ddim_invert(decoder, x0, z, steps, guidance)
    return Latents(z, x_T.float().cpu(), steps, guidance)


def decode(decoder: Decoder, z, x_T, eta: float = 0.0, steps: int = 50, guidance: float = 1.0,
           seed: int = 0, output: str = "pil"):
    """Images from embeddings z (N, D) and noise x_T (N, C, h, w); either may have N = 1 and is
    then shared. output: 'pil' (list), 'pt' ([-1, 1] tensor) or 'np' ([0, 1] array)."""
    z, x_T = _as_z(z), _as_x(x_T)
    n = max(len(z), len(x_T))
    z, x_T = _as_z(z, n), _as_x(x_T, n)
    if z.shape[-1] != decoder.embed_dim:
        raise ValueError(f"z has {z.shape[-1]} dims, the decoder takes {decoder.embed_dim}-d CLIP embeddings")
    x0 = ddim_sample(decoder, z, x_T, eta, steps, guidance, seed)
    return _output(decoder.decode_pixels(x0), output)


def variations(decoder: Decoder, z, x_T, n: int = 4, eta: float = 1.0, steps: int = 50,
               guidance: float = 1.0, seed: int = 0, output: str = "pil"):
    """n decodes of one image's (z_i, x_T) with DDIM eta > 0: what stays the same is what z_i encodes."""
    return decode(decoder, _as_z(z)[:1], _as_x(x_T)[:1].expand(n, *decoder.latent_shape), eta, steps,
                  guidance, seed, output)


def interpolate(decoder: Decoder, z1, z2, x_T1, x_T2=None, n: int = 5, steps: int = 50,
                guidance: float = 1.0, output: str = "pil", ts=None):
    """n decodes along slerp(z1, z2, t), t from 0 to 1 (or at the given `ts`). x_T: slerped from
    x_T1 to x_T2 when x_T2 is given (the ends reconstruct both images), else x_T1 held fixed for
    the whole trajectory."""
    ts = np.linspace(0.0, 1.0, n) if ts is None else np.asarray(ts, dtype=np.float64)
    n = len(ts)
    z = slerp(_as_z(z1)[0], _as_z(z2)[0], ts)
    a = _as_x(x_T1)[0]
    x = a.expand(n, *a.shape) if x_T2 is None else \
        slerp(a.flatten().double(), _as_x(x_T2)[0].flatten().double(), ts).float().reshape(n, *a.shape)
    return decode(decoder, z, x, 0.0, steps, guidance, output=output)


def text_diff(decoder: Decoder, z, x_T, z_d, thetas=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5), steps: int = 50,
              guidance: float = 1.0, output: str = "pil"):
    """Decode slerp(z_i, z_d, theta) for each theta from the same x_T (the paper takes theta up to
    0.25-0.5). z_d: `text_direction(clip, target, source)`."""
    zs = slerp(_as_z(z)[0], _as_z(z_d)[0], np.asarray(thetas, dtype=np.float64))
    return decode(decoder, zs, _as_x(x_T)[:1], 0.0, steps, guidance, output=output)


def pca_reconstruct(z, pca, k: int) -> torch.Tensor:
    """z rebuilt from its first k principal components, re-normalised to unit length. `pca`: a
    fitted sklearn-style PCA (transform/inverse_transform) or anything with components_ and mean_."""
    z = _as_z(z).double().numpy()
    if hasattr(pca, "transform") and hasattr(pca, "inverse_transform"):
        coeffs = np.asarray(pca.transform(z), dtype=np.float64)
        coeffs[:, k:] = 0.0
        rec = np.asarray(pca.inverse_transform(coeffs), dtype=np.float64)
    elif hasattr(pca, "components_") and hasattr(pca, "mean_"):
        comps, mean = np.asarray(pca.components_, dtype=np.float64)[:k], np.asarray(pca.mean_, dtype=np.float64)
        rec = mean + (z - mean) @ comps.T @ comps
    else:
        raise TypeError(f"pca must be a fitted PCA (transform/inverse_transform, or components_ and mean_), "
                        f"got {type(pca).__name__}")
    rec = rec / np.maximum(np.linalg.norm(rec, axis=-1, keepdims=True), 1e-12)
    return torch.from_numpy(rec).float()


def pca_decode(decoder: Decoder, z, x_T, pca, ks=(1, 2, 4, 8, 16, 32), steps: int = 50,
               guidance: float = 1.0, output: str = "pil"):
    """Decode one image's z rebuilt from its first k principal components, for each k, all from
    the same x_T: coarse semantics come first, detail with more components."""
    zs = torch.cat([pca_reconstruct(_as_z(z)[:1], pca, k) for k in ks])
    return decode(decoder, zs, _as_x(x_T)[:1], 0.0, steps, guidance, output=output)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def _as_array(x, data_range):
    """(N, H, W, C) float64 scaled to [0, 1] from PIL (lists), uint8 arrays, or float arrays/tensors
    whose range is `data_range` (default 2: [-1, 1] pixels as the decoders use)."""
    if isinstance(x, Image.Image) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], Image.Image)):
        arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float64) for im in _as_list(x)]) / 255.0
        return arr
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().double()
        t = t[None] if t.ndim == 3 else t
        return ((t - (-1.0 if data_range is None else 0.0)) / (data_range or 2.0)).permute(0, 2, 3, 1).numpy()
    arr = np.asarray(x)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float64) / 255.0
    else:
        arr = (arr.astype(np.float64) - (-1.0 if data_range is None else 0.0)) / (data_range or 2.0)
    return arr[None] if arr.ndim == 3 else arr


def psnr(a, b, data_range: float | None = None):
    """Peak signal-to-noise ratio in dB, per image: a float for one image, an array for a batch.
    Accepts PIL images (or lists), uint8 arrays (H, W, C), or float tensors (N, C, H, W) / arrays in
    [-1, 1] (or in [0, data_range] when data_range is given)."""
    x, y = _as_array(a, data_range), _as_array(b, data_range)
    if x.shape != y.shape:
        raise ValueError(f"psnr of differently shaped images: {x.shape} vs {y.shape}")
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(1)
    with np.errstate(divide="ignore"):
        out = 10 * np.log10(1.0 / mse)
    single = isinstance(a, Image.Image) or getattr(a, "ndim", None) == 3
    return float(out[0]) if single else out
