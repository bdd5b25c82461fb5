"""clipspace: see what CLIP embeddings encode.

    >>> import clipspace
    >>> clip = clipspace.load_clip()                       # the offline default, a tiny world-trained CLIP
    >>> clip = clipspace.load_clip("ViT-B-32", pretrained="openai")   # any open_clip model
"""
from .clip import ClipModel, load_clip
from .clip import ClipspaceError, UnknownModelError, UnsafeCheckpointError, WeightsNotAvailableError
from .embedding import Embeddings
from .images import BadImageError, load_image
from .zero_shot import WORLD_TEMPLATES, ZeroShotClassifier, build_classifier  # not zero_shot(): it would hide the module
from .typographic import typographic_attack, write_text
from .binding import binding_probe
from .pca import EmbeddingPCA
from .factor_probes import factor_table
from .decoder import DecoderMismatchError, DecoderNotFoundError, load_decoder
from .slerp import slerp

__all__ = ["ClipModel", "load_clip", "ClipspaceError", "UnknownModelError", "UnsafeCheckpointError",
           "WeightsNotAvailableError", "Embeddings", "BadImageError", "load_image",
           "WORLD_TEMPLATES", "ZeroShotClassifier", "build_classifier", "typographic_attack", "write_text",
           "binding_probe", "EmbeddingPCA", "factor_table", "load_decoder", "DecoderMismatchError",
           "DecoderNotFoundError", "slerp"]
__version__ = "0.1.0"
