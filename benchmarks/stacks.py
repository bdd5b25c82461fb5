"""Pretrained unCLIP stacks on real photos, for users with a GPU: `python -m benchmarks.stacks --device cuda`.

For each stack of `clipspace.unclip.stacks.STACKS` whose weights are all in the local Hugging Face cache
(CLIP, decoder, prior: nothing is downloaded, the loads are local_files_only), it loads the stack,
inverts a few photos bundled with scikit-image (`clipspace.photos`, centre-cropped to the decoder's
size) to (z_i, x_T) and decodes them back at eta 0, and reports per stack:
- PSNR of the reconstruction against the photo, and (latent decoders) the PSNR of the autoencoder's
  own round trip, the ceiling inversion cannot pass;
- the re-encoded cosine: the CLIP's embedding of the reconstruction against z_i;
- seconds per image for inversion plus decoding (after one warm-up image per stack).
A markdown table goes to stdout and, with --out, the rows as JSON. Stacks whose weights are not here
are listed as missing, with their repo ids and the folders looked in, and the script exits 0.

--tiny runs the same measurement on each family's tiny random components (`stacks.tiny_stack`,
paired with the offline CLIP): the code path on this device, with numbers that mean nothing.
No real weights have been run with this script by the project (none can be downloaded where it was
written): the first real figures will come from a user's machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_PHOTOS = ("astronaut", "chelsea", "coffee")


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(stack, photos=DEFAULT_PHOTOS, steps: int = 50, method: str = "ddim", iterations: int = 3,
            device="cpu") -> dict:
    """Invert and reconstruct `photos` with one stack; per-photo rows and their means."""
    from clipspace.photos import photo, square
    from clipspace.unclip.latents import decode, embed_images, images_to_pixels, invert, pixels_to_images, psnr

    clip, dec = stack.clip, stack.decoder
    images = [square(photo(p), dec.image_size) for p in photos]
    latent = tuple(dec.latent_shape) != (3, dec.image_size, dec.image_size)
    rows = []
    for i, (name, img) in enumerate(zip([photos[0], *photos], [images[0], *images])):  # the first twice: warm-up
        _sync(device)
        t0 = time.perf_counter()
        lat = invert(dec, clip, [img], steps=steps, method=method, iterations=iterations)
        recon = decode(dec, lat.z, lat.x_T, steps=steps, output="pt")
        _sync(device)
        seconds = time.perf_counter() - t0
        if i == 0:
            continue
        target = images_to_pixels([img], dec.image_size)
        ceiling = None
        if latent:
            round_trip = dec.decode_pixels(dec.encode_pixels(target.to(dec.device, dec.dtype))).float().cpu()
            ceiling = float(np.mean(psnr(round_trip, target)))
        z_back = embed_images(clip, pixels_to_images(recon))
        rows.append({"photo": name, "psnr_db": float(np.mean(psnr(recon.cpu(), target))), "autoencoder_psnr_db": ceiling,
                     "reencoded_cosine": float((z_back * lat.z).sum(-1)[0]), "seconds_per_image": seconds})
    mean = lambda k: (sum(r[k] for r in rows) / len(rows)) if rows and rows[0][k] is not None else None  # noqa: E731
    return {"stack": stack.name, "clip": f"{clip.name} ({clip.pretrained})", "image_size": dec.image_size,
            "steps": steps, "method": method, "rows": rows,
            **{k: mean(k) for k in ("psnr_db", "autoencoder_psnr_db", "reencoded_cosine", "seconds_per_image")}}


def markdown(results: list[dict], missing: dict, tiny: bool) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = []
    if tiny:
        lines.append("Tiny random components (--tiny): the code path only; the numbers mean nothing.\n")
    if results:
        lines += ["| stack | CLIP | px | steps | method | PSNR dB | autoencoder PSNR dB | re-encoded cos | s / image |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['stack']} | {r['clip']} | {r['image_size']} | {r['steps']} | {r['method']} | "
                  f"{f(r['psnr_db'], '.2f')} | {f(r['autoencoder_psnr_db'], '.2f')} | {f(r['reencoded_cosine'], '.3f')} | "
                  f"{f(r['seconds_per_image'], '.2f')} |" for r in results]
    for name, parts in missing.items():
        lines.append(f"- {name}: not measured, weights missing: " +
                     "; ".join(f"{m['what']} {m['repo']} (looked in {m['looked_in']})" for m in parts))
    return "\n".join(lines)


@contextlib.contextmanager
def quiet():
    """diffusers' and transformers' progress bars and load notes off while measuring (the table is the
    output), restored after: main() also runs inside other processes (the tests)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    before = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in (dlog, tlog)]
    for lib, _, _ in before:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, verbosity, bars in before:
            lib.set_verbosity(verbosity)
            lib.enable_progress_bar() if bars else lib.disable_progress_bar()


def main(argv=None) -> int:
    from clipspace.unclip import stacks

    ap = argparse.ArgumentParser(prog="python -m benchmarks.stacks", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--stacks", nargs="+", default=list(stacks.STACKS), choices=list(stacks.STACKS), metavar="NAME")
    ap.add_argument("--photos", nargs="+", default=list(DEFAULT_PHOTOS))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--method", default="ddim", choices=["ddim", "fixed_point"])
    ap.add_argument("--iterations", type=int, default=3, help="fixed-point iterations per step")
    ap.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"],
                    help="decoder and prior dtype (default: float16 on CUDA, float32 elsewhere)")
    ap.add_argument("--tiny", action="store_true", help="tiny random components: the code path, not the numbers")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    with quiet():
        return run(args)


def run(args) -> int:
    from clipspace.unclip import stacks

    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if args.device.startswith("cuda") else None)

    results, missing, failed = [], {}, {}
    clip = None
    for name in args.stacks:
        try:
            if args.tiny:
                from clipspace.factory import load_clip

                clip = clip or load_clip(device=args.device)
                stack = stacks.tiny_stack(name, clip=clip, device=args.device, dtype=dtype)
            else:
                if parts := stacks.missing_weights(name):
                    missing[name] = parts
                    continue
                stack = stacks.load_unclip(name, device=args.device, dtype=dtype, local_files_only=True)
            results.append(measure(stack, tuple(args.photos), args.steps, args.method, args.iterations, args.device))
        except Exception as e:  # noqa: BLE001 (one stack failing must not lose the others' figures)
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        finally:
            stack = None
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    print(markdown(results, missing, args.tiny))
    for name, why in failed.items():
        print(f"- {name}: failed: {why}")
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") and torch.cuda.is_available() else args.device
    report = {"device": device, "tiny": args.tiny, "results": results, "missing": missing, "failed": failed,
              "hub_cache": str(stacks.hub_cache_dir())}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
