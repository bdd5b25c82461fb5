"""clipspace: see what CLIP embeddings encode.

    >>> import clipspace
    >>> clip = clipspace.load_clip()                       # the offline default, a tiny world-trained CLIP
    >>> clip = clipspace.load_clip("ViT-B-32", pretrained="openai")   # any open_clip model
"""
from .clip import ClipModel, load_clip
from .clip import ClipspaceError, UnknownModelError, UnsafeCheckpointError, WeightsNotAvailableError
from .embedding import Embeddings
from .images import BadImageError, load_image

__all__ = ["ClipModel", "load_clip", "ClipspaceError", "UnknownModelError", "UnsafeCheckpointError",
           "WeightsNotAvailableError", "Embeddings", "BadImageError", "load_image"]
__version__ = "0.1.0"
