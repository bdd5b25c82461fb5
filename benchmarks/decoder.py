"""The offline unCLIP decoder: invert and reconstruct one image, decode one image at 25 and 50 DDIM
steps, and a batch of 16, with the UNet's FLOPs per step as a share of the measured matmul peak.

Also: exact (fixed-point) inversion against plain DDIM inversion, time per image at a batch of the
project's out-of-distribution set with each one's round-trip PSNR from the same run; how far more
iterations and Anderson mixing take the hardest images (textures at guidance 3); and the cost of a
training step of the 64 px decoder config (`decoder-64`, 512-d CLIP) and of the `prior-base` prior,
measured on this CPU and counted in FLOPs, for the GPU-time estimate in docs/training-any-clip.md.
"""
from __future__ import annotations

import numpy as np
import torch

from . import peak, subjects
from .harness import interleave, paired_ratio, summarize, time_call

# Assumed for the GPU estimate (not measured here): dense bf16 tensor-core peaks from the vendors'
# datasheets, and the share of it a small conv UNet at batch 64 sustains (an assumption, stated).
GPUS = {"A100 (bf16, 312 TFLOP/s peak)": 312e12, "H100 SXM (bf16, 989 TFLOP/s peak)": 989e12}
GPU_UTILISATION = 0.3
SHIPPED_STEPS = 27000  # what gave the shipped 32 px decoder its card (clipspace/weights/decoder-tiny)


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
    inv = exact_inversion(decoder, clip, quick)
    conv = texture_convergence(decoder, clip, quick)
    cost = training_cost(quick, peak_gflops)
    notes += inv["notes"] + conv["notes"] + cost["notes"]
    return {"title": "unCLIP decoder", "status": "ok", "notes": notes,
            "tables": [{"caption": "", "columns": [["what", "what"], ["seconds", "seconds"], ["per_image_s", "s per image"],
                                                   ["images_per_s", "images/s"], ["ms_per_step", "ms per UNet call"],
                                                   ["gflops", "GFLOP/s"], ["share_fp32_peak", "share of fp32 peak"]],
                        "rows": rows}, inv["table"], conv["table"], *cost["tables"]],
            "data": {"seconds": times, "unet_flops": {"batch1": f1, "batch16": f16}, "batch_speedup": speedup,
                     "exact_inversion": inv["data"], "texture_convergence": conv["data"], "training": cost["data"]}}


# ---------------------------------------------------------------------------------------------
# Exact inversion
# ---------------------------------------------------------------------------------------------
def _ood_batch(decoder, clip, quick: bool):
    from clipspace.unclip.latents import embed_images, images_to_pixels
    from clipspace.unclip.ood import KINDS, inversion_set

    sets = inversion_set(decoder.image_size, n_shapes=2 if quick else 3, n_world=2 if quick else 3)
    images = [im for k in KINDS for _, im in sets[k]]
    kinds = np.array([k for k in KINDS for _ in sets[k]])
    return images, kinds, embed_images(clip, images), images_to_pixels(images, decoder.image_size)


def _psnr_by_kind(decoder, z, x_T, x0, kinds, steps: int, guidance: float = 1.0) -> dict:
    from clipspace.unclip.latents import ddim_sample, psnr

    rec = decoder.decode_pixels(ddim_sample(decoder, z, x_T, steps=steps, guidance=guidance)).float().cpu()
    p = np.asarray(psnr(rec, x0), dtype=np.float64)
    return {"psnr": float(p.mean()), **{f"psnr_{k}": float(p[kinds == k].mean()) for k in dict.fromkeys(kinds)},
            "psnr_min": float(p.min())}


def exact_inversion(decoder, clip, quick: bool) -> dict:
    """DDIM inversion against fixed-point inversion (3 and 5 iterations; docs/exact-inversion.md and
    the README recommend 5) at 50 steps, the out-of-distribution set in one batch. The timed call is
    the inversion loop alone (`ddim_invert`: z_i and pixels computed once, outside); each timed call's
    x_T is kept (the loop is deterministic), so the PSNR is of the very latents timed. No warm-up
    round: the section's decodes above have run the UNet already."""
    from clipspace.unclip.latents import ddim_invert

    images, kinds, z, x0 = _ood_batch(decoder, clip, quick)
    steps = 10 if quick else 50
    runs = {"ddim": ("ddim", steps, 0), "fixed_point_3": ("fixed_point", steps, 3),
            "fixed_point_5": ("fixed_point", steps, 5)}
    latents = {}
    contenders = {name: (lambda name=name, m=m, s=s, it=it: latents.__setitem__(
        name, ddim_invert(decoder, x0, z, s, method=m, iterations=max(it, 1)))) for name, (m, s, it) in runs.items()}
    times = interleave(contenders, repeat=1 if quick else 2, warmup=0)
    n = len(images)
    rows = []
    for name, (m, s, it) in runs.items():
        x_T = latents[name]
        t = summarize(times[name])
        ratio = paired_ratio(times[name], times["ddim"])  # slow / fast: this method's time over DDIM's, per round
        rows.append({"method": m, "steps": s, "iterations": it, "evaluations": s * (1 + it) if it else s,
                     "per_image_s": t["median"] / n, "ratio_to_ddim": ratio,
                     **_psnr_by_kind(decoder, z, x_T, x0, kinds, s)})
    notes = [f"exact inversion: {n} images ({', '.join(f'{k} {int((kinds == k).sum())}' for k in dict.fromkeys(kinds))}) "
             f"inverted in one batch at {steps} steps, guidance 1; 'x DDIM' is each round's time over DDIM's at "
             f"{steps} steps (paired); PSNR of decode(x_T) at the same steps, from the same run."]
    cols = [["method", "method"], ["steps", "steps"], ["iterations", "iterations"], ["evaluations", "UNet calls per image"],
            ["per_image_s", "s per image (batch)"], ["ratio_to_ddim", "× DDIM time"], ["psnr", "PSNR all"],
            *[[f"psnr_{k}", k] for k in dict.fromkeys(kinds)], ["psnr_min", "min"]]
    return {"notes": notes, "table": {"caption": "Exact inversion against DDIM inversion", "columns": cols, "rows": rows},
            "data": {"times": times, "rows": rows}}


def texture_convergence(decoder, clip, quick: bool) -> dict:
    """Fixed-point inversion of the three textures at guidance 3 (the hardest case in
    docs/exact-inversion.md): PSNR against iterations, without and with Anderson mixing."""
    from clipspace.unclip.latents import ddim_invert

    images, kinds, z, x0 = _ood_batch(decoder, clip, quick)
    keep = kinds == "textures"
    z, x0, kinds = z[torch.from_numpy(keep)], x0[torch.from_numpy(keep)], kinds[keep]
    steps, guidance = (10, 3.0) if quick else (50, 3.0)
    grid = [(2, 2)] if quick else [(0, 5), (0, 20), (2, 5), (2, 10), (2, 20), (5, 20)]
    rows = []
    for anderson, it in grid:
        out = {}
        t = time_call(lambda: out.update(x_T=ddim_invert(decoder, x0, z, steps, guidance, method="fixed_point",
                                                         iterations=it, anderson=anderson)))
        x_T = out["x_T"]
        p = _psnr_by_kind(decoder, z, x_T, x0, kinds, steps, guidance)
        rows.append({"anderson": anderson, "iterations": it, "evaluations": steps * (1 + it),
                     "psnr": p["psnr"], "psnr_min": p["psnr_min"], "seconds": t})
    notes = [f"texture convergence: the {int(keep.sum())} textures, fixed-point inversion at {steps} steps and "
             f"guidance {guidance}, each setting once (seconds: one call, context only)."]
    cols = [["anderson", "Anderson history"], ["iterations", "iterations"], ["evaluations", "guided calls per image"],
            ["psnr", "PSNR mean"], ["psnr_min", "PSNR min"], ["seconds", "seconds (1 call)"]]
    return {"notes": notes, "table": {"caption": f"Textures at guidance {guidance}: fixed-point iterations and Anderson",
                                      "columns": cols, "rows": rows}, "data": rows}


# ---------------------------------------------------------------------------------------------
# What training costs: the GPU-time estimate
# ---------------------------------------------------------------------------------------------
def _sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """Attention's backward: the gradients of Q K^T and of the weights times V, twice the forward's matmuls."""
    return 2 * peak.sdpa_flops(query_shape, key_shape, value_shape)


def step_flops(step) -> int:
    """FLOPs of one training step (forward and backward; the optimizer's elementwise update not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = peak.missing_formulas()
    bwd = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if bwd is not None:
        from torch.utils.flop_counter import flop_registry

        if bwd not in flop_registry:
            mapping[bwd] = _sdpa_backward_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        step()
    return int(counter.get_total_flops())


def decoder_step(config: str = "decoder-64", embed_dim: int = 512, batch: int = 64):
    """One training step of the decoder trainer's objective (v-prediction MSE, bf16 autocast, AdamW,
    gradient clipping) on random pixels and embeddings: the same maths as `train.decoder.train`'s loop."""
    from diffusers import DDPMScheduler

    from clipspace.train.decoder import diffusion_target
    from clipspace.unclip.decoder import build_decoder, get_decoder_config

    cfg = get_decoder_config(config)
    cfg["clip_embed_dim"] = embed_dim
    dec = build_decoder(cfg, seed=0)
    unet = dec.unet.train()
    sched = DDPMScheduler.from_config(cfg["scheduler"])
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((batch, *dec.latent_shape), generator=g) * 2 - 1
    z = torch.nn.functional.normalize(torch.randn(batch, embed_dim, generator=g), dim=-1)

    def step():
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=None, class_labels=z).sample
        loss = (pred.float() - diffusion_target(sched, x0, noise, t)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
    return step, sum(p.numel() for p in unet.parameters()), dec.image_size


def prior_step(config: str = "prior-base", embed_dim: int = 512, batch: int = 256):
    """One training step of the prior trainer's objective (x0 MSE, fp32, AdamW) on random embeddings."""
    from diffusers import DDPMScheduler

    from clipspace.unclip.prior import build_prior, get_prior_config

    cfg = get_prior_config(config)
    cfg["clip_embed_dim"] = embed_dim
    prior = build_prior(cfg, seed=0)
    net = prior.transformer.train()
    sched = DDPMScheduler.from_config(cfg["scheduler"])
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x0, z_t = torch.randn(batch, embed_dim, generator=g), torch.randn(batch, embed_dim, generator=g)

    def step():
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,))
        pred = net(sched.add_noise(x0, noise, t), t, proj_embedding=z_t).predicted_image_embedding
        loss = torch.nn.functional.mse_loss(pred, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, sum(p.numel() for p in params), None


def training_cost(quick: bool, peak_gflops: dict | None = None) -> dict:
    """CPU seconds per training step (measured) and FLOPs per step (counted) of decoder-64 and
    prior-base for a 512-d CLIP, and the GPU hours they imply at an assumed sustained rate."""
    dec_batch, prior_batch, timed = (4, 16, 1) if quick else (64, 256, 1)
    rows, est = [], []
    for what, make, batch in (("decoder-64 (64 px, 512-d)", decoder_step, dec_batch),
                              ("prior-base (512-d)", prior_step, prior_batch)):
        step, n_params, _ = make(batch=batch)
        flops = step_flops(step)  # also the warm-up step
        times = [time_call(step) for _ in range(timed)]
        s = summarize(times)
        gflops = flops / s["median"] / 1e9
        row = {"what": what, "params_m": n_params / 1e6, "batch": batch, "gflop_per_step": flops / 1e9,
               "seconds": s, "steps_per_s": 1 / s["median"], "gflops": gflops,
               "cpu_hours_shipped": SHIPPED_STEPS * s["median"] / 3600}
        if peak_gflops:
            row["share_bf16_peak"] = gflops / peak_gflops.get("bfloat16", peak_gflops["float32"])
        rows.append(row)
        for gpu, peak_flops in GPUS.items():
            per_step = flops / (peak_flops * GPU_UTILISATION)
            est.append({"what": what, "gpu": gpu, "batch": batch, "ms_per_step": per_step * 1e3,
                        "hours_27k": SHIPPED_STEPS * per_step / 3600, "hours_270k": 10 * SHIPPED_STEPS * per_step / 3600})
    notes = [f"training cost: {timed} timed steps after one counted (FLOPs) warm-up step, {torch.get_num_threads()} torch "
             "threads, 2 CPU cores shared with other work; the decoder step in bf16 autocast as the trainer runs on a CPU.",
             f"GPU ESTIMATE, not a measurement: FLOPs per step / ({GPU_UTILISATION:.0%} of the datasheet's dense bf16 "
             f"peak); {SHIPPED_STEPS} steps is what the shipped 32 px decoder took on the shapes world, photos need "
             "more (the 270k column is ten times that)."]
    cols = [["what", "what"], ["params_m", "M params"], ["batch", "batch"], ["gflop_per_step", "GFLOP per step"],
            ["seconds", "CPU s per step"], ["steps_per_s", "CPU steps/s"], ["gflops", "CPU GFLOP/s"],
            ["share_bf16_peak", "share of bf16 matmul peak"], ["cpu_hours_shipped", f"CPU hours for {SHIPPED_STEPS}"]]
    ecols = [["what", "what"], ["gpu", "GPU (assumed)"], ["batch", "batch"], ["ms_per_step", "ms per step (est.)"],
             ["hours_27k", "hours for 27k steps (est.)"], ["hours_270k", "hours for 270k steps (est.)"]]
    return {"notes": notes,
            "tables": [{"caption": "Training steps on this CPU (512-d CLIP, random data)", "columns": cols, "rows": rows},
                       {"caption": f"GPU time, ESTIMATED at {GPU_UTILISATION:.0%} of peak", "columns": ecols, "rows": est}],
            "data": {"rows": rows, "estimate": est, "utilisation": GPU_UTILISATION, "gpus": GPUS}}
