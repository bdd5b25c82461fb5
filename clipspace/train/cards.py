"""Model cards for decoders and priors trained on your own data (`--images` / `--pairs`).

The offline models' cards (`measure_decoder.write_card`, `measure_prior.write_card`) are measured
against the shapes world's factors; a model of your own images has no such judges, so its card says
what it was trained on and with which CLIP, the run's curve, and (once `measure_decoder --images` or
`measure_prior --pairs` has run on a held-out folder) what can be measured without them.
"""
from __future__ import annotations

import json
from pathlib import Path

from clipspace.train.measure_clip import markdown_table

KINDS = {"decoder": ("decoder_config.json", "decoder.safetensors"), "prior": ("prior_config.json", "prior.safetensors")}

CARD = """# {kind} for {clip_model} ({embed_dim}-d)

A {what} conditioned on the image embeddings of the CLIP `{clip_model}`{pretrained} (weights
`{weights_id}`), trained by `python -m clipspace.train {kind}` on your own data, not on the shapes
world. Load it with `{load}`: the loader checks the CLIP's name and embedding size.

## Data

{data}

## Architecture

```json
{config}
```

{params:.2f}M parameters.

## Training

{commands}

{summary}

{curve}

## Measured

{measured}
"""

NOT_MEASURED = ("Not measured yet. `{cmd}` measures it on a held-out folder. The shapes world's factor judges "
                "(colour, shape, binding) do not apply to your images, so it reports what can be measured without "
                "them: {what}.")


def _runs(out: Path) -> list[dict]:
    from clipspace.train.measure_decoder import _training_runs

    return _training_runs(out) if (out / "train_args.json").is_file() else []


def _command(kind: str, a: dict) -> str:
    skip = {"out", "threads", "export_fp16", "no_progress", "device"}
    off_when_zero = {"pool", "min_snr", "single_share", "checkpoint_every"}
    parts = [f"python -m clipspace.train {kind}"]
    for k, v in a.items():
        if k in skip or v in (None, "None", "False") or (k in off_when_zero and v in ("0", "0.0")):
            continue
        flag = "--" + k.replace("_", "-")
        parts.append(flag if v == "True" else f"{flag} {v}")
    return "    " + " ".join(parts + [f"--out {a.get('out')}"])


def write_card(out: Path, kind: str, data: dict, measured: dict | None = None, path: Path | None = None) -> Path:
    """MODEL_CARD.md for the run in `out` (its config, train_args.json chain, history.jsonl and the
    data record `data` the trainer wrote as data.json), at `path` (default out/MODEL_CARD.md)."""
    from safetensors import safe_open

    out = Path(out)
    cfg_file, weights_file = KINDS[kind]
    cfg = json.loads((out / cfg_file).read_text())
    with safe_open(str(out / weights_file), "pt") as f:
        params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    hist_file = out / "history.jsonl"
    hist = [json.loads(x) for x in hist_file.read_text().splitlines() if x] if hist_file.is_file() else []
    runs = _runs(out)
    if hist:
        last = hist[-1]
        summary = (f"{last['step']} steps in {last['seconds'] / 60:.1f} minutes; final training loss {last['loss']:.4f}"
                   + (f", held-out loss {last['val_loss']:.4f}" if "val_loss" in last else "") + ".")
    else:
        summary = "(no history.jsonl)"
    curve_rows = [{k: h[k] for k in ("step", "loss", "val_loss", "val_cosine", "val_mean_gap") if k in h}
                  for h in hist if "val_loss" in h]
    curve = "Held-out curve:\n\n" + markdown_table(curve_rows) if curve_rows else ""
    pretrained = f" (pretrained `{cfg['clip_pretrained']}`)" if cfg.get("clip_pretrained") else ""
    given = runs[-1].get("clip") if runs else None  # what the run loaded: a name, or a folder named after it
    clip_arg = cfg["clip_model"] if given in (None, "None") else given
    load_clip = ("load_clip()" if clip_arg == "default" else
                 f"load_clip({clip_arg!r}" + (f", pretrained={cfg['clip_pretrained']!r})" if pretrained else ")"))
    if kind == "decoder":
        what = (f"pixel-space diffusion decoder ({cfg['image_size']} px, diffusers UNet2DConditionModel, z_i added to "
                "the timestep embedding)")
        load = f"load_decoder({str(out)!r}, clip={load_clip})"
        cmd = (f"python -m clipspace.train.measure_decoder --weights {out} --clip {clip_arg} "
               "--images HELD_OUT_FOLDER")
        can = ("the round trip's PSNR (DDIM and exact inversion), the CLIP cosine of the reconstruction and of "
               "samples to the image's own z_i, against another image's")
    else:
        what = "diffusion prior (diffusers PriorTransformer) from the CLIP's text embedding z_t to its image embedding"
        load = f"load_prior({str(out)!r}, clip={load_clip})"
        cmd = (f"python -m clipspace.train.measure_prior --weights {out} --clip {clip_arg} "
               "--pairs HELD_OUT_PAIRS")
        can = "the cosine of sampled z to the true z_i, against z_t itself and the mean z_i, and the modality gap"
    data_text = [f"- source: `{data.get('source')}`; {data.get('kept')} used, {len(data.get('skipped', []))} skipped "
                 "(each with its reason in `data.json` and the log), "
                 f"{data.get('held_out', 0)} held out for the curve ({data.get('held_out_note', '')})."]
    if data.get("augment"):
        data_text.append(f"- augmentation: `{data['augment']}`. {data.get('augment_note', '')}")
    if data.get("embeddings"):
        data_text.append(f"- embeddings: {data['embeddings']}")
    if measured:
        rows = [{"measure": k, "value": v} for k, v in measured.items()
                if not isinstance(v, (dict, list)) and k not in ("judges", "source")]
        measured_text = (f"On `{measured.get('source', '?')}` (held out). {measured.get('judges', '')}\n\n"
                         + markdown_table(rows))
    else:
        measured_text = NOT_MEASURED.format(cmd=cmd, what=can)
    text = CARD.format(kind=kind, clip_model=cfg["clip_model"],
                       embed_dim=cfg["clip_embed_dim"], pretrained=pretrained,
                       weights_id=cfg.get("clip_weights_id") or "unknown", what=what, load=load,
                       data="\n".join(data_text), config=json.dumps(cfg, indent=2), params=params / 1e6,
                       commands="\n".join(_command(kind, a) for a in runs) or "(trained from Python: no train_args.json)",
                       summary=summary, curve=curve, measured=measured_text)
    path = Path(path) if path else out / "MODEL_CARD.md"
    path.write_text(text)
    return path


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
