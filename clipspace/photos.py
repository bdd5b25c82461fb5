"""Real photographs bundled with scikit-image (no download): the natural input for a real CLIP, and
images the offline default never saw. Each one's source and licence, as skimage.data states them.

    from clipspace.photos import PHOTOS, photo
    photo("chelsea")                 # a PIL RGB image
"""
from __future__ import annotations

from PIL import Image

from clipspace.errors import InvalidArgumentError

# name -> (what it shows, licence as scikit-image's docstrings give it)
PHOTOS = {
    "astronaut": ("the astronaut Eileen Collins", "NASA, no known copyright restrictions"),
    "chelsea": ("Chelsea the cat", "CC0, Stefan van der Walt"),
    "coffee": ("a coffee cup", "CC0, Rachel Michetti"),
    "rocket": ("the DSCOVR launch on a Falcon 9", "SpaceX, released into the public domain"),
    "camera": ("a man with a camera (grey)", "CC0, Lav Varshney"),
    "hubble_deep_field": ("the Hubble eXtreme Deep Field", "NASA, public domain"),
    "retina": ("a fundus photograph of a retina", "CC0 1.0, Mikael Häggström"),
}
TEXTURES = {
    "brick": ("a brick wall (grey)", "CC0, CC0Textures"),
    "grass": ("grass (grey)", "CC0, DeviantArt linolafett"),
    "gravel": ("gravel (grey)", "CC0, CC0Textures"),
}


def photo(name: str) -> Image.Image:
    """One bundled photo or texture as an RGB PIL image (grey ones are converted)."""
    if name not in PHOTOS and name not in TEXTURES:
        raise InvalidArgumentError(f"photo {name!r} is not bundled; use one of {', '.join([*PHOTOS, *TEXTURES])}")
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def square(img: Image.Image, size: int) -> Image.Image:
    """The centre square of `img`, resized to size x size (bicubic): how a decoder of that size sees it."""
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return img.crop(box).resize((size, size), Image.BICUBIC)
