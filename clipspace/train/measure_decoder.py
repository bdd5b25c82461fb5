"""Measure an unCLIP decoder on held-out world scenes and write the offline decoder's model card;
or measure any decoder on a held-out folder of your images (`--images`).

    python -m clipspace.train.measure_decoder                                   # the shipped decoder
    python -m clipspace.train.measure_decoder --weights runs/decoder --curve runs/decoder/checkpoints \
        --ship clipspace/weights/decoder-tiny
    python -m clipspace.train.measure_decoder --weights runs/my-decoder --clip ViT-B-32 --pretrained openai \
        --images held_out/                                                      # a decoder of your own CLIP

On a folder of your images there are no factors to judge (no known colour, shape or count), so
`measure_folder` reports what needs none: the round trip's PSNR (plain DDIM and exact, fixed-point
inversion) against decoding another image's z_i, and CLIP cosines to each image's own z_i of its
reconstruction and of samples from fresh noise (each against another image's z_i, the baseline).

Every judgement of a decoded image is made by the CLIP the decoder is conditioned on (zero-shot,
world templates), so "keeps its colour" means "the default CLIP still reads the same colour". The
scenes are single objects from `world.single_objects`, seeded far from the training stream.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from clipspace import world
from clipspace.cache import digest, file_digest, write_atomic
from clipspace.clip import ClipModel
from clipspace.factory import load_clip
from clipspace.train.measure_clip import markdown_table
from clipspace.unclip.decoder import PixelDecoder, load_decoder
from clipspace.unclip.latents import decode, invert, psnr, random_noise, text_direction, text_diff, variations
from clipspace.probes.zero_shot import WORLD_TEMPLATES, build_classifier

TARGETS = {"round_trip_psnr": 30.0, "sample_colour": 0.90, "sample_shape": 0.80, "sample_cosine": 0.80,
           "variation_colour": 0.90, "variation_shape": 0.90, "text_diff_blue": 0.70,
           "decode_25_steps_s": "<= 1", "invert_reconstruct_s": "<= 2"}


class _Judge:
    """Zero-shot colour and shape of images, and their cosine to reference embeddings."""

    def __init__(self, clip: ClipModel):
        self.clip = clip
        self.colours, self.shapes = list(world.COLOURS), list(world.SHAPES)
        self.w_colour = build_classifier(clip, self.colours, WORLD_TEMPLATES["colour"])
        self.w_shape = build_classifier(clip, self.shapes, WORLD_TEMPLATES["shape"])

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z = np.asarray(self.clip.encode_images(images, progress=False))
        return (np.array(self.colours)[(z @ self.w_colour).argmax(1)],
                np.array(self.shapes)[(z @ self.w_shape).argmax(1)], z)


def measure(decoder: PixelDecoder, clip: ClipModel, n: int = 64, steps: int = 50, n_variations: int = 4,
            thetas=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5), seed: int = 0, with_timings: bool = True) -> dict:
    """All of the card's numbers for one decoder, on n held-out single-object scenes."""
    judge = _Judge(clip)
    scenes = world.single_objects(n)
    colours = np.array([s.objects[0].colour for s in scenes])
    shapes = np.array([s.objects[0].shape for s in scenes])
    images = [s.render(decoder.image_size) for s in scenes]
    guidance = float(decoder.config.get("guidance", 1.0))
    r: dict[str, float] = {}
    # The judge's ceiling: the source scenes themselves at the decoder's 32 px, upsampled by the CLIP.
    c, s, _ = judge(images)
    r["judge_colour_on_sources"], r["judge_shape_on_sources"] = float(np.mean(c == colours)), float(np.mean(s == shapes))

    # Round trip at eta = 0: inverted with the conditional model (guidance 1), decoded the same way.
    lat = invert(decoder, clip, images, steps=steps)
    r["round_trip_psnr"] = float(np.mean(psnr(decode(decoder, lat.z, lat.x_T, steps=steps), images)))
    wrong = lat.z.roll(1, dims=0)  # every x_T decoded with its neighbour's z_i
    r["round_trip_psnr_wrong_z"] = float(np.mean(psnr(decode(decoder, wrong, lat.x_T, steps=steps), images)))

    # Sampling: z_i from fresh noise, with classifier-free guidance as the paper decodes.
    samples = decode(decoder, lat.z, random_noise(decoder, n, seed=seed + 1), steps=steps, guidance=guidance)
    c, s, z = judge(samples)
    r["sample_colour"], r["sample_shape"] = float(np.mean(c == colours)), float(np.mean(s == shapes))
    r["sample_cosine"] = float(np.mean((z * lat.z.numpy()).sum(1)))

    # Variations at eta = 1 from the inverted x_T: what stays is what z_i encodes.
    var_c, var_s, var_psnr = [], [], []
    for i in range(n):
        vs = variations(decoder, lat.z[i:i + 1], lat.x_T[i:i + 1], n=n_variations, eta=1.0, steps=steps,
                        guidance=guidance, seed=seed + i)
        c, s, _ = judge(vs)
        var_c.append(np.mean(c == colours[i]))
        var_s.append(np.mean(s == shapes[i]))
        var_psnr.append(np.mean(psnr(vs, [images[i]] * n_variations)))
    r["variation_colour"], r["variation_shape"] = float(np.mean(var_c)), float(np.mean(var_s))
    r["variation_psnr_to_source"] = float(np.mean(var_psnr))  # finite and below the round trip: pixels changed

    # Text diff "red" -> "blue" on red objects, from the scene's own caption (see unclip.NEUTRAL_CAPTION).
    red = [i for i in range(n) if colours[i] == "red"] or list(range(min(8, n)))
    blue_hits, kept = [], []
    for i in red:
        z_d = text_direction(clip, f"a blue {shapes[i]}", f"a red {shapes[i]}")
        last = text_diff(decoder, lat.z[i:i + 1], lat.x_T[i:i + 1], z_d, thetas=thetas, steps=steps,
                         guidance=guidance)[-1]
        c, s, _ = judge([last])
        blue_hits.append(c[0] == "blue")
        kept.append(s[0] == shapes[i])
    r["text_diff_blue"], r["text_diff_shape_kept"] = float(np.mean(blue_hits)), float(np.mean(kept))
    r["text_diff_theta"], r["text_diff_scenes"] = float(thetas[-1]), len(red)
    if with_timings:
        r.update(timings(decoder, clip, images[0]))
    return r


def timings(decoder: PixelDecoder, clip: ClipModel, image, repeats: int = 3) -> dict:
    """Median wall time of one image's decode at 25 steps and its invert + reconstruct (25 steps each)."""
    lat = invert(decoder, clip, [image], steps=25)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    guidance = float(decoder.config.get("guidance", 1.0))
    return {"decode_25_steps_s": best(lambda: decode(decoder, lat.z, lat.x_T, steps=25, guidance=guidance)),
            "invert_reconstruct_s": best(lambda: decode(decoder, *_zx(invert(decoder, clip, [image], steps=25)),
                                                        steps=25)),
            "torch_threads": torch.get_num_threads()}


def _zx(lat):
    return lat.z, lat.x_T


def _cosine(clip, images, z: torch.Tensor) -> np.ndarray:
    """Per image: cosine of its CLIP image embedding to the row of z (unit-norm)."""
    e = np.asarray(clip.encode_images(images, strict=True, cache=False, progress=False))
    return (e * z.numpy()).sum(1)


def measure_folder(decoder: PixelDecoder, clip: ClipModel, images, steps: int = 50, n_variations: int = 2,
                   iterations: int = 5, seed: int = 0, max_images: int = 64) -> dict:
    """The numbers that need no factor judges, on a held-out image source (folder, file list or parquet).

    z_i is each file's own embedding (`encode_images`, as the trainer computed it); the pixels are its
    centre square at the decoder's size. Cosines are of CLIP embeddings of decoded images to z_i;
    `source_cosine` is the same for the source squares themselves: the ceiling that resizing to the
    decoder's size leaves. Each `*_wrong_z` pairs an image with its neighbour's z_i: the baseline."""
    from clipspace.train.data import embed_paths, load_pixels, log_failures, read_image_source
    from clipspace.unclip.latents import ddim_invert, ddim_sample, pixels_to_images

    table = read_image_source(images)
    paths = table.paths[:max_images]
    z, kept, bad = embed_paths(clip, paths)
    pixels, kept2, bad2 = load_pixels([paths[i] for i in kept], decoder.image_size)
    failures = list(table.failures) + bad + bad2
    log_failures(failures)
    if len(kept2) < 2:
        raise ValueError(f"{images}: measuring needs 2 or more readable images, found {len(kept2)}")
    z = torch.nn.functional.normalize(torch.from_numpy(z[kept2]).float(), dim=-1)
    x0 = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    sources = pixels_to_images(x0)
    wrong = z.roll(1, dims=0)
    guidance = float(decoder.config.get("guidance", 1.0))
    r: dict = {"source": str(images), "images": len(kept2), "skipped": len(failures),
               "judges": "No factor judges: a folder of your images has no known colour, shape or count, so only "
                         "PSNR and CLIP cosines are reported.",
               "steps": steps, "sample_guidance": guidance}
    x = decoder.encode_pixels(x0.to(decoder.device, decoder.dtype))  # pixel decoders: the pixels themselves

    def sample(zz, xx, **kw) -> torch.Tensor:
        return decoder.decode_pixels(ddim_sample(decoder, zz, xx, steps=steps, **kw)).float().cpu()

    x_T = ddim_invert(decoder, x, z, steps)
    recon = sample(z, x_T)
    r["round_trip_psnr"] = float(np.mean(psnr(recon, x0)))
    r["round_trip_psnr_wrong_z"] = float(np.mean(psnr(sample(wrong, x_T), x0)))
    x_T_exact = ddim_invert(decoder, x, z, steps, method="fixed_point", iterations=iterations)
    r[f"round_trip_psnr_fixed_point_{iterations}"] = float(np.mean(psnr(sample(z, x_T_exact), x0)))
    r["source_cosine"] = float(np.mean(_cosine(clip, sources, z)))
    r["round_trip_cosine"] = float(np.mean(_cosine(clip, pixels_to_images(recon), z)))
    samples = pixels_to_images(sample(z, random_noise(decoder, len(z), seed=seed + 1), guidance=guidance))
    r["sample_cosine"] = float(np.mean(_cosine(clip, samples, z)))
    r["sample_cosine_wrong_z"] = float(np.mean(_cosine(clip, samples, wrong)))
    if n_variations:
        cos = []
        for i in range(len(z)):
            vs = variations(decoder, z[i:i + 1], x_T[i:i + 1], n=n_variations, eta=1.0, steps=steps,
                            guidance=guidance, seed=seed + i)
            cos.append(np.mean(_cosine(clip, vs, z[i:i + 1].expand(n_variations, -1))))
        r["variation_cosine"] = float(np.mean(cos))
    return r


CURVE_KEYS = ("round_trip_psnr", "round_trip_psnr_wrong_z", "sample_colour", "sample_shape", "sample_cosine",
              "variation_colour", "text_diff_blue")
MEASURE_VERSION = 1  # bump when measure() changes its numbers: cached curve rows are keyed on it


def _checkpoint_numbers(ckpt: Path, clip: ClipModel, n: int) -> dict:
    """The curve's numbers for one checkpoint, cached in it (a checkpoint's files never change, and
    the key covers them, the CLIP and the scene count), so a longer run re-measures only new ones."""
    key = digest(file_digest(ckpt / "decoder.safetensors"), file_digest(ckpt / "decoder_config.json"),
                 getattr(clip, "weights_id", ""), n, MEASURE_VERSION)
    cached = ckpt / f"curve_n{n}.json"
    try:
        saved = json.loads(cached.read_text())
        if saved.get("key") == key:
            return saved["numbers"]
    except (OSError, ValueError):
        pass
    m = measure(load_decoder(ckpt, clip=clip), clip, n=n, n_variations=2, with_timings=False)
    numbers = {k: m[k] for k in CURVE_KEYS}
    if getattr(clip, "weights_id", ""):  # a CLIP without a weights id cannot be told apart: never cache
        write_atomic(cached, json.dumps({"key": key, "numbers": numbers}, indent=1) + "\n")
    return numbers


def curve(decoder_dir: Path, clip: ClipModel, n: int = 24, every: int = 0) -> list[dict]:
    """The card's numbers (fewer scenes, no timings) at every checkpoint of a training run (with
    `every`, only at steps that are multiples of it), and at its end."""
    rows = []
    hist = {}
    if (decoder_dir / "history.jsonl").exists():
        hist = {h["step"]: h for h in map(json.loads, (decoder_dir / "history.jsonl").read_text().split("\n")[:-1])}
    for ckpt in sorted((decoder_dir / "checkpoints").glob("step*")) + [decoder_dir]:
        step = int(ckpt.name[4:]) if ckpt.name.startswith("step") else max(hist, default=0)
        if every and step % every and ckpt != decoder_dir:
            continue
        rows.append({"step": step, "minutes": round(hist.get(step, {}).get("seconds", float("nan")) / 60, 1),
                     "val_loss": hist.get(step, {}).get("val_loss"), **_checkpoint_numbers(ckpt, clip, n)})
    return rows


CARD = """# decoder-tiny: the offline unCLIP decoder

A pixel-space diffusion decoder (diffusers `UNet2DConditionModel`, `class_embed_type="projection"`,
as Stable unCLIP takes its image embedding) conditioned on the normalised image embedding z_i of
the offline default CLIP (`clipspace-tiny`, 128-d), trained on the procedural shapes world.
Load it with `clipspace.load_decoder(clip=load_clip())`. Everything below was measured by
`python -m clipspace.train.measure_decoder` ({measure_minutes:.1f} minutes); the numbers are in `metrics.json`.

## Architecture (`clipspace/model_configs/decoder-tiny.json`)

```json
{config}
```

{params:.2f}M parameters; weights stored as fp16 safetensors ({size_mb:.1f} MB), loaded into fp32.

## Data and training

Batches of `world.random_scene`s (the CLIP's training mixture: 1 to 3 objects, relations, counts,
written words), at 32 px as the target and at 64 px for the frozen CLIP. z_i is zeroed for 10% of
each batch (classifier-free guidance), v-prediction on a cosine schedule, AdamW, EMA of the weights
(decay 0.999), bf16 autocast on the CPU. {data}

{command}

{train_summary}

## Measured (held-out single-object scenes, n={n}, DDIM {steps} steps, guidance {guidance} for samples)

Judged by the default CLIP, zero-shot. The round trip inverts and decodes with guidance 1 at eta 0.
"wrong z" decodes each inverted x_T with another scene's z_i. Timings: median of 3 on this machine
({threads} torch threads), 2 CPU cores shared with other work.

{final_table}

## Curve against training time (n={curve_n} scenes per checkpoint)

{curve_table}

## What falls short, frankly

{shortfalls}
{notes}"""


def _training_runs(train_dir: Path) -> list[dict]:
    """train_args.json of a run and of the runs it continued (--init), first run first."""
    args = json.loads((Path(train_dir) / "train_args.json").read_text())
    init = args.get("init")
    return (_training_runs(Path(init)) if _flag_set(init) else []) + [args]


def _flag_set(value) -> bool:
    """train_args.json keeps argparse's values as strings: "None", "0" and "0.0" mean the flag was off."""
    if value in (None, "None"):
        return False
    try:
        return float(value) != 0
    except (TypeError, ValueError):
        return True


def _train_command(a: dict) -> str:
    extra = "".join(f" --{k.replace('_', '-')} {a[k]}" for k in ("pool", "min_snr", "single_share", "init")
                    if _flag_set(a.get(k)))
    return (f"python -m clipspace.train decoder --clip default --steps {a['steps']} --batch-size {a['batch_size']} "
            f"--lr {a['lr']} --warmup {a['warmup']} --seed {a['seed']} --checkpoint-every {a['checkpoint_every']}"
            f"{extra} --out {a['out']}")


def write_card(path: Path, final: dict, curve_rows: list[dict], train_dir: Path, n: int, steps: int,
               guidance: float, measure_minutes: float, curve_n: int = 24, notes: str = "") -> None:
    dec = load_decoder(path.parent)
    cfg = dec.config
    n_params = sum(p.numel() for p in dec.unet.parameters())
    runs = _training_runs(train_dir)
    args = runs[-1]
    hist = [json.loads(line) for line in (train_dir / "history.jsonl").read_text().splitlines() if line]
    command = "\n".join("    " + _train_command(a) for a in runs)
    pooled = [a for a in runs if _flag_set(a.get("pool"))]
    data = ("Each step rendered fresh scenes." if not pooled else
            f"The runs marked --pool drew their batches from that many scenes rendered and embedded once "
            f"(the frozen CLIP's forward was a quarter of a step); the others rendered fresh scenes every step."
            if len(pooled) < len(runs) else "Batches come from --pool scenes rendered and embedded once.")
    if len(runs) > 1:
        data += " The training ran as " + " then ".join(f"{a['steps']} steps" for a in runs) + \
                " (--init continues the run before: same weights, its average, its step count)."
    if any(_flag_set(a.get("min_snr")) for a in runs):
        data += (" The runs marked --min-snr weighted each sample's loss by min(SNR, gamma) on the x0 error "
                 "(Min-SNR weighting), which shifts the effort to the mid noise levels where outlines are decided.")
    if any(_flag_set(a.get("single_share")) for a in runs):
        data += (" The runs marked --single-share drew that share of their scenes as plain single objects, "
                 "the rest from the mixture.")
    summary = (f"{hist[-1]['step']} steps of {args['batch_size']} in {hist[-1]['seconds'] / 60:.1f} minutes on 2 CPU "
               f"cores shared with other work; final held-out loss {hist[-1].get('val_loss', float('nan')):.4f}.")
    rows = [{"measure": k, "value": v, "target": TARGETS.get(k, "report")} for k, v in final.items()]
    short = []
    for k, t in TARGETS.items():
        v = final.get(k)
        if isinstance(t, float) and v is not None and v < t:
            short.append(f"- {k}: {v:.3f} against {t}.")
    short_text = "\n".join(short) or "Every target is met."
    if short:
        short_text += ("\n\nThe curve above says where more training goes. A run continues with `--init` (its "
                       "weights, average and step count), so a GPU or a longer background CPU run can pick up "
                       "where this one stopped.")
    weights = path.parent / "decoder.safetensors"
    path.write_text(CARD.format(
        config=json.dumps(cfg, indent=2), params=n_params / 1e6, size_mb=weights.stat().st_size / 1e6,
        command=command, data=data, train_summary=summary, n=n, steps=steps, guidance=guidance,
        threads=final.get("torch_threads", "?"), final_table=markdown_table(rows), curve_n=curve_n,
        curve_table=markdown_table(curve_rows), shortfalls=short_text, measure_minutes=measure_minutes,
        notes=f"\n## Notes (by hand, after reading the curve)\n\n{notes.strip()}\n" if notes.strip() else ""))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m clipspace.train.measure_decoder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, help="decoder directory; default: the shipped decoder")
    p.add_argument("--clip", default=None, help="CLIP directory or name (default: the offline default)")
    p.add_argument("--pretrained", "--clip-pretrained", dest="clip_pretrained", default=None,
                   help="open_clip pretrained tag or checkpoint file, if --clip is an architecture")
    p.add_argument("--images", default=None,
                   help="measure on this held-out folder (file list, parquet) of your images instead of world scenes "
                        "(no factor judges); the numbers also go into --weights' MODEL_CARD.md when it has data.json")
    p.add_argument("--iterations", type=int, default=5, help="fixed-point iterations for --images (default %(default)s)")
    p.add_argument("-n", type=int, default=64, help="held-out scenes (with --images: at most this many) (default %(default)s)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default %(default)s)")
    p.add_argument("--curve", action="store_true", help="also measure every checkpoint in --weights/checkpoints")
    p.add_argument("--curve-n", type=int, default=24, help="scenes per checkpoint for --curve (default %(default)s)")
    p.add_argument("--curve-every", type=int, default=0,
                   help="measure only the checkpoints at multiples of this many steps (0: all), and the last")
    p.add_argument("--json", type=Path, help="write the numbers here")
    p.add_argument("--ship", type=Path, help="export --weights as fp16 to this directory and write its MODEL_CARD.md")
    p.add_argument("--notes", type=Path, help="a markdown file of hand-written notes to end the card with")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    clip = load_clip(None if a.clip in (None, "default") else a.clip, pretrained=a.clip_pretrained)
    if a.images:
        return _main_folder(a, clip, t0)
    if a.ship:
        from clipspace.train.decoder import export_fp16

        if a.weights is None:
            raise SystemExit("--ship needs --weights (the training run's directory)")
        export_fp16(a.weights, a.ship)
    src = a.ship or a.weights
    decoder = load_decoder(src, clip=clip) if src else load_decoder(clip=clip)
    result = {"final": measure(decoder, clip, a.n, a.steps)}
    if a.ship:  # what fp16 storage costs: the same latents decoded by the fp32 run and the fp16 copy
        lat = invert(decoder, clip, [s.render(decoder.image_size) for s in world.single_objects(8)], steps=25)
        ours, theirs = (decode(d, lat.z, lat.x_T, steps=25, output="pt") for d in (decoder, load_decoder(a.weights)))
        result["final"]["fp16_vs_fp32_psnr"] = float(np.mean(psnr(ours, theirs)))
    if a.curve:
        result["curve"] = curve(a.weights, clip, a.curve_n, a.curve_every)
    result["measure_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    if a.ship:
        (a.ship / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        write_card(a.ship / "MODEL_CARD.md", result["final"], result.get("curve", []), a.weights, a.n, a.steps,
                   float(decoder.config.get("guidance", 1.0)), result["measure_seconds"] / 60, a.curve_n,
                   a.notes.read_text() if a.notes else "")
    print("\n" + markdown_table([{"measure": k, "value": v, "target": TARGETS.get(k, "report")}
                         for k, v in result["final"].items()]))


def _main_folder(a, clip: ClipModel, t0: float) -> None:
    """measure_decoder --images: any decoder, a held-out folder, the numbers that need no judges."""
    from clipspace.train.cards import write_card
    from clipspace.train.decoder import export_fp16

    if a.weights is None:
        raise SystemExit("--images needs --weights (the decoder directory to measure)")
    decoder = load_decoder(a.weights, clip=clip)
    final = measure_folder(decoder, clip, a.images, a.steps, iterations=a.iterations, max_images=a.n)
    final["measure_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(final, indent=2))
    if a.json:
        a.json.write_text(json.dumps(final, indent=2) + "\n")
    data_file = a.weights / "data.json"
    data = json.loads(data_file.read_text()) if data_file.is_file() else {}
    if a.ship:
        export_fp16(a.weights, a.ship)
        (a.ship / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
        write_card(a.weights, "decoder", data, final, path=a.ship / "MODEL_CARD.md")
    elif data:
        (a.weights / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
        write_card(a.weights, "decoder", data, final)
    print("\n" + markdown_table([{"measure": k, "value": v} for k, v in final.items() if k != "judges"]))


if __name__ == "__main__":
    main()
