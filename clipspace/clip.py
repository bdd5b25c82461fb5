"""`ClipModel`: a loaded CLIP (model, preprocess, tokenizer) and what a user needs to know of it.

`clipspace.factory.load_clip` builds one from any name; `clipspace.embedding` does the embedding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from clipspace.embedding import encode_images, encode_texts


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
        return encode_images(self, images, batch_size=batch_size, **kwargs)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, **kwargs) -> np.ndarray:
        """Embed texts: see `embedding.encode_texts` (reports texts cut at the context length)."""
        return encode_texts(self, texts, batch_size=batch_size, **kwargs)
