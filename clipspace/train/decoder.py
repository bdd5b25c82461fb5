"""Train the offline unCLIP decoder on the shapes world, conditioned on a frozen CLIP's image embeddings.

Each step renders a fresh batch of `world.random_scene`s twice: at the decoder's size (the target)
and at the CLIP's size (its input; equal to its preprocess for images already at that size). z_i
comes from the frozen CLIP under inference_mode, is zeroed for 10% of the batch (so the same UNet is
also the unconditional model for classifier-free guidance), and the UNet learns diffusers' DDPM
objective (v-prediction by default) on the decoder config's noise schedule.

`--pool N` renders and embeds N scenes once and draws every batch from them: the frozen CLIP's
forward was a quarter of each step's time. `--init DIR` continues a finished run (its weights become
the model and its average; steps, checkpoints and history carry on from its own), so a longer run
can be built from shorter background ones.

`--min-snr G` weights each sample's loss by min(SNR, G) over the x0 loss (Hang et al. 2023, "Min-SNR
weighting"). Against the plain v-prediction loss it weights the lowest and highest noise levels down,
so the middle ones, where an object's outline is decided, get a larger share of the gradient.
`--single-share P` draws a share P of the scenes as plain single objects (the scenes the card is
measured on) and the rest from the CLIP's training mixture.

Shortcuts, frankly: data is rendered in the main process (~0.4 ms a scene for both sizes); the
forward and backward run under bfloat16 autocast on the CPU (measured ~1.7x faster for this UNet,
master weights stay fp32); the weights written are an EMA of the trained ones (what diffusion
models sample well from); the schedule is fixed by --steps, no early stopping. Every
--checkpoint-every steps it writes a loadable decoder directory, a held-out loss on fixed noise and
a preview grid (top: the scenes, bottom: decoded from their z_i and a fixed x_T), for the card.
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
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from clipspace import world
from clipspace.train import start_run
from clipspace.unclip.decoder import DEFAULT_DECODER, PixelDecoder, build_decoder, save_decoder
from clipspace.train.clip import lr_at, scenes_to_tensor

log = logging.getLogger("clipspace.train.decoder")


def scenes_to_pixels(scenes, size: int) -> torch.Tensor:
    """Render at `size` as a (N, 3, size, size) float tensor in [-1, 1], the decoder's pixel space."""
    arr = np.stack([np.asarray(s.render(size), dtype=np.float32) for s in scenes]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def clip_embeddings(clip, scenes) -> torch.Tensor:
    """Unit-norm CLIP image embeddings of `scenes`, rendered at the CLIP's own input size."""
    visual = clip.model.visual
    mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    pixels = scenes_to_tensor(scenes, clip.image_size, mean, std)
    with torch.inference_mode():
        z = clip.model.encode_image(pixels.to(clip.device), normalize=True).float()
    return z.cpu().clone()  # clone: a normal tensor, usable in the autograd graph


def diffusion_target(sched: DDPMScheduler, x0, noise, t) -> torch.Tensor:
    kind = sched.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return sched.get_velocity(x0, noise, t)
    if kind == "sample":
        return x0
    raise ValueError(f"unknown prediction_type {kind!r} in the decoder config's scheduler")


def min_snr_weights(sched: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights for min(SNR, gamma) x0-weighting, written for the prediction type."""
    a = sched.alphas_cumprod.to(t.device)[t]
    # kept, not diffusers' compute_snr: (sqrt(a)/sqrt(1-a))**2 is 3.3e-7 off (ours 9e-8); --min-snr runs trained on ours
    snr = a / (1.0 - a)
    w = snr.clamp(max=gamma)
    kind = sched.config.prediction_type
    if kind == "v_prediction":  # v-loss = (SNR + 1) x0-loss
        return w / (snr + 1.0)
    if kind == "epsilon":  # eps-loss = SNR x0-loss
        return w / snr
    return w


def draw_scene(rng: np.random.Generator, single_share: float = 0.0):
    """One training scene: a plain single object with probability `single_share`, else the mixture."""
    if single_share and float(rng.random()) < single_share:
        return world.single_object(rng)
    return world.random_scene(rng)


def weight_average(unet: torch.nn.Module, decay: float, step: int = 0) -> EMAModel:
    """diffusers' EMA of `unet`'s weights, decay min(decay, n / (9 + n)) at the n-th step of the whole
    training (`step` done before: a continued run). Its warm-up 1 - (1 + n / inv_gamma) ** -power is
    that at inv_gamma 9, power 1, update_after_step -1; its default (1 + n) / (10 + n) from n = 2
    would give the first step decay 0, where the shipped weights were averaged with 0.1."""
    ema = EMAModel(unet.parameters(), decay=decay, update_after_step=-1, use_ema_warmup=True,
                   inv_gamma=9.0, power=1.0, foreach=True)
    ema.optimization_step = int(step)
    return ema


class HeldOut:
    """A fixed held-out batch with fixed noise and timesteps: a loss curve without sampling noise."""

    def __init__(self, clip, image_size: int, sched: DDPMScheduler, n: int = 64, seed: int = 1):
        scenes = world.mixed_scenes(n)
        self.scenes = scenes
        self.x0 = scenes_to_pixels(scenes, image_size)
        self.z = clip_embeddings(clip, scenes)
        g = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(self.x0.shape, generator=g)
        self.t = torch.randint(0, sched.config.num_train_timesteps, (n,), generator=g)
        self.xt = sched.add_noise(self.x0, self.noise, self.t)
        self.target = diffusion_target(sched, self.x0, self.noise, self.t)

    @torch.no_grad()
    def loss(self, unet) -> float:
        pred = unet(self.xt.to(unet.device), self.t.to(unet.device), encoder_hidden_states=None,
                    class_labels=self.z.to(unet.device)).sample
        return float(torch.nn.functional.mse_loss(pred.float().cpu(), self.target))

    def preview(self, decoder: PixelDecoder, path: Path, n: int = 8, steps: int = 25, guidance: float = 3.0):
        from PIL import Image

        from clipspace.unclip.latents import decode, random_noise

        x_T = random_noise(decoder, n, seed=0)
        images = decode(decoder, self.z[:n], x_T, steps=steps, guidance=guidance)
        s = decoder.image_size
        grid = Image.new("RGB", (n * s, 2 * s))
        for i in range(n):
            grid.paste(self.scenes[i].render(s), (i * s, 0))
            grid.paste(images[i], (i * s, s))
        grid.resize((n * s * 2, 4 * s), Image.Resampling.NEAREST).save(path)


class ScenePool:
    """N scenes rendered at the decoder's size (uint8) with their CLIP embeddings, computed once."""

    def __init__(self, clip, n: int, image_size: int, rng: np.random.Generator, chunk: int = 256,
                 single_share: float = 0.0):
        pixels, zs = [], []
        for i in range(0, n, chunk):
            scenes = [draw_scene(rng, single_share) for _ in range(min(chunk, n - i))]
            pixels.append(np.stack([np.asarray(s.render(image_size)) for s in scenes]))
            zs.append(clip_embeddings(clip, scenes))
        self.pixels = torch.from_numpy(np.concatenate(pixels)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
        self.z = torch.cat(zs)

    def __len__(self) -> int:
        return len(self.z)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(rng.integers(0, len(self), size))
        return self.pixels[idx].float() / 127.5 - 1.0, self.z[idx].clone()


def _continue_from(init: Path, out: Path | None) -> tuple[int, float, list[dict]]:
    """Where a run to be continued ended (steps, seconds) and its history; its checkpoints are
    copied into `out` so one curve covers the whole training."""
    import shutil

    cfg = json.loads((init / "decoder_config.json").read_text())
    hist_file = init / "history.jsonl"
    history = [json.loads(line) for line in hist_file.read_text().splitlines() if line] if hist_file.exists() else []
    if out is not None and (init / "checkpoints").is_dir():
        for ckpt in sorted((init / "checkpoints").glob("step*")):
            shutil.copytree(ckpt, out / "checkpoints" / ckpt.name, dirs_exist_ok=True)
    steps = int(cfg.get("trained_steps", history[-1]["step"] if history else 0))
    if out is not None and steps and not (out / "checkpoints" / f"step{steps:06d}").exists():
        shutil.copytree(init, out / "checkpoints" / f"step{steps:06d}",
                        ignore=shutil.ignore_patterns("checkpoints", "*.log", "*.jsonl", "*.json.tmp"))
    return steps, float(history[-1]["seconds"]) if history else 0.0, history


def train(clip, config: str | dict = DEFAULT_DECODER, steps: int = 12000, batch_size: int = 64, lr: float = 5e-4,
          warmup: int = 500, seed: int = 0, out: Path | None = None, checkpoint_every: int = 0,
          bf16: bool = True, device: str = "cpu", ema_decay: float = 0.999, clip_name: str | None = None,
          progress: bool = True, grad_clip: float = 1.0, pool: int = 0,
          init: Path | None = None, min_snr: float = 0.0,
          single_share: float = 0.0) -> tuple[PixelDecoder, list[dict]]:
    """Train a decoder from `config` (or continue the run in `init`) on `clip`'s embeddings;
    returns (decoder with EMA weights, history). `steps` counts this call's steps."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    start, seconds0, history = 0, 0.0, []
    if init is not None:
        from clipspace.unclip.decoder import load_decoder

        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        start, seconds0, history = _continue_from(Path(init), out)
        decoder = load_decoder(init)
        run_keys = ("trained_steps", "clip_weights_id", "min_snr_gamma", "single_share")  # set anew by this run
        decoder.config = {k: v for k, v in decoder.config.items() if k not in run_keys}
    else:
        decoder = build_decoder(config)
    # The name load_decoder checks: given, else the CLIP's (a checkpoint directory keeps the config's).
    decoder.config["clip_model"] = clip_name or (decoder.config["clip_model"] if Path(str(clip.name)).exists()
                                                 else str(clip.name))
    if int(clip.embed_dim) != decoder.embed_dim:
        raise ValueError(f"decoder config {config!r} expects {decoder.embed_dim}-d CLIP embeddings, "
                         f"CLIP {clip.name!r} gives {clip.embed_dim}-d; set clip_embed_dim in the config")
    decoder.config["clip_weights_id"] = getattr(clip, "weights_id", "")
    unet = decoder.unet.to(dev).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)  # the average as a module: held-out loss, snapshots
    average = weight_average(unet, ema_decay, start)  # starts from the weights: a continued run's are its average
    sched = DDPMScheduler.from_config(decoder.config["scheduler"])
    p_drop = float(decoder.config.get("embedding_dropout", 0.1))
    size = decoder.image_size
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    rng = np.random.default_rng(seed + start)  # a continued run draws other scenes than its first part
    held_out = HeldOut(clip, size, sched) if out is not None else None
    scene_pool = None
    if pool:
        t_pool = time.perf_counter()
        scene_pool = ScenePool(clip, pool, size, rng, single_share=single_share)
        log.info("pool of %d scenes rendered and embedded in %.1f s", pool, time.perf_counter() - t_pool)
    t0 = time.perf_counter()
    bar = tqdm(range(steps), disable=not progress, desc="decoder", mininterval=5)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        if scene_pool is not None:
            x0, z = scene_pool.batch(rng, batch_size)
            x0, z = x0.to(dev), z.to(dev)
        else:
            scenes = [draw_scene(rng, single_share) for _ in range(batch_size)]
            x0 = scenes_to_pixels(scenes, size).to(dev)
            z = clip_embeddings(clip, scenes).to(dev)
        z[torch.rand(batch_size) < p_drop] = 0.0  # classifier-free guidance: learn p(x) too
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), device=dev)
        xt = sched.add_noise(x0, noise, t)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            pred = unet(xt, t, encoder_hidden_states=None, class_labels=z).sample
        err = (pred.float() - diffusion_target(sched, x0, noise, t)).pow(2).mean(dim=(1, 2, 3))
        loss = (err * min_snr_weights(sched, t, min_snr)).mean() if min_snr else err.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(unet.parameters(), grad_clip)
        opt.step()
        gstep = start + step + 1  # counted over the whole training, continued runs included
        average.step(unet.parameters())  # decay min(ema_decay, gstep / (9 + gstep)): a short warm-up
        rec = {"step": gstep, "loss": round(loss.item(), 5),
               "seconds": round(seconds0 + time.perf_counter() - t0, 1)}
        history.append(rec)
        bar.set_postfix(loss=rec["loss"])
        last = step + 1 == steps
        if out is not None and ((checkpoint_every and gstep % checkpoint_every == 0) or last):
            average.copy_to(ema.parameters())
            rec["val_loss"] = round(held_out.loss(ema), 5)
            ckpt = out if last else out / "checkpoints" / f"step{gstep:06d}"
            snapshot = PixelDecoder(ema, decoder.config)
            extra = {"trained_steps": gstep, **({"continued_from": str(init)} if init else {}),
                     **({"min_snr_gamma": min_snr} if min_snr else {}),
                     **({"single_share": single_share} if single_share else {})}
            save_decoder(snapshot, ckpt, extra=extra)
            held_out.preview(snapshot, ckpt / "preview.png")
            (out / "history.jsonl").write_text("\n".join(json.dumps(h) for h in history) + "\n")
            log.info(json.dumps(rec))
        elif gstep % 50 == 0 or step == 0:
            log.info(json.dumps(rec))
    average.copy_to(ema.parameters())
    decoder.unet = ema.float()
    return decoder, history


def export_fp16(src: Path, dest: Path) -> Path:
    """Copy a trained decoder directory with fp16 weights (half the size; measure_decoder checks the loss)."""
    from clipspace.unclip.decoder import load_decoder

    save_decoder(load_decoder(src), dest, fp16=True)
    for extra in ("preview.png",):
        if (src / extra).is_file():
            (dest / extra).write_bytes((src / extra).read_bytes())
    return dest


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m clipspace.train decoder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default="default",
                   help="CLIP to condition on: 'default' (the offline tiny CLIP), a load_clip name, or a model directory")
    p.add_argument("--clip-pretrained", default=None, help="open_clip pretrained tag or checkpoint, if --clip is a name")
    p.add_argument("--clip-name", default=None,
                   help="CLIP name recorded in the decoder config, checked by load_decoder (default: the config's)")
    p.add_argument("--config", default=DEFAULT_DECODER, help="decoder config name or JSON path (default: %(default)s)")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="also save a decoder, held-out loss and preview every N steps (for the card's curves)")
    p.add_argument("--no-bf16", action="store_true", help="train in fp32 (slower on CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, required=True, help="directory for weights, config, logs and checkpoints")
    p.add_argument("--export-fp16", type=Path, default=None, help="also write an fp16 copy here when done")
    p.add_argument("--pool", type=int, default=0,
                   help="render and embed this many scenes once and draw batches from them (0: fresh scenes every step)")
    p.add_argument("--init", type=Path, default=None,
                   help="continue this finished run's decoder directory (its config wins over --config)")
    p.add_argument("--min-snr", type=float, default=0.0,
                   help="weight the loss by min(SNR, this) on x0 (Min-SNR; 5 is the paper's; 0: plain MSE)")
    p.add_argument("--single-share", type=float, default=0.0,
                   help="share of training scenes drawn as plain single objects (0: the CLIP's mixture only)")
    a = p.parse_args(argv)
    start_run(a)
    from clipspace.factory import load_clip

    clip = load_clip(None if a.clip == "default" else a.clip, pretrained=a.clip_pretrained)
    clip.model.eval()
    log.info("training decoder %s on %s (%d-d) for %d steps of %d on %s", a.config, clip.name, clip.embed_dim,
             a.steps, a.batch_size, a.device)
    train(clip, a.config, a.steps, a.batch_size, a.lr, a.warmup, a.seed, a.out, a.checkpoint_every,
          not a.no_bf16, a.device, a.ema_decay, a.clip_name, pool=a.pool, init=a.init,
          min_snr=a.min_snr, single_share=a.single_share)
    if a.export_fp16:
        export_fp16(a.out, a.export_fp16)
        log.info("fp16 copy in %s", a.export_fp16)
    log.info("done")


if __name__ == "__main__":
    main()
