"""What notebook 06 shows, as plain functions: each returns the numbers and one captioned image grid.

The widgets only pick arguments and put `view.grid` on screen; pytest calls these directly. Every
view decodes from latents the caller already inverted, so moving a slider never re-inverts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from clipspace.figures import image_grid
from clipspace.unclip.latents import (Latents, check_args, decode, embed_images, interpolate, invert, load_images, psnr, text_diff,
                     text_direction, variations)

SCALE = 4  # the offline decoder works at 32 px: enlarge (nearest) so a pixel is visible on screen


@dataclass
class View:
    grid: Image.Image  # the captioned grid to show or save
    images: list[Image.Image]  # the decoded images at the decoder's size, left to right
    numbers: dict = field(default_factory=dict)  # what the titles say, for printing and tests


def reconstruction(decoder, clip, image, wrong_image=None, steps: int = 25) -> tuple[Latents, View]:
    """Invert `image` (as the decoder sees it: read by `unclip.load_images`, resized to its size) to
    (z_i, x_T) and decode it back at eta 0. With `wrong_image`, also decode the same x_T with that
    image's z_i: how much of the picture z_i, and not x_T, carries."""
    source = load_images([image], decoder.image_size, square=True)[0]
    lat = invert(decoder, clip, [source], steps=steps)
    rec = decode(decoder, lat.z, lat.x_T, steps=steps)[0]
    images, titles = [source, rec], ["source", f"(z_i, x_T): {psnr(rec, source):.1f} dB"]
    numbers = {"psnr": psnr(rec, source)}
    if wrong_image is not None:
        z_wrong = embed_images(clip, [wrong_image])
        wrong = decode(decoder, z_wrong, lat.x_T, steps=steps)[0]
        numbers["psnr_wrong_z"] = psnr(wrong, source)
        images.append(wrong)
        titles.append(f"other z_i, same x_T: {numbers['psnr_wrong_z']:.1f} dB")
    return lat, View(image_grid(images, titles=titles, scale=SCALE), images[1:], numbers)


def variation_view(decoder, lat: Latents, eta: float, n: int = 4, steps: int = 25, guidance: float = 1.0,
                   seed: int = 0) -> View:
    """n decodes of one (z_i, x_T) at DDIM `eta`: 0 gives the reconstruction n times, 1 fresh detail."""
    images = variations(decoder, lat.z[:1], lat.x_T[:1], n=n, eta=eta, steps=steps, guidance=guidance, seed=seed)
    ref = decode(decoder, lat.z[:1], lat.x_T[:1], steps=steps, guidance=guidance)[0]
    change = [float(np.abs(np.asarray(im, float) - np.asarray(ref, float)).mean() / 255) for im in images]
    titles = [f"eta {eta:.2f}: changed {c:.3f}" for c in change]
    return View(image_grid(images, titles=titles, scale=SCALE), images, {"mean_abs_change": float(np.mean(change))})


def interpolation_view(decoder, a: Latents, b: Latents, t: float, n: int = 5, slerp_noise: bool = True,
                       steps: int = 25) -> View:
    """The trajectory from image a to image b (n frames) and the frame at `t`. slerp_noise: x_T is
    slerped too (the ends reconstruct both images); else a's x_T is held for the whole trajectory."""
    t, n = check_args(t=t, n=n)
    ts = sorted(set(np.round(np.linspace(0, 1, n), 4).tolist()) | {round(float(t), 4)})
    images = interpolate(decoder, a.z[:1], b.z[:1], a.x_T[:1], b.x_T[:1] if slerp_noise else None,
                         steps=steps, ts=ts)
    titles = [f"t={ti:.2f}" + (" <" if abs(ti - t) < 1e-4 else "") for ti in ts]
    return View(image_grid(images, titles=titles, scale=SCALE), images, {"t": ts})


def text_diff_view(decoder, clip, lat: Latents, target: str, source: str, theta: float, n: int = 5,
                   steps: int = 25) -> View:
    """Rotate z_i toward normalise(z_target - z_source) by angles from 0 to theta, all from the same x_T."""
    theta, n = check_args(theta=theta, n=n)
    z_d = text_direction(clip, target, source)
    thetas = np.round(np.linspace(0.0, theta, n), 4)
    images = text_diff(decoder, lat.z[:1], lat.x_T[:1], z_d, thetas=tuple(thetas), steps=steps)
    titles = [f"theta {th:.2f}" for th in thetas]
    return View(image_grid(images, titles=titles, scale=SCALE), images, {"thetas": thetas.tolist()})
