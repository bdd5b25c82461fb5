"""Train an unCLIP prior: world captions' CLIP text embeddings z_t to their scenes' image embeddings z_i
(the offline prior), or, with `--pairs SOURCE`, your own (image, caption) pairs for any CLIP.

`--pairs`: a folder with sidecar .txt captions, a CSV/TSV (path, caption) or a parquet (and
image_embedding, text_embedding, already computed: the CLIP is then not loaded); embedded once,
`--held-out` pairs set aside for the curve, bad images skipped and listed in data.json, a
MODEL_CARD.md written; the default config is then `prior-base` (512 wide), and clip_embed_dim comes
from the CLIP used.

Data: (scene, caption) pairs from the world's training stream (`world.training_pairs`, the CLIP's
own mixture with its minimal-pair negatives and caption templates), embedded once by the frozen CLIP
into a pool (encoding is the cost; a step on the pool is a few milliseconds). The held-out set for
the loss curve is `world.mixed_scenes` (probe seeds, disjoint from the stream's scenes; the world's
caption vocabulary is small, so many held-out captions also occur in training, with other scenes).

Objective, as DALL-E 2's diffusion prior: the transformer predicts the clean normalised z_i (x0)
from a noisy one, the timestep and z_t, with an MSE loss; z_t is zeroed for 10% of the batch
(classifier-free guidance). z_i is normalised by the pool's per-dimension mean and std, stored in
the transformer's `clip_mean` / `clip_std`. AdamW, cosine learning rate with warm-up, an EMA of the
weights (diffusers' EMAModel, what is saved). fp32 (the model is 0.9M parameters; bf16 buys little).

Every --checkpoint-every steps it writes a loadable prior directory and the curve's numbers on the
held-out captions (loss on fixed noise; cosine of sampled z to the true z_i; distance between the
means of sampled z and true z_i, the modality gap the prior must close). `--init DIR` continues a
finished run (its weights, its average, its statistics, its step count and history).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from clipspace import world
from clipspace.train import start_run
from clipspace.train.clip import lr_at
from clipspace.train.decoder import clip_embeddings, weight_average
from clipspace.unclip.latents import embed_texts
from clipspace.unclip.prior import CONFIG_FILE, DEFAULT_PRIOR, DiffusionPrior, build_prior, load_prior, save_prior

log = logging.getLogger("clipspace.train.prior")
PAIRS_PRIOR = "prior-base"  # the default for --pairs: a real CLIP's embeddings need more width than the world's


class PairPool:
    """N (scene, caption) pairs of the training stream as CLIP embeddings (z_t, z_i), computed once."""

    def __init__(self, clip, n: int, seed: int = 0, chunk: int = 256):
        z_t, z_i, self.captions = [], [], []
        stream = world.training_pairs(seed, chunk)
        while sum(len(z) for z in z_i) < n:
            batch = next(stream)[: n - sum(len(z) for z in z_i)]
            scenes, caps = [s for s, _ in batch], [c for _, c in batch]
            z_i.append(clip_embeddings(clip, scenes))
            z_t.append(embed_texts(clip, caps))
            self.captions += caps
        self.z_t, self.z_i = torch.cat(z_t), torch.cat(z_i)

    def __len__(self) -> int:
        return len(self.z_i)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(rng.integers(0, len(self), size))
        return self.z_t[idx], self.z_i[idx]


class HeldOut:
    """Held-out captions with their scenes' z_i, fixed noise and timesteps: a curve without sampling noise.
    World scenes by default; `data` (a PairSet) instead: its pairs."""

    def __init__(self, clip, n: int = 256, seed: int = 1, data=None):
        if data is None:
            scenes = world.mixed_scenes(n)
            self.captions = [s.caption(0) for s in scenes]
            self.z_t, self.z_i = embed_texts(clip, self.captions), clip_embeddings(clip, scenes)
        else:
            self.captions, self.z_t, self.z_i = data.captions[:n], data.z_t[:n], data.z_i[:n]
        n = len(self.z_i)
        g = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(self.z_i.shape, generator=g)
        self.t = torch.randint(0, 1000, (n,), generator=g)

    @torch.no_grad()
    def numbers(self, prior: DiffusionPrior, sched: DDPMScheduler, steps: int = 25) -> dict:
        x0 = prior.normalise(self.z_i)
        pred = prior.transformer(sched.add_noise(x0, self.noise, self.t), self.t,
                                 proj_embedding=self.z_t).predicted_image_embedding
        z = prior.sample(self.z_t, steps=steps, seed=0)
        return {"val_loss": round(float(torch.nn.functional.mse_loss(pred, x0)), 5),
                "val_cosine": round(float((z * self.z_i).sum(1).mean()), 4),
                "val_mean_gap": round(float((z.mean(0) - self.z_i.mean(0)).norm()), 4)}


def embedding_stats(z_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of image embeddings (1, D): the prior's normalisation."""
    return z_i.mean(0, keepdim=True), z_i.std(0, keepdim=True).clamp(min=1e-4)


def _continue_from(init: Path) -> tuple[int, float, list[dict]]:
    cfg = json.loads((init / CONFIG_FILE).read_text())
    hist_file = init / "history.jsonl"
    history = [json.loads(line) for line in hist_file.read_text().splitlines() if line] if hist_file.exists() else []
    steps = int(cfg.get("trained_steps", history[-1]["step"] if history else 0))
    return steps, float(history[-1]["seconds"]) if history else 0.0, history


RUN_KEYS = ("trained_steps", "clip_weights_id", "continued_from", "clip_pretrained", "train_source", "train_pairs")


def train(clip, config: str | dict = DEFAULT_PRIOR, steps: int = 5000, batch_size: int = 256, lr: float = 5e-4,
          warmup: int = 200, seed: int = 0, out: Path | None = None, checkpoint_every: int = 0,
          device: str = "cpu", ema_decay: float = 0.999, clip_name: str | None = None, pool: int = 50000,
          init: Path | None = None, weight_decay: float = 0.01, progress: bool = True,
          held_out: int = 256, pairs=None, held_out_pairs=None) -> tuple[DiffusionPrior, list[dict]]:
    """Train a prior from `config` (or continue the run in `init`) on `clip`'s embeddings; returns
    (prior with EMA weights, history). `steps` counts this call's steps.

    `pairs` (a `clipspace.train.data.PairSet`) trains on those (caption, image) pairs instead of the
    world's (`clip` may then be None: the set's `.clip` names the CLIP); `held_out_pairs` (a PairSet)
    is the curve's held-out set (default: the world's captions, or for `pairs`, its first `held_out`)."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    start, seconds0, history = 0, 0.0, []
    if clip is None and pairs is None:
        raise ValueError("train(clip=None) needs `pairs` with precomputed embeddings")
    if pairs is not None:
        info = dict(pairs.clip)
    else:
        from clipspace.train.data import clip_info

        info = clip_info(clip)
    embed_dim = int(pairs.z_i.shape[1] if pairs is not None else clip.embed_dim)
    if init is not None:
        start, seconds0, history = _continue_from(Path(init))
        prior = load_prior(init)
        prior.config = {k: v for k, v in prior.config.items() if k not in RUN_KEYS}
        if embed_dim != prior.embed_dim:
            raise ValueError(f"--init {init} is a prior of {prior.embed_dim}-d CLIP embeddings, CLIP "
                             f"{info['clip_model']!r} gives {embed_dim}-d; continue it with the CLIP it was trained on")
    else:
        from clipspace.unclip.prior import get_prior_config

        cfg = get_prior_config(config)
        cfg["clip_embed_dim"] = embed_dim  # from the CLIP actually used, not the config's
        prior = build_prior(cfg)
    name = str(info["clip_model"])
    prior.config["clip_model"] = clip_name or (prior.config["clip_model"] if Path(name).exists() else name)
    prior.config["clip_weights_id"] = info.get("clip_weights_id") or ""
    if info.get("clip_pretrained") and not Path(str(info["clip_pretrained"])).is_dir():  # a tag or a file
        prior.config["clip_pretrained"] = str(info["clip_pretrained"])
    run_record = {}
    if pairs is not None:
        data = pairs
        run_record = {"train_source": str(getattr(pairs, "source", "")), "train_pairs": len(pairs)}
        log.info("%d (caption, image) pairs of %s", len(data), run_record["train_source"] or "the given set")
    else:
        t_pool = time.perf_counter()
        data = PairPool(clip, pool, seed=seed + start)  # a continued run draws other pairs than its first part
        log.info("pool of %d (scene, caption) pairs embedded in %.1f s", len(data), time.perf_counter() - t_pool)
    net = prior.transformer.to(dev)
    if init is None:  # the data's statistics; a continued run keeps the ones it was trained with
        mean, std = embedding_stats(data.z_i)
        with torch.no_grad():
            net.clip_mean.copy_(mean)
            net.clip_std.copy_(std)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    average = weight_average(net, ema_decay, start)
    snapshot = DiffusionPrior(ema, prior.config)
    sched = DDPMScheduler.from_config(prior.config["scheduler"])
    p_drop = float(prior.config.get("text_dropout", 0.1))
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    rng = np.random.default_rng(seed + start)
    val = None
    if out is not None:
        val = HeldOut(clip, held_out, data=held_out_pairs if held_out_pairs is not None else pairs)
    t0 = time.perf_counter()
    bar = tqdm(range(steps), disable=not progress, desc="prior", mininterval=5)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        z_t, z_i = data.batch(rng, batch_size)
        z_t, x0 = z_t.to(dev), prior.normalise(z_i.to(dev))
        z_t[torch.rand(batch_size) < p_drop] = 0.0  # classifier-free guidance: learn p(z_i) too
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), device=dev)
        pred = net(sched.add_noise(x0, noise, t), t, proj_embedding=z_t).predicted_image_embedding
        loss = torch.nn.functional.mse_loss(pred, x0)  # x0-prediction, as DALL-E 2's prior
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        gstep = start + step + 1
        average.step(net.parameters())  # the fixed statistics are copied, the rest averaged
        rec = {"step": gstep, "loss": round(loss.item(), 5), "seconds": round(seconds0 + time.perf_counter() - t0, 1)}
        history.append(rec)
        bar.set_postfix(loss=rec["loss"])
        last = step + 1 == steps
        if out is not None and ((checkpoint_every and gstep % checkpoint_every == 0) or last):
            average.copy_to(ema.parameters())
            rec.update(val.numbers(snapshot, sched))
            ckpt = out if last else out / "checkpoints" / f"step{gstep:06d}"
            save_prior(snapshot, ckpt, extra={"trained_steps": gstep, **({"continued_from": str(init)} if init else {}),
                                              **run_record})
            (out / "history.jsonl").write_text("\n".join(json.dumps(h) for h in history) + "\n")
            log.info(json.dumps(rec))
        elif gstep % 100 == 0 or step == 0:
            log.info(json.dumps(rec))
    average.copy_to(ema.parameters())
    prior.transformer = ema.float()
    return prior, history


def export_fp16(src: Path, dest: Path) -> Path:
    """Copy a trained prior directory with fp16 weights (statistics stay fp32)."""
    save_prior(load_prior(src), dest, fp16=True)
    return dest


def prepare_pairs(a, clip):
    """(train set, held-out set, data record) for --pairs: read, embed once, split, described for the card."""
    from clipspace.train.data import PairSet, split_held_out

    full = PairSet.from_source(a.pairs, clip, a.clip_name)
    val = PairSet.from_source(a.val_pairs, clip, a.clip_name) if a.val_pairs else None
    train_set, held, split = split_held_out(full, a.held_out, a.seed, val, a.val_pairs, "pairs", first=a.held_out)
    record = {"source": str(a.pairs), **split,
              "embeddings": ("precomputed in the parquet (the CLIP was not run)" if clip is None else
                             f"computed once with {clip.name} (images by encode_images, batched and cached; "
                             "captions by encode_texts)")}
    return train_set, held, record


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m clipspace.train prior", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default=None,
                   help="CLIP whose embeddings it maps: 'default' (the offline tiny CLIP), a load_clip name, or a "
                        "directory (default: 'default', or the CLIP a parquet of embeddings names)")
    p.add_argument("--pretrained", "--clip-pretrained", dest="clip_pretrained", default=None,
                   help="open_clip pretrained tag or checkpoint file, if --clip is an architecture")
    p.add_argument("--clip-name", default=None, help="CLIP name recorded in the config, checked by load_prior")
    p.add_argument("--pairs", default=None,
                   help="train on these (image, caption) pairs instead of the world's: a folder with sidecar .txt "
                        "captions, a CSV/TSV (path, caption), or a parquet (and image_embedding, text_embedding)")
    p.add_argument("--val-pairs", default=None, help="held-out pairs for the curve (default: set aside from --pairs)")
    p.add_argument("--config", default=None,
                   help=f"prior config name or JSON path (default: {DEFAULT_PRIOR}; with --pairs: {PAIRS_PRIOR})")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=50000, help="(scene, caption) pairs embedded once (default %(default)s)")
    p.add_argument("--held-out", type=int, default=256,
                   help="held-out captions for the curve (with --pairs: set aside, at most a tenth) (default %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="also save a prior and the held-out numbers every N steps (the card's curve)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, required=True, help="directory for weights, config, logs and checkpoints")
    p.add_argument("--export-fp16", type=Path, default=None, help="also write an fp16 copy here when done")
    p.add_argument("--init", type=Path, default=None, help="continue this finished run's prior directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    a = p.parse_args(argv)
    start_run(a)
    from clipspace.factory import load_clip
    from clipspace.train.data import read_pair_source

    clip = None
    table = read_pair_source(a.pairs) if a.pairs is not None else None
    if table is not None and _fully_precomputed(table):
        from clipspace.train.data import check_named_clip

        check_named_clip(table, a.clip, a.pairs)
    else:
        name = a.clip or "default"
        clip = load_clip(None if name == "default" else name, pretrained=a.clip_pretrained, device=a.device)
        clip.model.eval()
    config = a.config or (PAIRS_PRIOR if a.pairs else DEFAULT_PRIOR)
    pairs = held = record = None
    if a.pairs is not None:
        pairs, held, record = prepare_pairs(a, clip)
    desc = pairs.clip if clip is None else {"clip_model": clip.name, "clip_embed_dim": clip.embed_dim}
    log.info("training prior %s on %s (%d-d) for %d steps of %d on %s, data: %s", a.init or config,
             desc["clip_model"], desc["clip_embed_dim"], a.steps, a.batch_size, a.device, a.pairs or "the shapes world")
    train(clip, config, a.steps, a.batch_size, a.lr, a.warmup, a.seed, a.out, a.checkpoint_every, a.device,
          a.ema_decay, a.clip_name, a.pool, a.init, a.weight_decay, progress=not a.no_progress, held_out=a.held_out,
          pairs=pairs, held_out_pairs=held)
    if record is not None:
        from clipspace.train.cards import write_card

        (a.out / "data.json").write_text(json.dumps(record, indent=1) + "\n")
        log.info("card: %s", write_card(a.out, "prior", record))
    if a.export_fp16:
        export_fp16(a.out, a.export_fp16)
        log.info("fp16 copy in %s", a.export_fp16)
    log.info("done")


def _fully_precomputed(table) -> bool:
    return table.embeddings is not None and table.text_embeddings is not None


if __name__ == "__main__":
    main()
