"""Measure DDIM inversion against fixed-point (exact) inversion on images the decoder never saw,
and write docs/exact-inversion.md (+ .json). Rerunnable, seeded:

    python -m clipspace.unclip.measure_inversion          # ~5-10 minutes on 2 CPU cores
    python -m clipspace.unclip.measure_inversion --quick  # small, to check it runs

The round trip is decode(invert(x)) at eta 0 with the same steps and guidance; PSNR over [-1, 1]
pixels at the decoder's size. "evaluations" counts UNet calls per image for the inversion (a guided
call counts once: both halves run in one batch).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from clipspace.cache import write_atomic
from clipspace.unclip.latents import (decode, images_to_pixels, interpolate, invert, psnr, text_diff,
                                      text_direction, variations)
from clipspace.unclip.ood import KINDS, inversion_set

DOCS = Path(__file__).resolve().parents[2] / "docs"


def round_trip(decoder, clip, images, steps: int, method: str, iterations: int = 3, guidance: float = 1.0) -> np.ndarray:
    lat = invert(decoder, clip, images, steps=steps, guidance=guidance, method=method, iterations=iterations)
    rec = decode(decoder, lat.z, lat.x_T, steps=steps, guidance=guidance, output="pt")
    ref = images_to_pixels(images, decoder.image_size)
    return np.array([float(psnr(rec[i], ref[i], data_range=2.0)) for i in range(len(images))])


def measure_edits(decoder, clip, steps: int, quick: bool = False) -> list[dict]:
    """Edits still behave from each method's x_T of held-out world scenes, judged zero-shot by the CLIP
    as the decoder card does: variations (eta 1) keep the scene's colour and shape; a text diff
    (theta 0.5 towards another colour's caption) takes the new colour and keeps the shape; the ends of
    an interpolation between two scenes (x_T slerped too) keep each scene's colour and shape."""
    from clipspace import world
    from clipspace.train.measure_decoder import _Judge

    scenes = world.single_objects(4 if quick else 12, world.PROBE_SEED + 41)
    judge, edits = _Judge(clip), []
    for method, it in (("ddim", 0), ("fixed_point", 5)):
        lat = invert(decoder, clip, scenes, steps=steps, method=method, iterations=max(it, 1))
        row = {"method": method}
        col, shp, new_col, kept, ends = [], [], [], [], []
        for i, s in enumerate(scenes):
            colour, shape = s.objects[0].colour, s.objects[0].shape
            c, h, _ = judge(variations(decoder, lat.z[i:i + 1], lat.x_T[i:i + 1], n=4, eta=1.0, steps=steps, seed=i))
            col.append(np.mean(c == colour))
            shp.append(np.mean(h == shape))
            target = "blue" if colour != "blue" else "red"
            z_d = text_direction(clip, f"a {target} {shape}", f"a {colour} {shape}")
            c, h, _ = judge(text_diff(decoder, lat.z[i:i + 1], lat.x_T[i:i + 1], z_d, thetas=(0.5,), steps=steps))
            new_col.append(c[0] == target)
            kept.append(h[0] == shape)
        for i in range(0, len(scenes) - 1, 2):  # pairs of scenes: the interpolation's two ends
            j = i + 1
            frames = interpolate(decoder, lat.z[i], lat.z[j], lat.x_T[i], lat.x_T[j], n=3, steps=steps)
            c, h, _ = judge([frames[0], frames[-1]])
            for k, s in zip((0, 1), (scenes[i], scenes[j])):
                ends.append(c[k] == s.objects[0].colour and h[k] == s.objects[0].shape)
        row.update(variation_colour=float(np.mean(col)), variation_shape=float(np.mean(shp)),
                   text_diff_new_colour=float(np.mean(new_col)), text_diff_shape_kept=float(np.mean(kept)),
                   interpolation_ends_kept=float(np.mean(ends)))
        edits.append(row)
    return edits


def measure(decoder, clip, quick: bool = False) -> dict:
    t0 = time.perf_counter()
    sets = inversion_set(decoder.image_size, n_shapes=3 if quick else 6, n_world=3 if quick else 6)
    if quick:
        sets = {k: v[:3] for k, v in sets.items()}
    names = [(k, n) for k in KINDS for n, _ in sets[k]]
    images = [im for k in KINDS for _, im in sets[k]]
    kinds = np.array([k for k, _ in names])
    steps = 10 if quick else 50
    configs = ([("ddim", steps, 0), ("ddim", 2 * steps, 0), ("fixed_point", steps, 1), ("fixed_point", steps, 3)]
               if quick else
               [("ddim", s, 0) for s in (50, 100, 200, 300)] + [("fixed_point", 50, i) for i in (1, 2, 3, 5)] +
               [("fixed_point", 25, 3)])
    curve = []
    for method, s, it in configs:
        p = round_trip(decoder, clip, images, s, method, max(it, 1))
        curve.append({"method": method, "steps": s, "iterations": it, "evaluations": s * (1 + it) if it else s,
                      **{k: float(p[kinds == k].mean()) for k in KINDS}, "min": float(p.min())})
    guided = []
    for method, it in (("ddim", 0), ("fixed_point", 5)):
        p = round_trip(decoder, clip, images, steps, method, max(it, 1), guidance=3.0)
        guided.append({"method": method, "guidance": 3.0, "steps": steps, "iterations": it,
                       **{k: float(p[kinds == k].mean()) for k in KINDS}})
    edits = measure_edits(decoder, clip, steps, quick)
    return {"images": {k: [n for kk, n in names if kk == k] for k in KINDS}, "curve": curve, "guided": guided,
            "edits": edits, "seconds": round(time.perf_counter() - t0, 1)}


KEEP = "<!-- written by hand below this line: measure_inversion keeps it -->"


def write_report(m: dict, path: Path) -> None:
    from clipspace.train.measure_clip import markdown_table

    r = lambda rows: markdown_table([{k: (round(v, 2) if isinstance(v, float) else v) for k, v in x.items()} for x in rows])  # noqa: E731
    text = f"""# Exact inversion: DDIM against fixed-point inversion, on images the decoder never saw

Measured by `python -m clipspace.unclip.measure_inversion` with the offline decoder (32 px) and the
offline CLIP, {m['seconds']} s on this machine. Round trip = decode(invert(x)) at eta 0, same steps
and guidance; PSNR in dB over [-1, 1] pixels, mean per kind (and the minimum over every image).

Images: photos {m['images']['photos']}; textures {m['images']['textures']} (all scikit-image's
bundled data, licences in `clipspace/photos.py`); {len(m['images']['other_renderer'])} shapes drawn
with scikit-image's anti-aliased drawing on black or mid-grey; {len(m['images']['world'])} held-out world scenes.

## PSNR against model evaluations (guidance 1)

`ddim` is diffusers' DDIMInverseScheduler: one UNet call per step. `fixed_point` solves each step
so that the sampler's own step maps back exactly (Anderson-accelerated, 2 rounds of history):
1 + iterations calls per step.

{r(m['curve'])}

## Guidance 3 (the guided prediction in both directions)

{r(m['guided'])}

## Edits still behave

From each method's x_T of held-out world scenes (single objects: 12, or 4 with --quick), judged zero-shot by the
CLIP as the decoder card does: variations (eta 1, 4 per scene) keeping the scene's colour and shape; a
text diff (theta 0.5 towards the caption of another colour) taking the new colour and keeping the
shape; the two ends of an interpolation between two scenes (x_T slerped too) keeping each scene's
colour and shape.

{r(m['edits'])}
"""
    if path.is_file() and KEEP in (old := path.read_text()):  # the hand-written sections below the marker stay
        text += "\n" + KEEP + old.split(KEEP, 1)[1]
    write_atomic(path, text)
    write_atomic(path.with_suffix(".json"), json.dumps(m, indent=1) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m clipspace.unclip.measure_inversion", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=DOCS / "exact-inversion.md")
    ap.add_argument("--edits-only", action="store_true", help="re-measure only the edits, keeping the rest of "
                                                              "the report's JSON (the slow PSNR curves)")
    a = ap.parse_args(argv)
    from clipspace.factory import load_clip
    from clipspace.unclip.decoder import load_decoder

    clip = load_clip()
    if a.edits_only:
        t0 = time.perf_counter()
        m = json.loads(a.out.with_suffix(".json").read_text())
        m["edits"] = measure_edits(load_decoder(clip=clip), clip, 10 if a.quick else 50, a.quick)
        m["seconds_edits"] = round(time.perf_counter() - t0, 1)
    else:
        m = measure(load_decoder(clip=clip), clip, quick=a.quick)
    write_report(m, a.out)
    print(f"wrote {a.out} in {m.get('seconds_edits', m['seconds'])} s")


if __name__ == "__main__":
    main()
