"""Measure a CLIP model on held-out world scenes and write the offline default's model card.

    python -m clipspace.train.measure_clip                      # the shipped default, prints the numbers
    python -m clipspace.train.measure_clip --weights runs/clip-v1 --curve runs/clip-v1/checkpoints \
        --card clipspace/weights/clipspace-tiny/MODEL_CARD.md

Every number is zero-shot: text prompts against image embeddings, no fitted head. The probe scenes
come from `clipspace.world`'s probe generators, seeded far from the training stream.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from clipspace import world
from clipspace.clip import ClipModel
from clipspace.factory import load_clip
from clipspace.probes.zero_shot import WORLD_TEMPLATES, build_classifier

TARGETS = {"colour": 0.99, "shape": 0.97, "relation": 0.90, "count": 0.90, "reading": 0.90}


def _accuracy(clip: ClipModel, images, labels, classnames, templates) -> tuple[float, np.ndarray]:
    weights = build_classifier(clip, classnames, templates)
    pred = np.asarray(clip.encode_images(images)) @ weights
    idx = pred.argmax(1)
    return float(np.mean(np.array(classnames)[idx] == np.array(labels))), idx


def _pairwise(clip: ClipModel, images, true_captions, other_captions) -> float:
    """Share of images whose true caption scores above the alternative (chance 0.5)."""
    z = np.asarray(clip.encode_images(images))
    t = np.asarray(clip.encode_texts(true_captions))
    o = np.asarray(clip.encode_texts(other_captions))
    return float(np.mean((z * t).sum(1) > (z * o).sum(1)))


def measure(clip: ClipModel, n: int = 500) -> dict:
    """All of the card's numbers for one model, on n held-out scenes per probe."""
    size = clip.image_size
    r: dict[str, float] = {}
    singles = world.single_objects(n)
    imgs = [s.render(size) for s in singles]
    r["colour"], _ = _accuracy(clip, imgs, [s.objects[0].colour for s in singles], list(world.COLOURS),
                               WORLD_TEMPLATES["colour"])
    r["shape"], _ = _accuracy(clip, imgs, [s.objects[0].shape for s in singles], list(world.SHAPES),
                              WORLD_TEMPLATES["shape"])

    rel = world.relation_scenes(n)
    mirrored = [dataclasses.replace(s, objects=(dataclasses.replace(s.objects[0], x=s.objects[1].x, y=s.objects[1].y),
                                                dataclasses.replace(s.objects[1], x=s.objects[0].x, y=s.objects[0].y)))
                for s in rel]
    r["relation"] = _pairwise(clip, [s.render(size) for s in rel], [s.caption(0) for s in rel],
                              [m.caption(0) for m in mirrored])

    counts = world.count_scenes(n)
    cz = np.asarray(clip.encode_images([s.render(size) for s in counts]))
    options = [[dataclasses.replace(s, objects=s.objects[:1] * k).caption(0) for k in (1, 2, 3)] for s in counts]
    ct = np.asarray(clip.encode_texts([c for opts in options for c in opts])).reshape(len(counts), 3, -1)
    r["count"] = float(np.mean(np.einsum("nd,nkd->nk", cz, ct).argmax(1) + 1 == np.array([s.count for s in counts])))

    words = world.word_scenes(max(n, len(world.WORDS)))
    r["reading"], _ = _accuracy(clip, [s.render(size) for s in words], [s.text.word for s in words], list(world.WORDS),
                                WORLD_TEMPLATES["word"])

    typo = world.typographic_scenes(n)
    clean = [dataclasses.replace(s, text=None).render(size) for s in typo]
    attacked = [s.render(size) for s in typo]
    truth = [s.objects[0].shape for s in typo]
    r["typographic_clean"], _ = _accuracy(clip, clean, truth, list(world.SHAPES), WORLD_TEMPLATES["shape"])
    r["typographic_attacked"], idx = _accuracy(clip, attacked, truth, list(world.SHAPES), WORLD_TEMPLATES["shape"])
    r["typographic_flip_rate"] = float(np.mean(np.array(world.SHAPES)[idx] == np.array([s.text.word for s in typo])))

    swaps = world.colour_swap_pairs(n)
    r["colour_swap_binding"] = _pairwise(clip, [s.render(size) for s, _, _ in swaps], [a for _, a, _ in swaps],
                                         [b for _, _, b in swaps])

    mixed = world.mixed_scenes(n)
    caps = [s.caption(0) for s in mixed]
    sim = np.asarray(clip.encode_images([s.render(size) for s in mixed])) @ np.asarray(clip.encode_texts(caps)).T
    # a retrieved caption that reads the same as the true one counts (the world repeats simple scenes)
    r["retrieval_top1"] = float(np.mean([caps[j] == caps[i] for i, j in enumerate(sim.argmax(1))]))
    return {k: round(v, 4) for k, v in r.items()}


def curve(checkpoint_dir: Path, n: int = 200) -> list[dict]:
    """The numbers at each saved checkpoint, against training time."""
    rows = []
    for ckpt in sorted(checkpoint_dir.glob("step*.safetensors")):
        meta = json.loads(ckpt.with_suffix(".json").read_text())
        clip = load_clip("clipspace-tiny", pretrained=str(ckpt))
        rows.append({"step": meta["step"], "minutes": round(meta["seconds"] / 60, 1), **measure(clip, n)})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows of dicts as a Markdown table (floats to 3 places), for the model cards."""
    if not rows:
        return "(not measured)"
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(out)


CARD = """# clipspace-tiny: the offline default CLIP

A tiny open_clip model trained by clipspace on its shapes world (`clipspace.world`), so that every
notebook runs offline and every probe has ground truth. It is not a general image model: it knows
{n_shapes} shapes, {n_colours} colours, three sizes, four relations, counts of one to three and {n_words}
written words, on three plain backgrounds.

## Architecture (`clipspace/model_configs/clipspace-tiny.json`, built by open_clip's factory)

```json
{config}
```

A ModifiedResNet image tower (layers [1,1,1,1], width 24, attention pooling; 64 px input) and a
3-layer, 128-wide text transformer with open_clip's standard tokenizer (context 32). {params:.1f}M
parameters, {token_share:.0%} of them the token table of the standard 49,408-token vocabulary. Weights
ship as fp16 safetensors ({size_mb:.1f} MB); the fp32 and fp16 numbers below agree.

## Data recipe

Scenes rendered on the fly at 64 px (`world.training_pairs`): 25% single objects, 20% single objects
with a written word under them, 20% two objects separated along one axis (relation captions), 20%
two or three identical objects (count captions), 15% a word alone. Each batch is half minimal pairs:
every scene sits beside a copy with one factor changed (colours swapped, relation mirrored, another
word, shape, colour or count) and captions are unique within a batch, so open_clip's ClipLoss sees
hard negatives for binding, reading and counting. Four caption phrasings.

## Training

```
{command}
```

{train_summary}

## Numbers (held-out probe scenes, zero-shot, `python -m clipspace.train.measure_clip`)

{final_table}

Chance: colour 1/8, shape 1/6, relation 1/2, count 1/3, reading 1/{n_words}, binding 1/2.
The typographic rows classify the shape of single objects labelled with the name of another
shape: clean (label removed), attacked, and the share of attacked predictions that equal the word.

## Curve against training time (n={curve_n} scenes per probe at each checkpoint)

{curve_table}

## History

{history}
"""


def write_card(path: Path, final: dict, final_fp32: dict | None, curve_rows: list[dict], train_dir: Path,
               history: str, curve_n: int = 200) -> None:
    import open_clip

    cfg = open_clip.get_model_config("clipspace-tiny")
    model = open_clip.create_model("clipspace-tiny", pretrained=None)
    n_params = sum(p.numel() for p in model.parameters())
    args = json.loads((train_dir / "train_args.json").read_text())
    hist = [json.loads(line) for line in (train_dir / "history.jsonl").read_text().splitlines() if line]
    command = (f"python -m clipspace.train clip --steps {args['steps']} --batch-size {args['batch_size']} "
               f"--lr {args['lr']} --seed {args['seed']} --checkpoint-every {args['checkpoint_every']} --out runs/clip")
    # The machine was shared, so the wall time overstates the recipe: also give the fastest 250-step stretch.
    secs = np.array([h["seconds"] for h in hist])
    fastest = min((secs[i + 250] - secs[i]) / 250 for i in range(0, len(secs) - 250, 50)) if len(secs) > 250 else None
    summary = (f"{hist[-1]['step']} steps of {args['batch_size']} in {hist[-1]['seconds'] / 60:.1f} minutes on 2 CPU "
               f"cores (AMD EPYC, bf16 autocast), shared with other work; final loss {hist[-1]['loss']:.3f}."
               + (f" Its fastest stretch ran at {fastest:.2f} s/step, {fastest * hist[-1]['step'] / 60:.0f} minutes "
                  f"for the whole run on 2 uncontended cores." if fastest else ""))
    rows = [{"probe": k, "value": v, **({"fp32": final_fp32[k]} if final_fp32 else {}),
             "target": TARGETS.get(k, "report")} for k, v in final.items()]
    weights = path.parent / "open_clip_model.safetensors"
    path.write_text(CARD.format(
        n_shapes=len(world.SHAPES), n_colours=len(world.COLOURS), n_words=len(world.WORDS),
        config=json.dumps(cfg, indent=2), params=n_params / 1e6,
        token_share=model.token_embedding.weight.numel() / n_params,
        size_mb=weights.stat().st_size / 1e6 if weights.exists() else float("nan"),
        command=command, train_summary=summary, final_table=markdown_table(rows),
        curve_n=curve_n, curve_table=markdown_table(curve_rows), history=history))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m clipspace.train.measure_clip", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="model directory (open_clip local-dir layout); default: the shipped model")
    p.add_argument("-n", type=int, default=500, help="held-out scenes per probe (default %(default)s)")
    p.add_argument("--curve", type=Path, help="checkpoint directory: also measure every checkpoint")
    p.add_argument("--curve-n", type=int, default=200, help="scenes per probe at each checkpoint (default %(default)s)")
    p.add_argument("--json", type=Path, help="write the numbers here")
    p.add_argument("--ship", type=Path, help="export --weights as fp16 to this directory and write its MODEL_CARD.md")
    p.add_argument("--history", default="", help="text for the card's history section")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    if a.ship:
        from clipspace.train.clip import export_fp16

        export_fp16(Path(a.weights), a.ship)
    clip = load_clip(str(a.ship or a.weights)) if (a.ship or a.weights) else load_clip()
    result = {"final": measure(clip, a.n)}
    if a.ship:
        result["final_fp32"] = measure(load_clip(str(a.weights)), a.n)
    if a.curve:
        result["curve"] = curve(a.curve, a.curve_n)
    result["measure_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    if a.ship:
        (a.ship / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        write_card(a.ship / "MODEL_CARD.md", result["final"], result.get("final_fp32"), result.get("curve", []),
                   Path(a.weights), a.history, a.curve_n)
    print("\n" + markdown_table([{"probe": k, "value": v, "target": TARGETS.get(k, "report")}
                         for k, v in result["final"].items()]))


if __name__ == "__main__":
    main()
