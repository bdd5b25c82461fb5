"""The unCLIP prior and caption-to-image generation: one caption's prior sample (25 steps), a caption to
one decoded image, and CLIP reranking of 16 candidates, each against a peer timed in the same rounds."""
from __future__ import annotations

import torch

from . import subjects
from .harness import goal_check, interleave, paired_ratio, summarize

GOALS_S = {"prior": 0.1, "image": 1.0, "rerank": 10.0}  # issue 15: seconds on 2 CPU cores


def offline_prior(clip):
    """(prior, note): `load_prior()`, or the prior-tiny config with seeded random weights."""
    from clipspace.errors import PriorNotFoundError
    from clipspace.unclip.prior import build_prior, load_prior

    try:
        return load_prior(clip=clip), "offline prior `load_prior()` (trained prior-tiny weights)"
    except PriorNotFoundError:
        prior = build_prior(seed=0)
        prior.clip = clip
        return prior, ("prior-tiny config with RANDOM weights: `load_prior()`'s weights were not in "
                       "clipspace/weights/prior-tiny/ yet (speed does not depend on them)")


def run(quick: bool = False) -> dict:
    from clipspace.unclip.generate import generate, rerank
    from clipspace.unclip.latents import embed_texts, random_noise

    clip, clip_note = subjects.offline_clip()
    decoder, dec_note = subjects.offline_decoder(clip)
    prior, prior_note = offline_prior(clip)
    steps = 10 if quick else 25
    repeat = 2 if quick else 5
    caption = "a red square to the left of a blue circle"
    z_t = embed_texts(clip, [caption])
    x = random_noise(decoder, 1, seed=0)
    z = torch.nn.functional.normalize(torch.randn(1, decoder.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    g_dec = float(decoder.config.get("guidance", 1.0))

    def eager_sample():  # the same loop through diffusers' own forward, no trace: the peer of the traced one
        prior.traced = False
        try:
            return prior.sample(z_t, steps=steps)
        finally:
            prior.traced = True

    def rerank16():
        images = generate(prior, decoder, clip, caption, n=16, steps=steps, prior_steps=steps)
        return rerank(clip, images, caption)

    names = {"prior": f"prior sample, 1 caption, {steps} steps (traced)",
             "prior_eager": f"prior sample, 1 caption, {steps} steps (diffusers eager forward)",
             "unet_step": "one decoder UNet step, 1 image, guided",
             "image": f"caption to 1 decoded image ({steps} prior + {steps} decoder steps)",
             "decode16": f"decode 16 prior samples ({steps} steps), no reranking",
             "rerank": f"16 candidates: prior, decode ({steps} steps) and CLIP rerank"}
    contenders = {
        names["prior"]: lambda: prior.sample(z_t, steps=steps),
        names["prior_eager"]: eager_sample,
        names["unet_step"]: lambda: decoder.predict(x, torch.tensor(500), z, g_dec),
        names["image"]: lambda: generate(prior, decoder, clip, caption, n=1, steps=steps, prior_steps=steps),
        names["decode16"]: lambda: generate(prior, decoder, clip, caption, n=16, steps=steps, prior_steps=steps),
        names["rerank"]: rerank16,
    }
    times = interleave(contenders, repeat=repeat, warmup=1)
    rows, goals = [], []
    for key, name in names.items():
        s = summarize(times[name])
        goal = GOALS_S.get(key)
        met = goal_check(s["median"], goal, higher_is_better=False) if goal and not quick else None
        rows.append({"what": name, "seconds": s, "median_ms": s["median"] * 1e3,
                     "goal": f"≤ {goal:g} s" if goal else "", "met": met})
        if goal and not quick:
            goals.append({"figure": name, "goal": f"≤ {goal:g} s", "value": s["median"], "met": met, "why": ""})
    ratios = {
        "traced_vs_eager": paired_ratio(times[names["prior_eager"]], times[names["prior"]]),
        "prior_in_unet_steps": paired_ratio(times[names["prior"]], times[names["unet_step"]]),
        "rerank_vs_decode_only": paired_ratio(times[names["rerank"]], times[names["decode16"]]),
    }
    notes = [f"prior: {prior_note}; decoder: {dec_note}; CLIP: {clip_note}",
             f"{prior!r}; prior guidance {prior.guidance}, decoder guidance {g_dec}; {torch.get_num_threads()} torch threads",
             f"the traced prior loop is {ratios['traced_vs_eager']['median']:.2f}× faster than the same loop "
             "through diffusers' eager PriorTransformer forward (paired per round)",
             f"one prior sample costs {ratios['prior_in_unet_steps']['median']:.1f} guided decoder UNet steps",
             f"16 candidates with CLIP reranking take {ratios['rerank_vs_decode_only']['median']:.2f}× "
             "the time of drawing them without it",
             f"{repeat} interleaved rounds after one warm-up round."]
    return {"title": "unCLIP prior and generation", "status": "ok", "notes": notes, "goals": goals,
            "tables": [{"caption": "", "columns": [["what", "what"], ["seconds", "seconds"], ["median_ms", "median ms"],
                                                   ["goal", "goal"], ["met", "met"]], "rows": rows}],
            "data": {"seconds": times, "ratios": ratios}}
