"""The bipartite latent (z_i, x_T) of unCLIP, over any decoder (`clipspace.unclip.decoder.Decoder`).

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

Images are read as `clip.encode_images` reads them, through `clipspace.images.load_image` (EXIF
orientation, transparency onto white unless a `background` is given, a pixel limit), so `invert`'s
z_i is the embedding `encode_images` gives the same file. Arguments are checked in one place,
`check_args`: a bad one (NaN, an empty batch, the wrong shape) is a ValueError naming it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from PIL import Image

from clipspace.unclip.decoder import Decoder
from clipspace.errors import InvalidArgumentError
from clipspace.images import WHITE, load_image
from clipspace.unclip.slerp import slerp

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

    def __post_init__(self):
        self.z, self.x_T, self.steps, self.guidance = check_args(
            z=self.z, x_T=self.x_T, steps=self.steps, guidance=self.guidance, share=False)

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, i) -> "Latents":
        if isinstance(i, (int, np.integer)):
            i = range(len(self))[i]  # from the end when negative; IndexError past it
            i = slice(i, i + 1)
        return Latents(self.z[i], self.x_T[i], self.steps, self.guidance)


# ---------------------------------------------------------------------------------------------
# Checking arguments: every public function here passes its arguments, by name, through this one helper
# ---------------------------------------------------------------------------------------------
_EMBEDDINGS = {"z", "z1", "z2", "z_d"}  # float (N, D), D = decoder.embed_dim
_NOISE = {"x_T", "x_T1", "x_T2"}  # float (N, C, h, w), (C, h, w) = decoder.latent_shape
_COUNTS = {"steps", "n"}  # ints >= 1
_KS = {"k"}  # principal components kept: ints >= 0 (0 is the mean embedding)
_UNIT = {"eta", "t"}  # floats in [0, 1]
_REALS = {"guidance", "theta"}  # finite floats
_ARRAYS = {"thetas", "ts", "ks"}  # non-empty 1-d, finite (ks: ints >= 0)
_TEXTS = {"target", "source"}  # non-blank strings
_OUTPUTS = ("pil", "pt", "np")


def check_args(decoder: Decoder | None = None, *, share: bool = True, **args) -> tuple:
    """Check and convert arguments, each by its name; return them in the order given. Raises
    ValueError (TypeError for the wrong kind of object) naming the argument and what it must be.

    Embeddings (z, z1, z2, z_d): finite float tensors (N, D), a (D,) one as N = 1. Noise (x_T, ...):
    finite float tensors (N, C, h, w), a (C, h, w) one as N = 1. With a `decoder`, D must be its
    embed_dim and (C, h, w) its latent_shape. An embedding and the noise it goes with (z and x_T,
    z1 and x_T1) must have the same N, or (if `share`) either N = 1, to be shared. images: a
    non-empty list (a single image is a list of one). The rest: see the name sets above.
    """
    out = {}
    for name, v in args.items():
        if name in _EMBEDDINGS or name in _NOISE:
            out[name] = _checked_tensor(decoder, name, v)
        elif name == "images":
            out[name] = _as_list(v)
            if not out[name]:
                raise InvalidArgumentError("images is empty: pass at least one image (a path, PIL image, array or Scene)")
        elif name in _COUNTS or name in _KS:
            least = 0 if name in _KS else 1
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < least:
                raise InvalidArgumentError(f"{name} must be an int >= {least}, got {v!r}")
            out[name] = int(v)
        elif name in _UNIT or name in _REALS:
            try:
                f = float(v)
            except (TypeError, ValueError):
                f = float("nan")
            if not (0.0 <= f <= 1.0 if name in _UNIT else np.isfinite(f)):
                raise InvalidArgumentError(f"{name} must be " + ("in [0, 1]" if name in _UNIT else "a finite number")
                                 + f", got {v!r}")
            out[name] = f
        elif name in _ARRAYS:
            a = np.atleast_1d(np.asarray(v, dtype=np.float64) if name != "ks" else np.asarray(v))
            if a.ndim != 1 or a.size == 0:
                raise InvalidArgumentError(f"{name} must be a non-empty 1-d sequence of numbers, got shape {a.shape}")
            if name == "ks":
                if not np.issubdtype(a.dtype, np.integer) or (a < 0).any():
                    raise InvalidArgumentError(f"ks must be ints >= 0, got {a.tolist()}")
            elif not np.isfinite(a).all():
                raise InvalidArgumentError(f"{name} must be finite numbers, got {a.tolist()}")
            out[name] = a
        elif name in _TEXTS:
            if not isinstance(v, str) or not v.strip():
                raise InvalidArgumentError(f"{name} text is empty or not a string ({v!r}): pass a caption, e.g. 'a blue circle'")
            out[name] = v
        elif name == "output":
            if v not in _OUTPUTS:
                raise InvalidArgumentError(f"output={v!r}: use 'pil', 'pt' ([-1, 1] tensor) or 'np' ([0, 1] array)")
            out[name] = v
        else:
            raise TypeError(f"check_args: no rule for an argument named {name!r}")
    for suffix in ("", "1", "2"):
        z, x = out.get("z" + suffix), out.get("x_T" + suffix)
        if z is not None and x is not None and len(z) != len(x) and not (share and 1 in (len(z), len(x))):
            raise InvalidArgumentError(f"z{suffix} {tuple(z.shape)} and x_T{suffix} {tuple(x.shape)} have different batch "
                             f"sizes ({len(z)} vs {len(x)}): give one x_T per z"
                             + (" (or one of either, to be shared)" if share else ""))
    return tuple(out.values())


def _checked_tensor(decoder, name: str, v) -> torch.Tensor:
    embedding = name in _EMBEDDINGS
    try:
        t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(v).__name__}") from None
    t = t.float() if embedding or not t.is_floating_point() else t
    item_ndim, want = (1, decoder.embed_dim if decoder else None) if embedding else \
        (3, tuple(decoder.latent_shape) if decoder else None)
    t = t[None] if t.ndim == item_ndim else t
    what = "an (N, D) embedding" if embedding else "(N, C, h, w) noise"
    if t.ndim != item_ndim + 1:
        raise InvalidArgumentError(f"{name} must be {what} (or a single one), got shape {tuple(t.shape)}")
    if len(t) == 0:
        raise InvalidArgumentError(f"{name} is empty (shape {tuple(t.shape)}): pass at least one")
    got = t.shape[-1] if embedding else tuple(t.shape[1:])
    if want is not None and got != want:
        takes = f"{want}-d CLIP embeddings (N, {want})" if embedding else \
            f"noise of shape (N, {', '.join(map(str, want))})"
        raise InvalidArgumentError(f"{name} has shape {tuple(t.shape)}, but the decoder takes {takes}")
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten().tolist()
        raise InvalidArgumentError(f"{name} has NaN or inf values (rows {bad[:10]}): it must be finite")
    return t


# ---------------------------------------------------------------------------------------------
# Images in and out
# ---------------------------------------------------------------------------------------------
def _is_scene(image) -> bool:
    return hasattr(image, "render") and hasattr(image, "objects")


def _as_list(images) -> list:
    if isinstance(images, (Image.Image, str, os.PathLike)) or _is_scene(images) or \
            (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        return [images]
    return list(images)


def load_images(images, size: int | None = None, square: bool = False, background=WHITE,
                max_pixels: int | None = None) -> list[Image.Image]:
    """Every image unclip takes, as 8-bit RGB PIL images: paths, PIL images and arrays through
    `clipspace.images.load_image` (EXIF orientation, transparency onto `background`, the pixel
    limit `max_pixels`, BadImageError naming the file), world Scenes rendered at `size` (if given).
    square: also resize each to `size` x `size` (Lanczos), as a decoder of that size sees it."""
    out = []
    for im in check_args(images=images)[0]:
        pil = load_image(im.render(size) if size else im.render(), background) if _is_scene(im) else \
            load_image(im, background, max_pixels=max_pixels)
        out.append(pil.resize((size, size), Image.Resampling.LANCZOS) if square and pil.size != (size, size) else pil)
    return out


def images_to_pixels(images, size: int, background=WHITE, max_pixels: int | None = None) -> torch.Tensor:
    """(N, 3, size, size) float tensor in [-1, 1]; images are resized (Lanczos) to `size` square."""
    arrays = [np.asarray(im, dtype=np.float32) / 127.5 - 1.0 for im in load_images(images, size, True, background,
                                                                                      max_pixels)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def pixels_to_images(pixels: torch.Tensor) -> list[Image.Image]:
    arr = ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).cpu().numpy()]


def _output(pixels: torch.Tensor, output: str):
    if output == "pil":
        return pixels_to_images(pixels)
    if output == "pt":
        return pixels.float()  # [-1, 1]
    return ((pixels.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()  # [0, 1]


# ---------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def embed_images(clip, images, background=WHITE, max_pixels: int | None = None) -> torch.Tensor:
    """Unit-norm CLIP image embeddings (N, D), float32, through the CLIP's own preprocess: the same
    as `clip.encode_images` (same loader, same `background`)."""
    pils = load_images(images, clip.image_size, background=background, max_pixels=max_pixels)
    z = clip.model.encode_image(torch.stack([clip.preprocess(p) for p in pils]).to(clip.device), normalize=True)
    return z.float().cpu().clone()


@torch.inference_mode()
def embed_texts(clip, texts: Sequence[str]) -> torch.Tensor:
    texts = [texts] if isinstance(texts, str) else list(texts)
    z = clip.model.encode_text(clip.tokenizer(texts).to(clip.device), normalize=True)
    return z.float().cpu().clone()


def text_direction(clip, target: str, source: str = NEUTRAL_CAPTION) -> torch.Tensor:
    """z_d = normalise(z_t - z_t0): the direction from the `source` caption to the `target` one (D,)."""
    check_args(target=target, source=source)
    z_t, z_t0 = embed_texts(clip, [target, source])
    d = z_t - z_t0
    if float(d.norm()) < 1e-6:
        raise InvalidArgumentError(f"target {target!r} and source {source!r} embed identically: no direction")
    return d / d.norm()


# ---------------------------------------------------------------------------------------------
# The two loops
# ---------------------------------------------------------------------------------------------
def random_noise(decoder: Decoder, n: int, seed: int = 0) -> torch.Tensor:
    """n seeded Gaussian x_T of the decoder's latent shape (float32, CPU: same on every device)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((check_args(n=n)[0], *decoder.latent_shape), generator=g)


@torch.no_grad()
def ddim_sample(decoder: Decoder, z: torch.Tensor, x_T: torch.Tensor, eta: float = 0.0, steps: int = 50,
                guidance: float = 1.0, seed: int = 0) -> torch.Tensor:
    """DDIM from x_T to a clean x (diffusion space). eta = 0 is deterministic; eta > 0 draws fresh
    noise each step from a generator seeded with `seed`."""
    z, x_T, eta, steps, guidance = check_args(decoder, z=z, x_T=x_T, eta=eta, steps=steps, guidance=guidance)
    sched = DDIMScheduler.from_config(decoder.scheduler.config)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = x_T.to(decoder.device, decoder.dtype) * sched.init_noise_sigma
    z = z.to(decoder.device, decoder.dtype)
    for t in sched.timesteps:
        out = decoder.predict(x, t, z, guidance)
        x = sched.step(out, t, x, eta=eta, generator=g).prev_sample
    return x


INVERSION_METHODS = ("ddim", "fixed_point")


@torch.no_grad()
def ddim_invert(decoder: Decoder, x0: torch.Tensor, z: torch.Tensor, steps: int = 50,
                guidance: float = 1.0, method: str = "ddim", iterations: int = 3, anderson: int = 2) -> torch.Tensor:
    """DDIM inversion, clean x (diffusion space) to x_T.

    method="ddim": the sampler's update run backwards (diffusers' DDIMInverseScheduler). Each step
    uses the model's output at the current x in place of the (unknown) one at the next x, so the
    round trip is exact only in the limit of many steps, or for images the model knows well.
    method="fixed_point" (AIDI, Pan et al. 2023; ReNoise, Garibi et al. 2024): each step solves for
    the x_t that the sampler's own step maps exactly to the x it came from, by `iterations` rounds
    of x_t += (x_prev - step(x_t)) / A, A the step's coefficient on x_t (the model output held
    fixed), accelerated by Anderson mixing over the last `anderson` rounds (0: plain iteration).
    It costs 1 + iterations model calls per step. The iteration converges where the step is a
    contraction in x_t (a trained model varies slowly enough; a random-weight epsilon model need not):
    each image keeps its best iterate, so it is never worse than plain DDIM's first guess by much.
    The solve uses the guided prediction,
    so decoding at the same `guidance` reproduces the image for any guidance, not only 1.
    """
    z, steps, guidance = check_args(decoder, z=z, steps=steps, guidance=guidance)
    if method not in INVERSION_METHODS:
        raise InvalidArgumentError(f"method={method!r}; use one of {INVERSION_METHODS}")
    if decoder.scheduler.config.get("timestep_spacing", "leading") not in ("leading", "trailing"):
        raise InvalidArgumentError("DDIM inversion needs timestep_spacing 'leading' or 'trailing' in the decoder's "
                         f"scheduler, not {decoder.scheduler.config.timestep_spacing!r}")
    x = x0.to(decoder.device, decoder.dtype)
    z = z.to(decoder.device, decoder.dtype)
    if method == "ddim":
        sched = DDIMInverseScheduler.from_config(decoder.scheduler.config)
        sched.set_timesteps(steps)
        for t in sched.timesteps:
            x = sched.step(decoder.predict(x, t, z, guidance), t, x).prev_sample
        return x
    (iterations,) = check_args(n=iterations)
    sched = DDIMScheduler.from_config(decoder.scheduler.config)  # the sampler itself, walked backwards
    sched.set_timesteps(steps)
    for t in reversed(sched.timesteps):
        step = lambda out, xt: sched.step(out, t, xt).prev_sample  # noqa: E731 (x_t -> x_prev at eta 0)
        out = decoder.predict(x, t, z, guidance)  # the plain guess: the output at the less noisy x
        ones, zeros = torch.ones_like(x), torch.zeros_like(x)
        A = step(out, ones) - step(out, zeros)  # d step / d x_t with the output fixed (the step is affine in x_t)
        x_t = x + (x - step(out, x)) / A
        gs, fs = [], []  # the last few g(x_t) and residuals, for Anderson's extrapolation
        best, best_r = x_t, torch.full((len(x),), float("inf"), dtype=x.dtype, device=x.device)
        for _ in range(iterations):
            g = x_t + (x - step(decoder.predict(x_t, t, z, guidance), x_t)) / A
            r = (g - x_t).flatten(1).norm(dim=1)  # how far x_t is from solving this step
            # keep each image's best iterate: where the step is no contraction, iterating does not converge
            better = r < best_r
            best, best_r = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_t, best), torch.minimum(r, best_r)
            gs, fs = (gs + [g.flatten(1)])[-(anderson + 1):], (fs + [(g - x_t).flatten(1)])[-(anderson + 1):]
            x_t = g if len(fs) < 2 else _anderson(gs, fs).view_as(x)
        x = best
    return x


def _anderson(gs: list[torch.Tensor], fs: list[torch.Tensor]) -> torch.Tensor:
    """Anderson's (type II) next iterate from the last g(x) and residuals f = g(x) - x, per image:
    g_k - dG gamma, gamma the least-squares weights that make f_k - dF gamma smallest. Where a step
    converges slowly (a contraction close to 1: textures, mostly) plain iteration crawls; this does not."""
    dF = torch.stack([b - a for a, b in zip(fs, fs[1:])], -1)  # (N, D, j)
    dG = torch.stack([b - a for a, b in zip(gs, gs[1:])], -1)
    # the pseudo-inverse of the small Gram matrix: once an image has converged its residuals are equal, and singular
    gamma = torch.linalg.pinv(dF.transpose(1, 2) @ dF) @ (dF.transpose(1, 2) @ fs[-1].unsqueeze(-1))
    return gs[-1] - (dG @ gamma).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# The bipartite latent
# ---------------------------------------------------------------------------------------------
def invert(decoder: Decoder, clip, images, steps: int = 50, guidance: float = 1.0, background=WHITE,
           max_pixels: int | None = None, method: str = "ddim", iterations: int = 3, anderson: int = 2) -> Latents:
    """Encode images as (z_i, x_T). Decode with the same `steps` and `guidance` at eta = 0 to
    reconstruct; with method="ddim", guidance 1 (the conditional model alone) inverts most faithfully;
    method="fixed_point" solves each step exactly (see `ddim_invert`), for images the decoder never saw. Images are read
    as `clip.encode_images` reads them (`clipspace.images.load_image`, transparency onto
    `background`), so z_i is the embedding `clip.encode_images` gives the same file."""
    images, steps, guidance = check_args(images=images, steps=steps, guidance=guidance)
    decoder.check_clip(clip)
    # Read each file once; Scenes stay Scenes, rendered at the size each model wants.
    images = [im if _is_scene(im) else load_image(im, background, max_pixels=max_pixels) for im in images]
    z = embed_images(clip, images)
    x0 = decoder.encode_pixels(images_to_pixels(images, decoder.image_size).to(decoder.device, decoder.dtype))
    x_T = ddim_invert(decoder, x0, z, steps, guidance, method, iterations, anderson)
    return Latents(z, x_T.float().cpu(), steps, guidance)


def decode(decoder: Decoder, z, x_T, eta: float = 0.0, steps: int = 50, guidance: float = 1.0,
           seed: int = 0, output: str = "pil"):
    """Images from embeddings z (N, D) and noise x_T (N, C, h, w); either may have N = 1 and is
    then shared. output: 'pil' (list), 'pt' ([-1, 1] tensor) or 'np' ([0, 1] array)."""
    z, x_T, output = check_args(decoder, z=z, x_T=x_T, output=output)
    n = max(len(z), len(x_T))
    x0 = ddim_sample(decoder, z.expand(n, -1), x_T.expand(n, *x_T.shape[1:]), eta, steps, guidance, seed)
    return _output(decoder.decode_pixels(x0), output)


def variations(decoder: Decoder, z, x_T, n: int = 4, eta: float = 1.0, steps: int = 50,
               guidance: float = 1.0, seed: int = 0, output: str = "pil"):
    """n decodes of one image's (z_i, x_T) with DDIM eta > 0: what stays the same is what z_i encodes."""
    z, x_T, n = check_args(decoder, z=z, x_T=x_T, n=n)
    return decode(decoder, z[:1], x_T[:1].expand(n, *x_T.shape[1:]), eta, steps, guidance, seed, output)


def interpolate(decoder: Decoder, z1, z2, x_T1, x_T2=None, n: int = 5, steps: int = 50,
                guidance: float = 1.0, output: str = "pil", ts=None):
    """n decodes along slerp(z1, z2, t), t from 0 to 1 (or at the given `ts`). x_T: slerped from
    x_T1 to x_T2 when x_T2 is given (the ends reconstruct both images), else x_T1 held fixed for
    the whole trajectory."""
    z1, z2, x_T1 = check_args(decoder, z1=z1, z2=z2, x_T1=x_T1)
    ts = np.linspace(0.0, 1.0, check_args(n=n)[0]) if ts is None else check_args(ts=ts)[0]
    z = slerp(z1[0], z2[0], ts)
    a = x_T1[0]
    x = a.expand(len(ts), *a.shape) if x_T2 is None else slerp(
        a.flatten().double(), check_args(decoder, x_T2=x_T2)[0][0].flatten().double(), ts).float().reshape(-1, *a.shape)
    return decode(decoder, z, x, 0.0, steps, guidance, output=output)


def text_diff(decoder: Decoder, z, x_T, z_d, thetas=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5), steps: int = 50,
              guidance: float = 1.0, output: str = "pil"):
    """Decode slerp(z_i, z_d, theta) for each theta from the same x_T (the paper takes theta up to
    0.25-0.5). z_d: `text_direction(clip, target, source)`."""
    z, x_T, z_d, thetas = check_args(decoder, z=z, x_T=x_T, z_d=z_d, thetas=thetas)
    return decode(decoder, slerp(z[0], z_d[0], thetas), x_T[:1], 0.0, steps, guidance, output=output)


def pca_reconstruct(z, pca, k: int) -> torch.Tensor:
    """z rebuilt from its first k principal components, re-normalised to unit length. `pca`: a
    fitted sklearn-style PCA (transform/inverse_transform) or anything with components_ and mean_."""
    z, k = check_args(z=z, k=k)
    z = z.double().numpy()
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
    z, x_T, ks = check_args(decoder, z=z, x_T=x_T, ks=ks)
    zs = torch.cat([pca_reconstruct(z[:1], pca, int(k)) for k in ks])
    return decode(decoder, zs, x_T[:1], 0.0, steps, guidance, output=output)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def _as_array(x, data_range):
    """(N, H, W, C) float64 scaled to [0, 1] from PIL (lists), uint8 arrays, or float arrays/tensors
    whose range is `data_range` (default 2: [-1, 1] pixels as the decoders use)."""
    if isinstance(x, Image.Image) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], Image.Image)):
        return np.stack([np.asarray(im, dtype=np.float64) for im in load_images(x)]) / 255.0
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
    [-1, 1] (or in [0, data_range] when data_range is given). Each image is scored by scikit-image's
    `peak_signal_noise_ratio` once scaled to [0, 1]."""
    from skimage.metrics import peak_signal_noise_ratio

    x, y = _as_array(a, data_range), _as_array(b, data_range)
    if x.shape != y.shape:
        raise InvalidArgumentError(f"psnr of differently shaped images: {x.shape} vs {y.shape}")
    with np.errstate(divide="ignore"):  # equal images: inf dB
        out = np.array([peak_signal_noise_ratio(xi, yi, data_range=1.0) for xi, yi in zip(x, y)])
    single = isinstance(a, Image.Image) or getattr(a, "ndim", None) == 3
    return float(out[0]) if single else out
