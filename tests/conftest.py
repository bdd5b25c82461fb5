"""Shared fixtures: real open_clip models built from configs with seeded random weights (no downloads)."""
import os

import numpy as np
import open_clip
import pytest
import torch

from clipspace.clip import ClipModel


def build_random_clip(name: str = "clipspace-tiny", seed: int = 0) -> ClipModel:
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    model.eval()
    return ClipModel(model=model, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(name), name=name,
                     pretrained=None, device=torch.device("cpu"), weights_id=f"random-seed{seed}")


@pytest.fixture(scope="session")
def tiny_clip() -> ClipModel:
    """The offline default's architecture with random weights: fast, and real open_clip code."""
    return build_random_clip("clipspace-tiny", seed=0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True, scope="session")
def _isolated_embedding_cache(tmp_path_factory):
    """Tests never read or write the user's embedding cache (~/.cache/clipspace)."""
    old = os.environ.get("CLIPSPACE_CACHE_DIR")
    os.environ["CLIPSPACE_CACHE_DIR"] = str(tmp_path_factory.mktemp("clipspace-cache"))
    yield
    if old is None:
        os.environ.pop("CLIPSPACE_CACHE_DIR", None)
    else:
        os.environ["CLIPSPACE_CACHE_DIR"] = old
