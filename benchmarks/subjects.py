"""What the benchmarks measure: the offline models (or, before they are trained, their configs with
random weights, said so in the report), an open_clip architecture with random weights, image files
and texts from the shapes world."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

RANDOM_ARCH = "ViT-B-32"
FILE_IMAGE_SIZE = 256  # files on disk are 256 px PNGs, like small user photos: decoding and resizing count


def offline_clip():
    """(ClipModel, note): `load_clip()`, or the clipspace-tiny config with seeded random weights."""
    from clipspace import ClipModel, WeightsNotAvailableError, load_clip

    try:
        return load_clip(), "offline default `load_clip()` (trained clipspace-tiny weights)"
    except WeightsNotAvailableError:
        import open_clip

        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms("clipspace-tiny", pretrained=None)
        clip = ClipModel(model=model.eval(), preprocess=preprocess, tokenizer=open_clip.get_tokenizer("clipspace-tiny"),
                         name="clipspace-tiny", pretrained=None, device=torch.device("cpu"),
                         weights_id="random-seed0")
        return clip, ("clipspace-tiny config with RANDOM weights: `load_clip()`'s weights were not in "
                      "clipspace/weights/clipspace-tiny/ yet (speed does not depend on the weights' values)")


def arch_clip(name: str = RANDOM_ARCH):
    """(ClipModel, note): an open_clip architecture with seeded random weights, through `load_clip`."""
    from clipspace import load_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(name), f"{name} with random weights (`load_clip({name!r})`; speed only)"


def offline_decoder(clip=None):
    """(decoder, note): `load_decoder()`, or the decoder-tiny config with seeded random weights."""
    from clipspace.unclip.decoder import DecoderNotFoundError, build_decoder, load_decoder

    try:
        return load_decoder(), "offline decoder `load_decoder()` (trained decoder-tiny weights)"
    except DecoderNotFoundError:
        return build_decoder(seed=0), ("decoder-tiny config with RANDOM weights: `load_decoder()`'s weights were "
                                       "not in clipspace/weights/decoder-tiny/ yet (speed does not depend on them)")


def world_scenes(n: int, seed: int = 1234):
    from clipspace import world

    return world.mixed_scenes(n, seed) if hasattr(world, "mixed_scenes") else world.single_objects(n, seed)


def write_image_files(folder: Path, n: int, size: int = FILE_IMAGE_SIZE) -> list[Path]:
    """n world scenes as PNG files in `folder` (sorted names); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, scene in enumerate(world_scenes(n)):
        p = folder / f"img{i:05d}.png"
        scene.render(size).save(p)
        paths.append(p)
    return paths


def world_captions(n: int) -> list[str]:
    """n captions of world scenes, all different templates mixed (the text workload)."""
    scenes = world_scenes(n, seed=4321)
    return [s.caption(i % 3) for i, s in enumerate(scenes)]
