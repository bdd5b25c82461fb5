"""The offline unCLIP decoder: invert and reconstruct one image, decode one image at 25 and 50 DDIM
steps, and a batch of 16, with the UNet's FLOPs per step as a share of the measured matmul peak."""
from __future__ import annotations

import torch

from . import peak, subjects
from .harness import interleave, paired_ratio, summarize


def unet_flops(decoder, batch: int = 1) -> int:
    """FLOPs of one UNet call (one DDIM step at guidance 1) on `batch` images."""
    x = torch.zeros(batch, *decoder.latent_shape)
    z = torch.zeros(batch, decoder.embed_dim)
    return peak.forward_flops(lambda: decoder.predict(x, torch.tensor(500), z, 1.0))


def run(quick: bool = False, peak_gflops: dict | None = None) -> dict:
    from clipspace import world
    from clipspace.unclip.latents import decode, invert, random_noise

    clip, clip_note = subjects.offline_clip()
    decoder, note = subjects.offline_decoder(clip)
    steps_hi, steps_lo = (10, 5) if quick else (50, 25)
    repeat = 2 if quick else 5
    image = world.single_objects(1)[0].render(decoder.image_size)
    z = torch.nn.functional.normalize(torch.randn(16, decoder.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    x16 = random_noise(decoder, 16, seed=0)

    def roundtrip():
        lat = invert(decoder, clip, [image], steps=steps_hi)
        return decode(decoder, lat.z, lat.x_T, steps=steps_hi)

    contenders = {
        f"invert + reconstruct, 1 image, {steps_hi} steps": roundtrip,
        f"decode 1 image, {steps_lo} steps": lambda: decode(decoder, z[:1], x16[:1], steps=steps_lo, output="pt"),
        f"decode 1 image, {steps_hi} steps": lambda: decode(decoder, z[:1], x16[:1], steps=steps_hi, output="pt"),
        f"decode 16 images (one batch), {steps_hi} steps": lambda: decode(decoder, z, x16, steps=steps_hi, output="pt"),
    }
    times = interleave(contenders, repeat=repeat, warmup=1)
    f1, f16 = unet_flops(decoder, 1), unet_flops(decoder, 16)
    rows = []
    for name, t in times.items():
        s = summarize(t)
        n_img = 16 if "16 images" in name else 1
        steps = steps_lo if f"{steps_lo} steps" in name else steps_hi
        calls = 2 * steps if "invert" in name else steps  # inversion runs the UNet as often as sampling
        row = {"what": name, "seconds": s, "per_image_s": s["median"] / n_img, "images_per_s": n_img / s["median"],
               "ms_per_step": s["median"] / calls * 1e3}
        if peak_gflops:
            gflops = (f16 if n_img == 16 else f1) * calls / s["median"] / 1e9
            row.update(gflops=gflops, share_fp32_peak=gflops / peak_gflops["float32"])
        rows.append(row)
    single, batch = times[f"decode 1 image, {steps_hi} steps"], times[f"decode 16 images (one batch), {steps_hi} steps"]
    speedup = paired_ratio([16 * s for s in single], batch)
    notes = [f"decoder: {note}; CLIP for inversion: {clip_note}",
             f"{decoder!r}; {f1 / 1e6:.1f} MFLOPs per UNet call per image (guidance 1: one call per step)",
             f"batching: 16 images in one batch run {speedup['median']:.2f}× [{speedup['q1']:.2f}–{speedup['q3']:.2f}] "
             "faster per image than one at a time (paired per round)",
             f"{repeat} interleaved rounds after one warm-up round."]
    return {"title": "unCLIP decoder", "status": "ok", "notes": notes,
            "tables": [{"caption": "", "columns": [["what", "what"], ["seconds", "seconds"], ["per_image_s", "s per image"],
                                                   ["images_per_s", "images/s"], ["ms_per_step", "ms per UNet call"],
                                                   ["gflops", "GFLOP/s"], ["share_fp32_peak", "share of fp32 peak"]],
                        "rows": rows}],
            "data": {"seconds": times, "unet_flops": {"batch1": f1, "batch16": f16}, "batch_speedup": speedup}}
