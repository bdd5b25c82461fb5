"""Measure the unCLIP prior on held-out captions and write the offline prior's model card.

    python -m clipspace.train.measure_prior                           # the shipped prior and decoder
    python -m clipspace.train.measure_prior --weights runs/prior --ship clipspace/weights/prior-tiny

The decoder's z for a held-out caption comes by one of five routes (Ramesh et al. 2022, sec. 5.1,
Fig. 8): zero (the unconditional decoder), z_t fed as if it were z_i, a ridge regression z_t -> z_i
fitted on the training stream (the mean predictor: the baseline), the prior's sample, and the true
z_i of the held-out scene (the ceiling). For each: cosine to the true z_i, the distance between the
means of z and z_i (the modality gap), and the factors of the decoded images judged zero-shot by
the default CLIP (colour and shape on single objects; binding on two objects: does the CLIP score the
decoded image higher with its caption than with the colours swapped?). Then the guidance curves
(fidelity against diversity, guidance 1..8, for the prior and for the decoder), dynamic thresholding
on and off at high decoder guidance (the share of saturated pixels), and CLIP reranking (DALL-E 1):
the factor accuracy of the top-ranked of N samples against a random pick, with the colour also read
from the pixels, so that where the CLIP judge and the pixels disagree is counted.

Held-out scenes are `world.single_objects` and `world.colour_swap_pairs` (probe seeds, disjoint from
the training stream's scenes; the captions, from a small vocabulary, mostly occur in training too).

A prior of your own CLIP and pairs (`--pairs HELD_OUT`, `measure_pairs`) has no factor judges: it
gets the cosines of the prior's samples to the true z_i against the z_t route and the training
mean, the modality gap, and, with `--decoder` (one trained on the same CLIP), the CLIP cosine of
decoded samples to z_i and to their caption.

    python -m clipspace.train.measure_prior --weights runs/my-prior --clip ViT-B-32 --pretrained openai \
        --pairs held_out.csv [--decoder runs/my-decoder]
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from clipspace import world
from clipspace.factory import load_clip
from clipspace.train.measure_clip import markdown_table
from clipspace.train.measure_decoder import _Judge
from clipspace.unclip.decoder import load_decoder
from clipspace.unclip.generate import decode_embeddings, rerank, saturation
from clipspace.unclip.latents import embed_images, embed_texts
from clipspace.unclip.prior import load_prior

ROUTES = ("zero", "z_t", "ridge", "prior", "true_z_i")
TARGETS = {"prior_colour": 0.95, "prior_shape": 0.90}
GUIDANCES = (1.0, 2.0, 4.0, 8.0)
RERANK_NS = (1, 4, 16, 64)


# ---------------------------------------------------------------------------------------------
# Judging decoded images
# ---------------------------------------------------------------------------------------------
def pixel_colour(images) -> np.ndarray:
    """The world colour nearest to the mean of each image's object pixels (those far from the border's
    median colour, the background): ground truth read from pixels, no CLIP involved."""
    names, palette = list(world.COLOURS), np.array(list(world.COLOURS.values()), dtype=np.float64)
    out = []
    for im in images:
        a = np.asarray(im, dtype=np.float64).reshape(-1, 3)
        side = int(np.sqrt(len(a)))
        grid = a.reshape(side, side, 3)
        border = np.concatenate([grid[0], grid[-1], grid[:, 0], grid[:, -1]])
        bg = np.median(border, axis=0)
        fg = a[np.linalg.norm(a - bg, axis=1) > 60]
        mean = fg.mean(0) if len(fg) else bg
        out.append(names[int(np.linalg.norm(palette - mean, axis=1).argmin())])
    return np.array(out)


def binding_hits(clip, images, captions, swapped) -> np.ndarray:
    """Per image: does the CLIP score it higher with its caption than with the colours swapped?"""
    z = embed_images(clip, images).numpy()
    t, s = embed_texts(clip, captions).numpy(), embed_texts(clip, swapped).numpy()
    return (z * t).sum(1) > (z * s).sum(1)


def mean_pairwise_cosine(z: np.ndarray) -> float:
    """Mean cosine over distinct pairs of rows (unit-norm): 1 means n copies of one thing."""
    z = np.asarray(z, dtype=np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    g = z @ z.T
    n = len(z)
    return float((g.sum() - np.trace(g)) / (n * (n - 1)))


# ---------------------------------------------------------------------------------------------
# The routes
# ---------------------------------------------------------------------------------------------
def fit_ridge(clip, n: int = 4000, seed: int = 0, alpha: float = 1.0):
    """sklearn Ridge z_t -> z_i on n pairs of the training stream: the mean predictor, the baseline."""
    from sklearn.linear_model import Ridge

    from clipspace.train.prior import PairPool

    pool = PairPool(clip, n, seed=seed)
    return Ridge(alpha=alpha).fit(pool.z_t.numpy(), pool.z_i.numpy())


def route_embeddings(route: str, z_t: torch.Tensor, z_i: torch.Tensor, prior, ridge, seed: int = 0,
                     guidance: float | None = None) -> torch.Tensor:
    """The decoder's z for each caption by one route (unit-norm, or zero for 'zero')."""
    if route == "zero":
        return torch.zeros_like(z_i)
    if route == "z_t":
        return z_t
    if route == "ridge":
        return torch.nn.functional.normalize(torch.from_numpy(ridge.predict(z_t.numpy())).float(), dim=-1)
    if route == "prior":
        return prior.sample(z_t, n=1, seed=seed, guidance=guidance)
    if route == "true_z_i":
        return z_i
    raise ValueError(f"route={route!r}; use one of {ROUTES}")


def measure_routes(prior, decoder, clip, judge: _Judge, ridge, n_single: int, n_pair: int, steps: int,
                   seed: int = 0) -> dict:
    singles = world.single_objects(n_single)
    # the four phrasings in turn, as the training stream cycles them: "a red star", "a large red star", "... on a
    # black background", "a photo of ...". z_t of the phrasings that add words strays furthest from z_i.
    s_caps = [s.caption(i % 4) for i, s in enumerate(singles)]
    s_zt, s_zi = embed_texts(clip, s_caps), embed_images(clip, [s.render(clip.image_size) for s in singles])
    colours = np.array([s.objects[0].colour for s in singles])
    shapes = np.array([s.objects[0].shape for s in singles])
    pairs = world.colour_swap_pairs(n_pair)
    p_caps, p_swapped = [c for _, c, _ in pairs], [w for _, _, w in pairs]
    p_zt, p_zi = embed_texts(clip, p_caps), embed_images(clip, [s.render(clip.image_size) for s, _, _ in pairs])
    z_i_all = torch.cat([s_zi, p_zi])
    r, images = {}, {}
    for route in ROUTES:
        zs = route_embeddings(route, s_zt, s_zi, prior, ridge, seed)
        zp = route_embeddings(route, p_zt, p_zi, prior, ridge, seed + 1)
        z_all = torch.cat([zs, zp])
        r[f"{route}_cosine"] = float((z_all * z_i_all).sum(1).mean())
        r[f"{route}_mean_gap"] = float((z_all.mean(0) - z_i_all.mean(0)).norm())
        ims = decode_embeddings(decoder, torch.cat([zs, zp]), seed=seed, steps=steps)
        c, s, _ = judge(ims[:n_single])
        r[f"{route}_colour"], r[f"{route}_shape"] = float(np.mean(c == colours)), float(np.mean(s == shapes))
        r[f"{route}_colour_pixels"] = float(np.mean(pixel_colour(ims[:n_single]) == colours))
        r[f"{route}_binding"] = float(np.mean(binding_hits(clip, ims[n_single:], p_caps, p_swapped)))
        images[route] = ims
    # The judge on the held-out scenes themselves at the decoder's size: what "right" can reach.
    src = [s.render(decoder.image_size) for s in singles]
    c, s, _ = judge(src)
    r["judge_colour_on_sources"], r["judge_shape_on_sources"] = float(np.mean(c == colours)), float(np.mean(s == shapes))
    r["judge_binding_on_sources"] = float(np.mean(binding_hits(
        clip, [s.render(decoder.image_size) for s, _, _ in pairs], p_caps, p_swapped)))
    return r


# ---------------------------------------------------------------------------------------------
# Guidance, thresholding, diversity
# ---------------------------------------------------------------------------------------------
def _caption_set(n_captions: int) -> list[world.Scene]:
    """n_captions held-out single objects of distinct (colour, shape)."""
    seen, out = set(), []
    for s in world.single_objects(8 * n_captions):
        key = (s.objects[0].colour, s.objects[0].shape)
        if key not in seen:
            seen.add(key)
            out.append(s)
        if len(out) == n_captions:
            break
    return out


def _fidelity_diversity(clip, judge, images, colours, shapes, per: int) -> tuple[float, float, float]:
    c, s, z = judge(images)
    div = np.mean([mean_pairwise_cosine(z[i:i + per]) for i in range(0, len(z), per)])
    return float(np.mean(c == colours)), float(np.mean(s == shapes)), float(div)


def true_diversity(clip, scenes, per: int, size: int, seed: int = 0) -> tuple[float, float]:
    """Mean pairwise cosine of `per` true scenes per caption (same colour and shape, all else drawn),
    as CLIP image embeddings of the decoder-size renders, and of their z_i."""
    rng = np.random.default_rng(seed)
    img_div, z_div = [], []
    for s in scenes:
        o = s.objects[0]
        twins = [world.single_object(rng, shape=o.shape, colour=o.colour) for _ in range(per)]
        img_div.append(mean_pairwise_cosine(embed_images(clip, [t.render(size) for t in twins]).numpy()))
        z_div.append(mean_pairwise_cosine(embed_images(clip, [t.render(clip.image_size) for t in twins]).numpy()))
    return float(np.mean(img_div)), float(np.mean(z_div))


def guidance_curves(prior, decoder, clip, judge, n_captions: int, per: int, steps: int, seed: int = 0,
                    guidances=GUIDANCES, threshold_at: float = 8.0) -> dict:
    """Fidelity (factor accuracy) against diversity (mean pairwise cosine of a caption's decoded
    samples, lower is more diverse) as each guidance goes from 1 to 8, the other at its default;
    thresholding on and off at decoder guidance `threshold_at`; the z_t route's diversity."""
    scenes = _caption_set(n_captions)
    caps = [s.caption(0) for s in scenes]
    colours = np.repeat([s.objects[0].colour for s in scenes], per)
    shapes = np.repeat([s.objects[0].shape for s in scenes], per)
    z_t = embed_texts(clip, caps)
    rows = []
    for which, g in itertools.product(("prior", "decoder"), guidances):
        z = prior.sample(z_t, n=per, seed=seed, guidance=g if which == "prior" else None)
        ims = decode_embeddings(decoder, z, seed=seed, steps=steps, guidance=g if which == "decoder" else None)
        col, shp, div = _fidelity_diversity(clip, judge, ims, colours, shapes, per)
        rows.append({"guided": which, "guidance": g, "colour": col, "shape": shp, "image_diversity": div,
                     "z_diversity": float(np.mean([mean_pairwise_cosine(z[i:i + per].numpy())
                                                   for i in range(0, len(z), per)]))})
    out = {"guidance_curve": rows,
           "thresholding": thresholding_numbers(prior, decoder, clip, judge, n_captions, per, steps, seed, threshold_at)}
    ims = decode_embeddings(decoder, z_t.repeat_interleave(per, 0), seed=seed, steps=steps)
    out["z_t_image_diversity"] = _fidelity_diversity(clip, judge, ims, colours, shapes, per)[2]
    out["true_image_diversity"], out["true_z_diversity"] = true_diversity(clip, scenes, per, decoder.image_size, seed)
    return out


def thresholding_numbers(prior, decoder, clip, judge, n_captions: int, per: int, steps: int, seed: int = 0,
                         at: float = 8.0) -> dict:
    """Saturated share of pixel channels and the factors judged, thresholding off and on, at decoder guidance `at`."""
    from clipspace.unclip.latents import pixels_to_images

    scenes = _caption_set(n_captions)
    colours = np.repeat([s.objects[0].colour for s in scenes], per)
    shapes = np.repeat([s.objects[0].shape for s in scenes], per)
    z = prior.sample(embed_texts(clip, [s.caption(0) for s in scenes]), n=per, seed=seed)
    out = {"decoder_guidance": at}
    for on, name in ((False, "off"), (True, "on")):
        px = decode_embeddings(decoder, z, seed=seed, steps=steps, guidance=at, thresholding=on, output="pt")
        col, shp, _ = _fidelity_diversity(clip, judge, pixels_to_images(px), colours, shapes, per)
        out.update({f"saturated_{name}": saturation(px), f"colour_{name}": col, f"shape_{name}": shp})
    return out


# ---------------------------------------------------------------------------------------------
# Reranking
# ---------------------------------------------------------------------------------------------
def rerank_curve(prior, decoder, clip, judge, n_captions: int, n_max: int, steps: int, ns=RERANK_NS,
                 seed: int = 0) -> list[dict]:
    """For each N: the factor accuracy of the CLIP-top-ranked of N samples, and of a random pick (the
    mean over the N), averaged over disjoint groups of N in n_max samples per caption. Single
    objects: colour and shape both right (CLIP judge), and colour read from pixels; two objects: binding."""
    ns = [k for k in ns if k <= n_max]
    singles = _caption_set(n_captions)
    pairs = world.colour_swap_pairs(n_captions)
    tasks = [(s.caption(0), None, s.objects[0]) for s in singles] + [(c, w, None) for _, c, w in pairs]
    acc = {(kind, k, pick): [] for kind in ("single", "single_pixels", "pair") for k in ns for pick in ("top", "random")}
    agree = []
    for i, (cap, swapped, obj) in enumerate(tasks):
        ims = decode_embeddings(decoder, prior.sample([cap], n=n_max, seed=seed + i, clip=clip), seed=seed + i,
                                steps=steps)
        if obj is not None:
            c, s, _ = judge(ims)
            hits = {"single": (c == obj.colour) & (s == obj.shape), "single_pixels": pixel_colour(ims) == obj.colour}
            agree.append(np.mean((c == obj.colour) == hits["single_pixels"]))
        else:
            hits = {"pair": binding_hits(clip, ims, [cap] * n_max, [swapped] * n_max)}
        scores = rerank(clip, ims, cap).scores
        for kind, h in hits.items():
            for k in ns:
                for g in range(n_max // k):
                    sl = slice(g * k, (g + 1) * k)
                    acc[(kind, k, "top")].append(float(h[sl][int(np.argmax(scores[sl]))]))
                    acc[(kind, k, "random")].append(float(np.mean(h[sl])))
    rows = [{"N": k, **{f"{kind}_{pick}": float(np.mean(acc[(kind, k, pick)]))
                        for kind in ("single", "single_pixels", "pair") for pick in ("top", "random")}} for k in ns]
    for r in rows:
        r["judge_pixel_colour_agreement"] = float(np.mean(agree)) if agree else float("nan")
    return rows


def timings(prior, decoder, clip, repeats: int = 3) -> dict:
    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    from clipspace.unclip.generate import generate

    z_t = embed_texts(clip, ["a red square"])
    return {"prior_sample_25_steps_s": best(lambda: prior.sample(z_t, steps=25)),
            "caption_to_image_s": best(lambda: generate(prior, decoder, clip, "a red square", n=1)),
            "torch_threads": torch.get_num_threads()}


def measure(prior, decoder, clip, n_single: int = 48, n_pair: int = 24, steps: int = 25, curve_captions: int = 3,
            per: int = 4, rerank_captions: int = 1, rerank_max: int = 64, ridge_n: int = 4000, seed: int = 0,
            with_timings: bool = True) -> dict:
    judge = _Judge(clip)
    t0 = time.perf_counter()
    ridge = fit_ridge(clip, ridge_n)
    out = {"sizes": {"n_single": n_single, "n_pair": n_pair, "decoder_steps": steps, "prior_steps": 25,
                     "curve_captions": curve_captions, "samples_per_caption": per, "rerank_captions": rerank_captions,
                     "rerank_max": rerank_max, "ridge_pairs": ridge_n, "prior_guidance": prior.guidance,
                     "decoder_guidance": float(decoder.config.get("guidance", 1.0))}}
    out["routes"] = measure_routes(prior, decoder, clip, judge, ridge, n_single, n_pair, steps, seed)
    out["seconds_routes"] = round(time.perf_counter() - t0, 1)
    out.update(guidance_curves(prior, decoder, clip, judge, curve_captions, per, steps, seed))
    out["seconds_curves"] = round(time.perf_counter() - t0, 1)
    out["rerank"] = rerank_curve(prior, decoder, clip, judge, rerank_captions, rerank_max, steps, seed=seed)
    out["seconds_rerank"] = round(time.perf_counter() - t0, 1)
    if with_timings:
        out["timings"] = timings(prior, decoder, clip)
    return out


def measure_pairs(prior, clip, pairs, decoder=None, steps: int = 25, seed: int = 0, max_pairs: int = 256) -> dict:
    """The numbers that need no factor judges, on held-out (image, caption) pairs (any pair source).
    `*_wrong` pair each sample with another pair's z_i: the baseline a caption-blind prior would reach."""
    from clipspace.train.data import PairSet
    from clipspace.unclip.generate import decode_embeddings

    data = PairSet.from_source(pairs, clip)
    z_t, z_i = data.z_t[:max_pairs], data.z_i[:max_pairs]
    if len(z_i) < 2:
        raise ValueError(f"{pairs}: measuring needs 2 or more readable pairs, found {len(z_i)}")
    z = prior.sample(z_t, n=1, seed=seed)
    mean = torch.nn.functional.normalize(prior.transformer.clip_mean.detach().float().reshape(1, -1), dim=-1)
    wrong = z_i.roll(1, dims=0)
    r = {"source": str(pairs), "pairs": len(z_i), "skipped": len(data.failures),
         "judges": "No factor judges: your pairs have no known factors, so only CLIP cosines are reported.",
         "prior_guidance": prior.guidance,
         "prior_cosine": float((z * z_i).sum(1).mean()), "prior_cosine_wrong": float((z * wrong).sum(1).mean()),
         "z_t_cosine": float((z_t * z_i).sum(1).mean()),
         "train_mean_cosine": float((mean * z_i).sum(1).mean()),  # one z for every caption: the mean predictor
         "prior_mean_gap": float((z.mean(0) - z_i.mean(0)).norm()),
         "z_t_mean_gap": float((z_t.mean(0) - z_i.mean(0)).norm())}
    if decoder is not None:
        ims = decode_embeddings(decoder, z, seed=seed, steps=steps)
        e = torch.from_numpy(np.asarray(clip.encode_images(ims, cache=False, progress=False)))
        r["decoded_cosine_to_z_i"] = float((e * z_i).sum(1).mean())
        r["decoded_cosine_to_caption"] = float((e * z_t).sum(1).mean())
        r["decoded_cosine_to_wrong_caption"] = float((e * z_t.roll(1, dims=0)).sum(1).mean())
    return r


# ---------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------
def verdicts(r: dict) -> list[str]:
    """One line per target: met or not, with the numbers."""
    rt = r["routes"]
    lines = []
    for factor, target in (("colour", TARGETS["prior_colour"]), ("shape", TARGETS["prior_shape"])):
        p, ceil, zt = rt[f"prior_{factor}"], rt[f"true_z_i_{factor}"], rt[f"z_t_{factor}"]
        ok = p >= target and p >= ceil - 0.05
        lines.append(f"- prior {factor} {p:.3f} (target >= {target}, true z_i {ceil:.3f}, z_t {zt:.3f}): "
                     + ("met" if ok else "**not met**"))
    above = max(rt["prior_colour"] - rt["z_t_colour"], rt["prior_shape"] - rt["z_t_shape"])
    lines.append(f"- clearly above the z_t route on at least one factor: {'met' if above >= 0.05 else '**not met**'} "
                 f"(largest margin {above:+.3f})")
    return lines


def curve_rows(history_file: Path) -> list[dict]:
    """The checkpoints' held-out numbers from a training run's history.jsonl."""
    rows = []
    for line in Path(history_file).read_text().splitlines():
        h = json.loads(line)
        if "val_loss" in h:
            rows.append({"step": h["step"], "minutes": round(h["seconds"] / 60, 1), "val_loss": h["val_loss"],
                         "val_cosine": h["val_cosine"], "val_mean_gap": h["val_mean_gap"]})
    return rows


CARD = """# prior-tiny: the offline unCLIP prior

A diffusion prior (diffusers `PriorTransformer`, as Karlo's and Kandinsky's) from the text embedding
z_t of the offline default CLIP (`clipspace-tiny`, 128-d) to its image embedding z_i, trained on the
shapes world's captions and scenes. It predicts the clean z_i (x0), normalised by the training
pool's per-dimension mean and std (`clip_mean` / `clip_std`, stored with the weights); z_t was
zeroed for 10% of training (classifier-free guidance; null = zeros). Load it with
`clipspace.load_prior(clip=load_clip())`; `clipspace.generate(prior, decoder, clip, "a red square")`
draws images. Measured by `python -m clipspace.train.measure_prior` ({minutes:.1f} minutes); the numbers
are in `metrics.json`, the training curve in `curve.json`.

## Architecture (`clipspace/model_configs/prior-tiny.json`)

```json
{config}
```

{params:.2f}M parameters; weights stored as fp16 safetensors ({size_kb:.0f} kB; clip_mean / clip_std
in fp32), loaded into fp32. Sampling: DDIM, 25 steps, eta 0 (deterministic per seed), guidance
{prior_guidance} by default.

## Training

{train}

## Targets (single-object captions, decoded, judged zero-shot by the default CLIP)

{verdicts}

## The five routes (held-out: {n_single} single-object and {n_pair} two-object captions; decoder {steps} DDIM steps, guidance {decoder_guidance})

Single-object captions take the world's four phrasings in turn ("a red star", "a large red star",
"a red star on a black background", "a photo of a red star"). "cosine": of z to the true z_i; "mean
gap": the distance between the mean of z and the mean of the true z_i (the modality gap). Colour and shape are judged on the single objects by the CLIP; "colour
(pixels)" reads the colour from the decoded pixels instead; binding: the CLIP scores the decoded
two-object image higher with its caption than with the two colours swapped (chance 0.5). The judge
on the held-out scenes themselves (32 px): colour {judge_colour:.3f}, shape {judge_shape:.3f},
binding {judge_binding:.3f}.

{routes}

## Guidance: fidelity against diversity ({curve_captions} captions x {per} samples)

Diversity is the mean pairwise cosine of one caption's decoded samples (CLIP image embeddings; lower
is more diverse); true scenes with the same colour and shape: {true_div:.3f} (their z_i: {true_z_div:.3f}).
The z_t route, one z decoded from {per} noises: {zt_div:.3f}. "z diversity": the same for the prior's z.

{guidance}

## Dynamic thresholding at decoder guidance {th_g}

Share of pixel channels at or past the ends of [-1, 1] (the world never paints those), and the
factors judged, with Imagen's dynamic thresholding (diffusers' DDIMScheduler, p = 99.5, s <= 1.5) off and on:

{threshold}

## CLIP reranking (DALL-E 1): the top-ranked of N samples against a random pick

{rerank_captions} single-object and {rerank_captions} two-object captions, {rerank_max} samples each, disjoint groups of N.
"single": colour and shape both right (CLIP judge); "single_pixels": colour read from pixels; "pair":
binding. The CLIP judge's colour agrees with the pixels' on {agreement:.3f} of the single-object samples.

{rerank}

## Curve over training (held-out {curve_n} captions; prior sampled at 25 steps)

{curve}

## Timings (median of 3, {threads} torch threads, 2 CPU cores shared with other work)

{timings}
{notes}"""


def write_card(ship: Path, r: dict, train_dir: Path | None, minutes: float, notes: str = "") -> None:
    prior = load_prior(ship)
    rt = r["routes"]
    routes = [{"route": k, **{m: rt[f"{k}_{m}"] for m in ("cosine", "mean_gap", "colour", "shape", "colour_pixels",
                                                          "binding")}} for k in ROUTES]
    train = "(trained elsewhere: no run directory given)"
    curve = []
    if train_dir is not None and (train_dir / "history.jsonl").exists():
        args = json.loads((train_dir / "train_args.json").read_text())
        hist = [json.loads(x) for x in (train_dir / "history.jsonl").read_text().splitlines() if x]
        curve = curve_rows(train_dir / "history.jsonl")
        train = (f"    python -m clipspace.train prior --clip default --steps {args['steps']} --batch-size "
                 f"{args['batch_size']} --lr {args['lr']} --warmup {args['warmup']} --pool {args['pool']} "
                 f"--seed {args['seed']} --checkpoint-every {args['checkpoint_every']} --threads {args['threads']} "
                 f"--out {args['out']}\n\n"
                 f"{hist[-1]['step']} steps of {args['batch_size']} in {hist[-1]['seconds'] / 60:.1f} minutes on one "
                 f"thread (2 CPU cores shared with other work), on a pool of {args['pool']} (scene, caption) pairs of "
                 f"the training stream embedded once; AdamW, cosine learning rate, EMA of the weights (decay "
                 f"{args['ema_decay']}, what is saved). Final held-out loss {hist[-1].get('val_loss', float('nan')):.4f}; "
                 f"held-out cosine of a sample to the true z_i {hist[-1].get('val_cosine', float('nan')):.3f}, "
                 f"mean gap {hist[-1].get('val_mean_gap', float('nan')):.3f}.")
    th = r["thresholding"]
    rows_th = [{"thresholding": on, "saturated": th[f"saturated_{on}"], "colour": th[f"colour_{on}"],
                "shape": th[f"shape_{on}"]} for on in ("off", "on")]
    s = r["sizes"]
    (ship / "MODEL_CARD.md").write_text(CARD.format(
        minutes=minutes, config=json.dumps(prior.config, indent=2),
        params=sum(p.numel() for p in prior.transformer.parameters()) / 1e6,
        size_kb=(ship / "prior.safetensors").stat().st_size / 1e3, prior_guidance=prior.guidance, train=train,
        verdicts="\n".join(verdicts(r)), n_single=s["n_single"], n_pair=s["n_pair"], steps=s["decoder_steps"],
        decoder_guidance=s["decoder_guidance"], judge_colour=rt["judge_colour_on_sources"],
        judge_shape=rt["judge_shape_on_sources"], judge_binding=rt["judge_binding_on_sources"],
        routes=markdown_table(routes), curve_captions=s["curve_captions"], per=s["samples_per_caption"],
        true_div=r["true_image_diversity"], true_z_div=r["true_z_diversity"], zt_div=r["z_t_image_diversity"],
        guidance=markdown_table(r["guidance_curve"]), th_g=th["decoder_guidance"], threshold=markdown_table(rows_th),
        rerank_captions=s["rerank_captions"], rerank_max=s["rerank_max"],
        agreement=r["rerank"][0]["judge_pixel_colour_agreement"],
        rerank=markdown_table([{k: v for k, v in row.items() if k != "judge_pixel_colour_agreement"}
                               for row in r["rerank"]]),
        curve_n=json.loads((train_dir / "train_args.json").read_text()).get("held_out", 256) if train_dir else "?",
        curve=markdown_table(curve), threads=r.get("timings", {}).get("torch_threads", "?"),
        timings=markdown_table([{"measure": k, "value": v, "target": {"prior_sample_25_steps_s": "<= 0.1",
                                                                      "caption_to_image_s": "<= 1"}.get(k, "")}
                                for k, v in r.get("timings", {}).items()]),
        notes=f"\n## Notes\n\n{notes.strip()}\n" if notes.strip() else ""))
    if curve:
        (ship / "curve.json").write_text(json.dumps(curve, indent=1) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m clipspace.train.measure_prior", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, help="prior directory; default: the shipped prior")
    p.add_argument("--decoder", type=Path, help="decoder directory; default: the shipped decoder")
    p.add_argument("--clip", default=None, help="CLIP directory or name (default: the offline default)")
    p.add_argument("--pretrained", "--clip-pretrained", dest="clip_pretrained", default=None,
                   help="open_clip pretrained tag or checkpoint file, if --clip is an architecture")
    p.add_argument("--pairs", default=None,
                   help="measure on these held-out pairs of your own (folder with .txt captions, CSV/TSV, parquet) "
                        "instead of world captions (no factor judges; --decoder optional)")
    p.add_argument("--n-single", type=int, default=48, help="held-out single-object captions (default %(default)s)")
    p.add_argument("--n-pair", type=int, default=24, help="held-out two-object captions (default %(default)s)")
    p.add_argument("--steps", type=int, default=25, help="decoder DDIM steps (default %(default)s)")
    p.add_argument("--curve-captions", type=int, default=3, help="captions for the guidance curves (default %(default)s)")
    p.add_argument("--per", type=int, default=4, help="samples per caption for the curves (default %(default)s)")
    p.add_argument("--rerank-captions", type=int, default=1,
                   help="single- and two-object captions each for reranking (default %(default)s)")
    p.add_argument("--rerank-max", type=int, default=64, help="samples per caption for reranking (default %(default)s)")
    p.add_argument("--train-dir", type=Path, default=None,
                   help="the training run (train_args.json, history.jsonl) for the card (default: --weights)")
    p.add_argument("--json", type=Path, help="write the numbers here")
    p.add_argument("--ship", type=Path, help="export --weights as fp16 to this directory and write its card there")
    p.add_argument("--notes", type=Path, help="a markdown file of notes to end the card with")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    clip = load_clip(None if a.clip in (None, "default") else a.clip, pretrained=a.clip_pretrained)
    if a.pairs:
        return _main_pairs(a, clip, t0)
    if a.ship:
        from clipspace.train.prior import export_fp16

        if a.weights is None:
            raise SystemExit("--ship needs --weights (the training run's directory)")
        export_fp16(a.weights, a.ship)
    src = a.ship or a.weights
    prior = load_prior(src, clip=clip) if src else load_prior(clip=clip)
    decoder = load_decoder(a.decoder, clip=clip) if a.decoder else load_decoder(clip=clip)
    result = measure(prior, decoder, clip, a.n_single, a.n_pair, a.steps, a.curve_captions, a.per,
                     a.rerank_captions, a.rerank_max)
    result["measure_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    if a.ship:
        (a.ship / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        write_card(a.ship, result, a.train_dir or a.weights, result["measure_seconds"] / 60,
                   a.notes.read_text() if a.notes else "")
    print("\n".join(verdicts(result)))


def _main_pairs(a, clip, t0: float) -> None:
    """measure_prior --pairs: any prior, held-out pairs, the numbers that need no judges."""
    from clipspace.train.cards import write_card

    if a.weights is None:
        raise SystemExit("--pairs needs --weights (the prior directory to measure)")
    prior = load_prior(a.weights, clip=clip)
    decoder = load_decoder(a.decoder, clip=clip) if a.decoder else None
    r = measure_pairs(prior, clip, a.pairs, decoder, a.steps)
    r["measure_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(r, indent=2))
    if a.json:
        a.json.write_text(json.dumps(r, indent=2) + "\n")
    data_file = a.weights / "data.json"
    dest = a.weights
    if a.ship:
        from clipspace.train.prior import export_fp16

        dest = export_fp16(a.weights, a.ship)
    if data_file.is_file() or a.ship:
        (dest / "metrics.json").write_text(json.dumps(r, indent=2) + "\n")
        data = json.loads(data_file.read_text()) if data_file.is_file() else {}
        write_card(a.weights, "prior", data, r, path=dest / "MODEL_CARD.md")


if __name__ == "__main__":
    main()
