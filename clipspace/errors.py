"""clipspace's own errors, in one place: each message names the input at fault and what to do.

Every error here derives from `ClipspaceError`, so `except ClipspaceError` catches anything
clipspace raised on purpose; each also derives from the builtin a caller would expect
(FileNotFoundError for missing weights, ValueError for bad input).
"""
from __future__ import annotations

import os


class ClipspaceError(Exception):
    """Base of clipspace's own errors."""


class WeightsNotAvailableError(ClipspaceError, FileNotFoundError):
    """Weights that are not on this machine (and cannot or may not be downloaded)."""


class UnknownModelError(ClipspaceError, ValueError):
    """A model architecture or pretrained tag open_clip does not know."""


class UnsafeCheckpointError(ClipspaceError, ValueError):
    """A checkpoint that would need unpickling arbitrary objects to load."""


class InvalidArgumentError(ClipspaceError, ValueError):
    """An argument out of its range, NaN, empty or of the wrong shape; the message names it."""


class DecoderMismatchError(ClipspaceError, ValueError):
    """The decoder was trained on embeddings of another CLIP model than the one given."""


class DecoderNotFoundError(ClipspaceError, FileNotFoundError):
    """No decoder weights where they were looked for."""


class DecoderNotAvailableError(ClipspaceError, OSError):
    """Pretrained decoder weights (Stable unCLIP) neither in a local directory nor in the Hugging Face cache."""


class BadImageError(ClipspaceError, ValueError):
    """An image that cannot be read; `.source` names it, `.reason` says why."""

    def __init__(self, source, reason: str):
        self.source, self.reason = source, reason
        super().__init__(f"{describe_source(source)}: {reason}")


def describe_source(source) -> str:
    """A short human name for an image source, for error messages (no PIL or numpy import needed)."""
    if isinstance(source, (str, os.PathLike)):
        return str(source) or repr(str(source))  # '' for an empty path, not nothing
    kind = type(source).__name__
    if hasattr(source, "mode") and hasattr(source, "size"):  # a PIL image
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    if hasattr(source, "dtype") and hasattr(source, "shape"):  # a numpy array
        return f"<array {source.dtype} {tuple(source.shape)}>"
    return f"<{kind}>"


class PriorMismatchError(ClipspaceError, ValueError):
    """The prior was trained on embeddings of another CLIP model than the one given."""


class PriorNotFoundError(ClipspaceError, FileNotFoundError):
    """No prior weights where they were looked for."""


class UnclipStackNotAvailableError(WeightsNotAvailableError, DecoderNotAvailableError):
    """Parts of a pretrained unCLIP stack (CLIP, decoder, prior) not on this machine while offline;
    `.missing` lists each part with its repo and the folder looked in."""

    missing: tuple = ()  # set on each instance by clipspace.unclip.stacks
