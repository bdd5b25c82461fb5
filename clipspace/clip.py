"""One way to load any CLIP model and embed images and texts with it.

`load_clip()` wraps open_clip's factory: the offline default (a config shipped in this package,
registered with open_clip, weights in `clipspace/weights/`), any open_clip architecture and tag,
`hf-hub:` names, and local checkpoint files or directories all go through the same call.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import open_clip
import torch

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "model_configs"
WEIGHTS_DIR = PACKAGE_DIR / "weights"
DEFAULT_MODEL = "clipspace-tiny"
DEFAULT_WEIGHTS = WEIGHTS_DIR / DEFAULT_MODEL

open_clip.add_model_config(CONFIG_DIR)  # the tiny model is one more config, like ViT-B-32


class ClipspaceError(Exception):
    """Base of clipspace's own errors: each message names the input at fault and what to do."""


class WeightsNotAvailableError(ClipspaceError, FileNotFoundError):
    """Weights that are not on this machine (and cannot or may not be downloaded)."""


class UnknownModelError(ClipspaceError, ValueError):
    """A model architecture or pretrained tag open_clip does not know."""


class UnsafeCheckpointError(ClipspaceError, ValueError):
    """A checkpoint that would need unpickling arbitrary objects to load."""


@dataclass
class ClipModel:
    """A loaded CLIP model with its preprocess and tokenizer, and what a user needs to know of it."""

    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    name: str
    pretrained: str | None
    device: torch.device
    weights_id: str = ""  # identifies the weights in cache keys ("sha256:..." of the file); "" = never cache

    def __repr__(self) -> str:  # the dataclass default would print the whole network
        return (f"ClipModel(name={self.name!r}, pretrained={self.pretrained!r}, embed_dim={self.embed_dim}, "
                f"image_size={self.image_size}, context_length={self.context_length}, device={str(self.device)!r})")

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") and \
            isinstance(self.model.text_projection, torch.Tensor) else int(self.model.visual.output_dim)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", self.model.context_length))

    # --- embedding -----------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_tensors(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a preprocessed batch (N, 3, H, W): float32, L2-normalised rows."""
        z = self.model.encode_image(pixels.to(self.device), normalize=True)
        return z.float().cpu().numpy()

    def encode_images(self, images, batch_size: int = 64, **kwargs) -> np.ndarray:
        """Embed images (paths, PIL images, numpy arrays, or a folder): see `embedding.encode_images`."""
        from .embedding import encode_images

        return encode_images(self, images, batch_size=batch_size, **kwargs)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, **kwargs) -> np.ndarray:
        """Embed texts: see `embedding.encode_texts` (reports texts cut at the context length)."""
        from .embedding import encode_texts

        return encode_texts(self, texts, batch_size=batch_size, **kwargs)


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "cpu":
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for, but torch sees no CUDA GPU; use device='cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device={device!r} was asked for, but MPS is not available; use device='cpu'")
    return dev


def load_clip(name: str | os.PathLike | None = None, pretrained: str | None = None,
              device: str | torch.device | None = None) -> ClipModel:
    """Load a CLIP model through open_clip's factory (weights: safetensors or torch.load(weights_only=True)).

    - `load_clip()`: the offline default, a tiny CLIP trained on the shapes world (`clipspace.world`).
    - `load_clip("ViT-B-32", pretrained="openai")`: any open_clip architecture and tag
      (`open_clip.list_pretrained()`), or `pretrained="/path/to/checkpoint.safetensors"`. Without
      `pretrained`, an architecture gets seeded random weights (and a warning).
    - `load_clip("hf-hub:org/repo")`: a model from the Hugging Face hub.
    - `load_clip("/path/to/dir")` or `"local-dir:/path"`: a folder holding `open_clip_config.json` and weights.
    Weights already in the local caches load without the network; with HF_HUB_OFFLINE=1 missing ones
    raise WeightsNotAvailableError at once. `device`: "cpu" (default), "cuda", "mps".
    """
    from .loading import load_clip as _load

    return _load(name, pretrained, _device(device))
