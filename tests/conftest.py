"""Shared fixtures: real open_clip models built from configs with seeded random weights (no downloads)."""
import os

import numpy as np
import open_clip
import pytest
import torch

from clipspace.clip import ClipModel
import clipspace.factory  # noqa: F401 (registers the shipped model configs with open_clip)


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


@pytest.fixture(name="build_random_clip", scope="session")
def _build_random_clip_fixture():
    """`build_random_clip(name, seed)`: any open_clip architecture with seeded random weights."""
    return build_random_clip


def tiny_decoder_config(**over) -> dict:
    """The offline decoder's config shrunk to 16 px and two 8/16-channel blocks: a UNet that trains in seconds."""
    from clipspace.unclip.decoder import get_decoder_config

    cfg = get_decoder_config("decoder-tiny")
    cfg["image_size"] = 16
    cfg["unet"].update(block_out_channels=[8, 16], norm_num_groups=4,
                       down_block_types=["DownBlock2D"] * 2, up_block_types=["UpBlock2D"] * 2)
    cfg.update(over)
    return cfg


@pytest.fixture(name="tiny_config", scope="session")
def _tiny_config_fixture():
    """`tiny_config(**overrides)`: see `tiny_decoder_config`."""
    return tiny_decoder_config


_TIERS = ("unit", "integration", "acceptance")


def pytest_collection_modifyitems(config, items):
    """Each test gets its tier's marker from its folder; the notebooks (nbval) are acceptance tests."""
    for item in items:
        parts = item.path.parts
        tier = next((t for t in _TIERS if t in parts and "tests" in parts), None)
        if tier is None and item.path.suffix == ".ipynb":
            tier = "acceptance"
        if tier:
            item.add_marker(getattr(pytest.mark, tier))
