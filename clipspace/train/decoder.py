"""Train an unCLIP decoder conditioned on a frozen CLIP's image embeddings: the offline one on the
shapes world (the default), or one for any CLIP on your own images (`--images`, below).

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

`--images SOURCE` (a folder, a file list or a parquet of paths, and of embeddings if already
computed: `clipspace.train.data`) trains on those images instead. Their CLIP embeddings are computed
once (batched, cached on disk) or read from the parquet (the CLIP is then not loaded at all); the
images are held at the decoder's size with a crop margin and augmented by random crops and mirroring
(`--augment`); `--held-out` of them are set aside for the curve; bad files are skipped, logged and
listed in data.json. `--size 64` picks the shipped 64 px config (`decoder-64`); the decoder's
clip_embed_dim and clip_model come from the CLIP used, whatever the config says. The run directory
also gets a MODEL_CARD.md (`clipspace.train.cards`). docs/training-any-clip.md walks through it.

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
    """A fixed held-out batch with fixed noise and timesteps: a loss curve without sampling noise.
    World scenes by default; `data` (an ImageSet) instead: its images' centre windows."""

    def __init__(self, clip, image_size: int, sched: DDPMScheduler, n: int = 64, seed: int = 1, data=None):
        if data is None:
            scenes = world.mixed_scenes(n)
            self.x0 = scenes_to_pixels(scenes, image_size)
            self.z = clip_embeddings(clip, scenes)
            self.targets = [s.render(image_size) for s in scenes]
        else:
            from clipspace.unclip.latents import pixels_to_images

            self.x0, self.z = data.centre()[:n], data.z[:n].clone()
            self.targets = pixels_to_images(self.x0)
        n = len(self.x0)
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

        n = min(n, len(self.z))
        x_T = random_noise(decoder, n, seed=0)
        images = decode(decoder, self.z[:n], x_T, steps=steps, guidance=guidance)
        s = decoder.image_size
        grid = Image.new("RGB", (n * s, 2 * s))
        for i in range(n):
            grid.paste(self.targets[i], (i * s, 0))
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


RUN_KEYS = ("trained_steps", "clip_weights_id", "min_snr_gamma", "single_share", "continued_from", "clip_pretrained",
            "train_source", "train_images", "augment")  # set anew by every run, not inherited from --init


def config_for_size(size: int | None, config: str | dict | None = None) -> str | dict:
    """The decoder config for a run: `config` if given (its image_size set to `size` if both are), else
    the shipped `decoder-{size}` (`decoder-tiny` is the 32 px one), else the default."""
    from clipspace.unclip.decoder import get_decoder_config

    if config is not None:
        if size is None:
            return config
        cfg = get_decoder_config(config)
        cfg["image_size"] = int(size)
        return cfg
    if size is None:
        return DEFAULT_DECODER
    name = DEFAULT_DECODER if int(size) == 32 else f"decoder-{int(size)}"
    get_decoder_config(name)  # FileNotFoundError naming the shipped configs
    return name


def train(clip, config: str | dict = DEFAULT_DECODER, steps: int = 12000, batch_size: int = 64, lr: float = 5e-4,
          warmup: int = 500, seed: int = 0, out: Path | None = None, checkpoint_every: int = 0,
          bf16: bool = True, device: str = "cpu", ema_decay: float = 0.999, clip_name: str | None = None,
          progress: bool = True, grad_clip: float = 1.0, pool: int = 0,
          init: Path | None = None, min_snr: float = 0.0,
          single_share: float = 0.0, images=None, held_out_images=None) -> tuple[PixelDecoder, list[dict]]:
    """Train a decoder from `config` (or continue the run in `init`) on `clip`'s embeddings;
    returns (decoder with EMA weights, history). `steps` counts this call's steps.

    `images` (a `clipspace.train.data.ImageSet`) trains on those images instead of the world; its
    embeddings are already computed, so `clip` may then be None (the set's `.clip` names the CLIP).
    `held_out_images` (an ImageSet) is the curve's held-out batch (default: the world's scenes, or,
    for `images`, its first 64 images)."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    start, seconds0, history = 0, 0.0, []
    if clip is None and images is None:
        raise ValueError("train(clip=None) needs `images` with precomputed embeddings")
    if images is not None:  # the CLIP of the embeddings the set holds
        info = dict(images.clip)
    else:
        from clipspace.train.data import clip_info

        info = clip_info(clip)
    embed_dim = int(images.z.shape[1] if images is not None else clip.embed_dim)
    if init is not None:
        from clipspace.unclip.decoder import load_decoder

        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        start, seconds0, history = _continue_from(Path(init), out)
        decoder = load_decoder(init)
        decoder.config = {k: v for k, v in decoder.config.items() if k not in RUN_KEYS}
        if embed_dim != decoder.embed_dim:
            raise ValueError(f"--init {init} is a decoder of {decoder.embed_dim}-d CLIP embeddings, CLIP "
                             f"{info['clip_model']!r} gives {embed_dim}-d; continue it with the CLIP it was trained on")
    else:
        from clipspace.unclip.decoder import get_decoder_config

        cfg = get_decoder_config(config)
        if images is not None and int(cfg["image_size"]) != images.size:
            raise ValueError(f"decoder config {config if isinstance(config, str) else 'given'} is "
                             f"{cfg['image_size']} px, the images were prepared at {images.size} px")
        cfg["clip_embed_dim"] = embed_dim  # from the CLIP actually used, not the config's
        decoder = build_decoder(cfg)
    # The name load_decoder checks: given, else the CLIP's (a checkpoint directory keeps the config's).
    name = str(info["clip_model"])
    decoder.config["clip_model"] = clip_name or (decoder.config["clip_model"] if Path(name).exists() else name)
    decoder.config["clip_weights_id"] = info.get("clip_weights_id") or ""
    if info.get("clip_pretrained") and not Path(str(info["clip_pretrained"])).is_dir():  # a tag or a file, not load_dir's
        decoder.config["clip_pretrained"] = str(info["clip_pretrained"])
    run_record = {}
    if images is not None:
        run_record = {"train_source": str(getattr(images, "source", "")), "train_images": len(images),
                      "augment": images.augment}
    unet = decoder.unet.to(dev).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)  # the average as a module: held-out loss, snapshots
    average = weight_average(unet, ema_decay, start)  # starts from the weights: a continued run's are its average
    sched = DDPMScheduler.from_config(decoder.config["scheduler"])
    p_drop = float(decoder.config.get("embedding_dropout", 0.1))
    size = decoder.image_size
    if images is not None and images.size != size:
        raise ValueError(f"the decoder is {size} px, the images were prepared at {images.size} px: pass --size {size}")
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    rng = np.random.default_rng(seed + start)  # a continued run draws other scenes than its first part
    held_out = None
    if out is not None:
        held_out = HeldOut(clip, size, sched, data=held_out_images if held_out_images is not None else images)
    scene_pool = None
    if pool and images is None:
        t_pool = time.perf_counter()
        scene_pool = ScenePool(clip, pool, size, rng, single_share=single_share)
        log.info("pool of %d scenes rendered and embedded in %.1f s", pool, time.perf_counter() - t_pool)
    t0 = time.perf_counter()
    bar = tqdm(range(steps), disable=not progress, desc="decoder", mininterval=5)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        if images is not None:
            x0, z = images.batch(rng, batch_size)
            x0, z = x0.to(dev), z.to(dev)
        elif scene_pool is not None:
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
                     **({"single_share": single_share} if single_share else {}), **run_record}
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


def _size_of_run(a) -> int:
    from clipspace.unclip.decoder import get_decoder_config

    if a.init is not None:
        return int(json.loads((Path(a.init) / "decoder_config.json").read_text())["image_size"])
    return int(get_decoder_config(config_for_size(a.size, a.config))["image_size"])


def prepare_images(a, clip, size: int):
    """(train set, held-out set, data record) for --images: read, embed once, split, described for the card."""
    from clipspace.train.data import AUGMENT_NOTES, ImageSet, split_held_out

    full = ImageSet.from_source(a.images, size, clip, a.augment, a.clip_name)
    val = ImageSet.from_source(a.val_images, size, clip, "none", a.clip_name) if a.val_images else None
    train_set, held, split = split_held_out(full, a.held_out, a.seed, val, a.val_images, "images")
    record = {"source": str(a.images), **split, "augment": a.augment,
              "augment_note": AUGMENT_NOTES[a.augment],
              "embeddings": ("precomputed in the parquet (the CLIP was not run)" if clip is None else
                             f"computed once with {clip.name} by encode_images (batched, cached on disk by file content)"),
              "size": size}
    return train_set, held, record


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m clipspace.train decoder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default=None,
                   help="CLIP to condition on: 'default' (the offline tiny CLIP), a load_clip name (an open_clip "
                        "architecture, hf-hub:...), or a model directory (default: 'default', or the CLIP a "
                        "parquet of embeddings names)")
    p.add_argument("--pretrained", "--clip-pretrained", dest="clip_pretrained", default=None,
                   help="open_clip pretrained tag or checkpoint file, if --clip is an architecture")
    p.add_argument("--clip-name", default=None,
                   help="CLIP name recorded in the decoder config, checked by load_decoder (default: the CLIP's)")
    p.add_argument("--images", default=None,
                   help="train on these images instead of the shapes world: a folder, a text file of paths, or a "
                        "parquet with a 'path' column (and 'embedding', precomputed: the CLIP is then not run)")
    p.add_argument("--val-images", default=None, help="held-out images for the curve (default: set aside from --images)")
    p.add_argument("--held-out", type=int, default=64,
                   help="images of --images set aside for the curve (at most a tenth; 0: none) (default %(default)s)")
    p.add_argument("--augment", default="crop+flip", choices=("none", "crop", "crop+flip"),
                   help="fixed augmentation of --images (default %(default)s; 'crop' for images with writing)")
    p.add_argument("--size", type=int, default=None,
                   help="decoder image size: picks the shipped config decoder-SIZE (32: decoder-tiny), or sets "
                        "--config's image_size")
    p.add_argument("--config", default=None, help=f"decoder config name or JSON path (default: {DEFAULT_DECODER})")
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
    config = config_for_size(a.size, a.config)  # an unknown --size fails before the run directory exists
    start_run(a)
    from clipspace.factory import load_clip
    from clipspace.train.data import read_image_source

    table = read_image_source(a.images) if a.images is not None else None
    precomputed = table is not None and table.embeddings is not None
    clip = None
    if precomputed:
        from clipspace.train.data import check_named_clip

        check_named_clip(table, a.clip, a.images)
    else:
        name = a.clip or "default"
        clip = load_clip(None if name == "default" else name, pretrained=a.clip_pretrained, device=a.device)
        clip.model.eval()
    record = None
    images = held = None
    if a.images is not None:
        images, held, record = prepare_images(a, clip, _size_of_run(a))
    desc = clip if clip is not None else images.clip
    cname = clip.name if clip is not None else desc["clip_model"]
    cdim = clip.embed_dim if clip is not None else desc["clip_embed_dim"]
    log.info("training decoder %s on %s (%d-d) for %d steps of %d on %s, data: %s", a.init or config, cname, cdim,
             a.steps, a.batch_size, a.device, a.images or "the shapes world")
    train(clip, config, a.steps, a.batch_size, a.lr, a.warmup, a.seed, a.out, a.checkpoint_every,
          not a.no_bf16, a.device, a.ema_decay, a.clip_name, pool=a.pool, init=a.init,
          min_snr=a.min_snr, single_share=a.single_share, images=images, held_out_images=held)
    if record is not None:
        from clipspace.train.cards import write_card

        (a.out / "data.json").write_text(json.dumps(record, indent=1) + "\n")
        log.info("card: %s", write_card(a.out, "decoder", record))
    if a.export_fp16:
        export_fp16(a.out, a.export_fp16)
        log.info("fp16 copy in %s", a.export_fp16)
    log.info("done")


if __name__ == "__main__":
    main()
