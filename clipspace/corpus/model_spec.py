"""How a model travels to a Ray actor: as the name and tag `load_clip` takes, never as a pickle.

A pickled ClipModel would carry its weights through Ray's object store to every actor (hundreds of
MB for a real CLIP, once per actor) and tie the actors to this process's torch and open_clip
objects. Instead each actor calls `load_clip(name, pretrained)` itself (from the local caches of
its node: on a cluster every node needs the weights, or the network) and the weights it got are
checked against the driver's by their id, so a node that resolves a name to other weights fails
loudly instead of writing vectors of another space.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clipspace.errors import ClipspaceError


@dataclass(frozen=True)
class ModelSpec:
    """Arguments of `load_clip` that rebuild a model, and the weights id it must come back with."""

    name: str | None
    pretrained: str | None
    device: str
    weights_id: str

    def load(self):
        from clipspace.factory import load_arch, load_clip, _device

        if self.pretrained is None and self.name is not None and self.weights_id.startswith("random-seed"):
            clip = load_arch(self.name, None, _device(self.device))  # seeded random weights, as the driver built them
        else:
            clip = load_clip(self.name, self.pretrained, device=self.device)
        if clip.weights_id != self.weights_id:
            raise ClipspaceError(f"load_clip({self.name!r}, {self.pretrained!r}) gave weights {clip.weights_id!r} "
                                 f"here, not the driver's {self.weights_id!r}: every node must resolve the model "
                                 "to the same weights (copy the weights file, or pass model= a path all nodes see)")
        return clip


def resolve_model(model=None, pretrained: str | None = None, device: str | None = None):
    """(ClipModel, ModelSpec) for `model`: None (the offline default), a name or folder as
    `load_clip` takes it, or a loaded ClipModel (its name and tag say how to load it again)."""
    from clipspace.clip import ClipModel
    from clipspace.factory import DEFAULT_MODEL, DEFAULT_WEIGHTS, load_clip

    if isinstance(model, ClipModel):
        if pretrained is not None:
            raise ValueError("pretrained= goes with a model name, not with a loaded ClipModel")
        clip = model
    else:
        clip = load_clip(None if model is None else os.fspath(model), pretrained, device=device)
    dev = str(clip.device)
    tag = clip.pretrained
    if tag and tag.startswith("hf-hub:"):
        return clip, ModelSpec(tag, None, dev, clip.weights_id)
    if tag and Path(tag).is_dir():
        if clip.name == DEFAULT_MODEL and Path(tag).resolve() == DEFAULT_WEIGHTS.resolve():
            return clip, ModelSpec(None, None, dev, clip.weights_id)
        return clip, ModelSpec(tag, None, dev, clip.weights_id)
    return clip, ModelSpec(clip.name, tag, dev, clip.weights_id)
