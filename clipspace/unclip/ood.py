"""Images the offline decoder never saw, built here: the set exact inversion is measured on.

- photos: scikit-image's bundled photographs (`clipspace.photos`), centre-cropped and resized;
- textures: its bundled textures (brick, grass, gravel);
- shapes drawn by another renderer: scikit-image's anti-aliased drawing, not the world's PIL code,
  at sizes and on backgrounds (black, mid-grey) the world does not use;
- world: held-out scenes of the shapes world itself, the in-distribution reference.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from clipspace import world
from clipspace.photos import PHOTOS, TEXTURES, photo, square

KINDS = ("photos", "textures", "other_renderer", "world")


def other_renderer_shapes(n: int = 6, size: int = 32, seed: int = 0) -> list[Image.Image]:
    """n one-object images drawn with skimage.draw (anti-aliased discs, ellipses and polygons)."""
    from skimage.draw import disk, ellipse, polygon

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        big = size * 4  # draw large, then downsample: anti-aliasing the world's renderer does not have
        img = np.full((big, big, 3), (0, 0, 0) if i % 2 else (128, 128, 128), np.uint8)
        colour = rng.integers(40, 256, 3)
        c, r = big * rng.uniform(0.35, 0.65, 2), big * rng.uniform(0.15, 0.35)
        kind = ("disk", "ellipse", "polygon")[i % 3]
        if kind == "disk":
            rr, cc = disk(tuple(c), r, shape=img.shape[:2])
        elif kind == "ellipse":
            rr, cc = ellipse(c[0], c[1], r, r * 0.55, shape=img.shape[:2], rotation=rng.uniform(0, np.pi))
        else:
            k = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rr, cc = polygon(c[0] + r * np.sin(ang), c[1] + r * np.cos(ang), shape=img.shape[:2])
        img[rr, cc] = colour
        out.append(Image.fromarray(img).resize((size, size), Image.LANCZOS))
    return out


def inversion_set(size: int = 32, n_shapes: int = 6, n_world: int = 6) -> dict[str, list[tuple[str, Image.Image]]]:
    """kind -> [(name, image at size x size)] for every kind in `KINDS`."""
    return {
        "photos": [(name, square(photo(name), size)) for name in PHOTOS],
        "textures": [(name, square(photo(name), size)) for name in TEXTURES],
        "other_renderer": [(f"shape{i}", im) for i, im in enumerate(other_renderer_shapes(n_shapes, size))],
        "world": [(f"scene{i}", s.render(size)) for i, s in enumerate(world.single_objects(n_world, world.PROBE_SEED + 40))],
    }
