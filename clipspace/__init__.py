"""clipspace: see what CLIP embeddings encode.

    >>> import clipspace
    >>> clip = clipspace.load_clip()                       # the offline default, a tiny world-trained CLIP
    >>> clip = clipspace.load_clip("ViT-B-32", pretrained="openai")   # any open_clip model

The names below are imported on first use (PEP 562), so `import clipspace` itself, and the
`clipspace doctor` command that must run when torch or torchvision is broken, import nothing heavy.
"""
from __future__ import annotations

import importlib

from clipspace.errors import (BadImageError, ClipspaceError, DecoderMismatchError, DecoderNotFoundError,  # no heavy imports
                     InvalidArgumentError, UnknownModelError, UnsafeCheckpointError, WeightsNotAvailableError)

_LAZY = {  # public name -> the module that defines it
    "ClipModel": "clip", "load_clip": "factory", "Embeddings": "embedding", "load_image": "images",
    "WORLD_TEMPLATES": "probes.zero_shot", "ZeroShotClassifier": "probes.zero_shot", "build_classifier": "probes.zero_shot",
    "typographic_attack": "probes.typographic", "write_text": "probes.typographic", "binding_probe": "probes.binding",
    "EmbeddingPCA": "maps.pca", "factor_table": "probes.factors", "load_decoder": "unclip.decoder", "decoder_for": "unclip.decoder",
    "slerp": "unclip.slerp", "load_prior": "unclip.prior", "prior_for": "unclip.prior", "generate": "unclip.generate",
    "load_unclip": "unclip.stacks", "stacks_for": "unclip.stacks", "Corpus": "corpus.corpus",
}

__all__ = ["ClipspaceError", "UnknownModelError", "UnsafeCheckpointError", "WeightsNotAvailableError",
           "BadImageError", "DecoderMismatchError", "InvalidArgumentError", "DecoderNotFoundError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    raise AttributeError(f"module 'clipspace' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
