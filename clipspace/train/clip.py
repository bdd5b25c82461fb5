"""Train the tiny CLIP on the shapes world with open_clip's own model factory and ClipLoss.

Shortcuts, frankly: data is rendered on the fly in the main process (0.25 ms a scene, a few
percent of a step); on the CPU the forward and backward run under bfloat16 autocast (AVX-512 BF16
makes it ~25% faster, master weights stay fp32); there is no validation-based early stopping, the
schedule is fixed by --steps so a run is reproducible from its seed.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from clipspace import world
from clipspace.train import start_run
from clipspace.factory import CONFIG_DIR, DEFAULT_MODEL  # registers the shipped configs with open_clip

log = logging.getLogger("clipspace.train.clip")


def scenes_to_tensor(scenes, image_size: int, mean, std) -> torch.Tensor:
    """Render scenes at the model's size and normalise: equal to open_clip's preprocess for
    images already at that size (its Resize and CenterCrop are then identities)."""
    arr = np.stack([np.asarray(s.render(image_size), dtype=np.float32) for s in scenes]) / 255.0
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# kept: diffusers' cosine warm-up is lr*step/warmup (0 at step 0), ours lr*(step+1)/warmup; shipped models used ours
def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def param_groups(model: torch.nn.Module, weight_decay: float):
    # As open_clip's trainer: no decay on gains, biases, embeddings and the logit scale.
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embedding" in n or "logit_scale" in n or "bn" in n else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def save_checkpoint(model: torch.nn.Module, model_name: str, out: Path, filename: str) -> Path:
    """Write open_clip's local-dir layout: open_clip_config.json + open_clip_model.safetensors."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = open_clip.get_model_config(model_name)
    preprocess = open_clip.get_model_preprocess_cfg(model)
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}, indent=2))
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / filename))
    return out / filename


def export_fp16(src: Path, dest: Path) -> Path:
    """Copy a trained model directory as fp16 safetensors (half the size; the card shows it loses nothing)."""
    from safetensors.torch import load_file

    dest.mkdir(parents=True, exist_ok=True)
    state = load_file(str(src / "open_clip_model.safetensors"))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(half, str(dest / "open_clip_model.safetensors"))
    (dest / "open_clip_config.json").write_text((src / "open_clip_config.json").read_text())
    return dest


def train(model_name: str = DEFAULT_MODEL, steps: int = 2000, batch_size: int = 128, lr: float = 1e-3,
          weight_decay: float = 0.1, warmup: int = 100, seed: int = 0, out: Path | None = None,
          checkpoint_every: int = 0, bf16: bool = True, device: str = "cpu", progress: bool = True):
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = open_clip.create_model(model_name, pretrained=None, device=dev)
    model.train()
    mean, std = model.visual.image_mean or open_clip.OPENAI_DATASET_MEAN, model.visual.image_std or open_clip.OPENAI_DATASET_STD
    image_size = model.visual.image_size[0] if isinstance(model.visual.image_size, (tuple, list)) else model.visual.image_size
    tokenizer = open_clip.get_tokenizer(model_name)
    loss_fn = open_clip.loss.ClipLoss()
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    batches = world.training_pairs(seed, batch_size)
    history = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), disable=not progress, desc="clip", mininterval=5)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        batch = next(batches)
        images = scenes_to_tensor([s for s, _ in batch], image_size, mean, std).to(dev)
        texts = tokenizer([c for _, c in batch]).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            img_f, txt_f, logit_scale = model(images, texts)
        loss = loss_fn(img_f.float(), txt_f.float(), logit_scale.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # as CLIP: temperature no lower than 0.01
        rec = {"step": step + 1, "loss": round(loss.item(), 4), "seconds": round(time.perf_counter() - t0, 1),
               "logit_scale": round(model.logit_scale.exp().item(), 2)}
        history.append(rec)
        bar.set_postfix(loss=rec["loss"])
        if (step + 1) % 50 == 0 or step == 0:
            log.info(json.dumps(rec))
        if out is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            save_checkpoint(model, model_name, out / "checkpoints", f"step{step + 1:06d}.safetensors")
            (out / "checkpoints" / f"step{step + 1:06d}.json").write_text(json.dumps(rec))
    model.eval()
    if out is not None:
        save_checkpoint(model, model_name, out, "open_clip_model.safetensors")
        (out / "history.jsonl").write_text("\n".join(json.dumps(h) for h in history) + "\n")
    return model, history


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m clipspace.train clip", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="open_clip config name (default: %(default)s)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=0, help="also save every N steps (for the card's curves)")
    p.add_argument("--no-bf16", action="store_true", help="train in fp32 (slower on CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, required=True, help="directory for weights, config and logs")
    a = p.parse_args(argv)
    start_run(a)
    log.info("training %s for %d steps of %d on %s", a.model, a.steps, a.batch_size, a.device)
    train(a.model, a.steps, a.batch_size, a.lr, a.weight_decay, a.warmup, a.seed, a.out, a.checkpoint_every,
          not a.no_bf16, a.device)
    log.info("done")


if __name__ == "__main__":
    main()
