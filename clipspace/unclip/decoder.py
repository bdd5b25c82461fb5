"""Diffusion decoders conditioned on a CLIP image embedding: one small interface, and the offline one.

unCLIP's decoder turns a CLIP image embedding z_i back into an image. `unclip/latents.py` (inversion,
variations, interpolation, text diffs) talks to any decoder through the `Decoder` protocol below;
two implementations exist:

- `PixelDecoder` (here): the offline decoder, a small diffusers `UNet2DConditionModel` in pixel
  space trained on the shapes world (`python -m clipspace.train decoder`). z_i enters as unCLIP and
  Stable unCLIP feed it: projected (`class_embed_type="projection"`) and added to the timestep
  embedding; no cross-attention. It was trained with z_i zeroed 10% of the time, so z = 0 is the
  unconditional model and classifier-free guidance works.
- `StableUnclipDecoder` (`unclip/stable_unclip.py`): Stable unCLIP in VAE latent space, for users with a GPU.

The architecture is data: `model_configs/decoder-*.json` holds the UNet kwargs, the noise schedule,
the image size and the CLIP model it pairs with; `build_decoder` is the one factory.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from clipspace.errors import DecoderMismatchError, DecoderNotFoundError
from clipspace.factory import WEIGHTS_DIR, read_model_config, write_model_dir

DEFAULT_DECODER = "decoder-tiny"
DEFAULT_CLIP = "clipspace-tiny"  # the CLIP the offline decoder was trained on
DEFAULT_DECODER_WEIGHTS = WEIGHTS_DIR / DEFAULT_DECODER
CONFIG_FILE = "decoder_config.json"
WEIGHTS_FILE = "decoder.safetensors"


@runtime_checkable
class Decoder(Protocol):
    """What `unclip/latents.py` needs of a decoder. `x` lives in the diffusion space: pixels in [-1, 1]
    for a pixel decoder, scaled VAE latents for a latent one."""

    scheduler: DDIMScheduler  # its config defines the sampling schedule; callers make fresh copies
    image_size: int  # pixels of a decoded image (square)
    embed_dim: int  # CLIP embedding size it was trained on
    clip_name: str  # the CLIP model it pairs with

    @property
    def latent_shape(self) -> tuple[int, int, int]: ...  # (C, h, w) of x

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor: ...  # [-1, 1] (N, 3, H, W) -> x

    def decode_pixels(self, x: torch.Tensor) -> torch.Tensor: ...  # x -> [-1, 1] pixels

    def predict(self, x: torch.Tensor, t, z: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        """The model output (in `scheduler.config.prediction_type`) for x at timestep t given
        unit-norm embeddings z (N, embed_dim), with classifier-free guidance."""
        ...

    def check_clip(self, clip) -> None: ...  # raise DecoderMismatchError if `clip` is not its CLIP


class UNetDecoder:
    """What every decoder over a diffusers UNet shares: device and dtype are the UNet's, and x is
    (C, s, s) with s = image_size // latent_scale (1 in pixel space, the autoencoder's downsampling
    in a latent space)."""

    latent_scale = 1

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.image_size // self.latent_scale
        return (int(self.unet.config.in_channels), s, s)


class VaeLatents:
    """x in an AutoencoderKL's latent space (Stable unCLIP, SD image variations): the encoder's mean
    (deterministic, so inversion is repeatable) times the VAE's scaling factor, and back."""

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.vae.device, self.vae.dtype)
        return self.vae.encode(pixels).latent_dist.mean * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(x.to(self.vae.dtype) / self.vae.config.scaling_factor).sample


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """GLIDE's guided prediction: uncond + scale * (cond - uncond); scale 1 is the conditional model."""
    return uncond + scale * (cond - uncond)


def same_clip_name(a: str, b: str) -> bool:
    """Equal names, or a local directory named after the architecture (.../clipspace-tiny)."""
    a, b = str(a), str(b)
    return a == b or Path(a.rstrip("/")).name == b or Path(b.rstrip("/")).name == a


# ---------------------------------------------------------------------------------------------
# The offline decoder
# ---------------------------------------------------------------------------------------------
def get_decoder_config(name_or_path: str | os.PathLike | dict = DEFAULT_DECODER) -> dict:
    """A decoder config: a dict, a JSON file, or the name of one in `clipspace/model_configs/`."""
    return read_model_config(name_or_path, "decoder")


def unet_kwargs(config: dict) -> dict:
    """UNet2DConditionModel kwargs: the config's `unet` block, with the two sizes it shares with
    the rest of the config filled in from there (one source of truth)."""
    kw = dict(config["unet"])
    kw["sample_size"] = config["image_size"]
    kw["projection_class_embeddings_input_dim"] = config["clip_embed_dim"]
    return kw


class PixelDecoder(UNetDecoder):
    """A pixel-space diffusion decoder conditioned on a unit-norm CLIP image embedding."""

    def __init__(self, unet: UNet2DConditionModel, config: dict):
        self.unet = unet
        self.config = config
        self.scheduler = DDIMScheduler(**config["scheduler"])
        self.image_size = int(config["image_size"])
        self.embed_dim = int(config["clip_embed_dim"])
        self.clip_name = str(config["clip_model"])

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.unet.parameters())
        return (f"PixelDecoder({self.image_size}px, {n / 1e6:.2f}M params, clip={self.clip_name!r}, "
                f"embed_dim={self.embed_dim}, prediction={self.scheduler.config.prediction_type})")

    def to(self, device=None, dtype=None) -> "PixelDecoder":
        self.unet.to(device=device, dtype=dtype)
        return self

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels  # pixel space: the diffusion runs on the image itself

    def decode_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t, z: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        z = z.to(device=x.device, dtype=x.dtype)
        if guidance == 1.0:  # the conditional model alone: half the work
            return self.unet(x, t, encoder_hidden_states=None, class_labels=z).sample
        both = self.unet(torch.cat([x, x]), t, encoder_hidden_states=None,
                         class_labels=torch.cat([torch.zeros_like(z), z])).sample  # z = 0: unconditional
        uncond, cond = both.chunk(2)
        return classifier_free_guidance(uncond, cond, guidance)

    def check_clip(self, clip) -> None:
        if int(clip.embed_dim) != self.embed_dim or not same_clip_name(clip.name, self.clip_name):
            raise DecoderMismatchError(
                f"this decoder was trained on {self.clip_name!r} image embeddings ({self.embed_dim}-d), "
                f"but the CLIP given is {clip.name!r} ({clip.embed_dim}-d); load the matching CLIP "
                f"(load_clip({self.clip_name!r})) or a decoder trained on this one")


def decoder_for(clip, device: str | torch.device | None = None) -> tuple[Decoder | None, str]:
    """The decoder that pairs with `clip`, or (None, one line saying why there is none and what would pair).

    Every notebook and panel that decodes asks this, once, so a CLIP without a decoder (a real model
    in the first cell) skips the decoding sections with that line instead of stopping. Found here: the
    decoder of a stack loaded with this very CLIP object (`stacks.load_unclip(...)`, remembered
    weakly), else the offline one for the offline default CLIP. Pretrained stacks are never loaded
    from here (gigabytes): the line names the ones that pair (`stacks.stacks_for`)."""
    from clipspace.unclip import stacks

    if (stack := stacks.loaded_stack(clip)) is not None:
        return stack.decoder, ""
    try:
        return load_decoder(clip=clip, device=device), ""
    except DecoderMismatchError:
        return None, (f"No decoder pairs with {clip.name!r} ({clip.embed_dim}-d): the offline decoder draws "
                      f"{DEFAULT_CLIP!r} embeddings only, so the sections that decode are skipped; "
                      f"{stacks.pairing_hint(clip)}.")
    except DecoderNotFoundError as e:
        return None, f"No decoder: {e}"


def build_decoder(config: str | os.PathLike | dict = DEFAULT_DECODER, seed: int | None = None) -> PixelDecoder:
    """A decoder with freshly initialised weights (seeded if `seed` is given) from a config."""
    config = get_decoder_config(config)
    if seed is not None:
        torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_kwargs(config))
    return PixelDecoder(unet.eval(), config)


# kept: diffusers' save_pretrained puts the same tensors in unet/ + scheduler/; the shipped files' readers use ours
def save_decoder(decoder: PixelDecoder, out: str | os.PathLike, fp16: bool = False,
                 unet: torch.nn.Module | None = None, extra: dict | None = None) -> Path:
    """Write `decoder_config.json` + `decoder.safetensors` (the UNet's state dict) into `out`.
    `unet` overrides the weights written (the trainer passes its EMA copy); `extra` adds keys to
    the JSON (training provenance)."""
    return write_model_dir(out, (unet or decoder.unet).state_dict(), {**decoder.config, **(extra or {})},
                           WEIGHTS_FILE, CONFIG_FILE, fp16=fp16)


def load_decoder(path: str | os.PathLike | None = None, clip=None,
                 device: str | torch.device | None = None) -> PixelDecoder:
    """Load a trained decoder directory (`decoder_config.json` + `decoder.safetensors`).

    `path=None` is the shipped offline decoder (`clipspace/weights/decoder-tiny/`). Given `clip`,
    checks that the decoder was trained on that CLIP's embeddings (DecoderMismatchError if not).
    """
    from safetensors.torch import load_file

    default = path is None
    path = Path(DEFAULT_DECODER_WEIGHTS if default else path)
    if not (path / WEIGHTS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        if default:
            raise DecoderNotFoundError(
                f"the offline decoder is not trained yet: no {WEIGHTS_FILE} in {path}. Train it with "
                f"`python -m clipspace.train decoder --clip default --out runs/decoder` and copy that "
                f"directory to {path}, or pass load_decoder(path=...)")
        raise DecoderNotFoundError(f"{path} is not a decoder directory: it needs {CONFIG_FILE} and {WEIGHTS_FILE} "
                                   f"(written by `python -m clipspace.train decoder --out DIR`)")
    config = json.loads((path / CONFIG_FILE).read_text())
    decoder = build_decoder(config)
    state = load_file(str(path / WEIGHTS_FILE))
    decoder.unet.load_state_dict(state, strict=True)  # copies fp16 files into the fp32 model
    if device is not None:
        decoder.to(device=torch.device(device))
    if clip is not None:
        decoder.check_clip(clip)
    return decoder
