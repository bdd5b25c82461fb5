"""load_clip: every route (default folder, file, folder, hub cache, tag) gives back the same model
it was saved from; unsafe pickles, missing weights offline and unknown names fail clearly."""
import hashlib
import json
import socket
import time

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from clipspace import factory
from clipspace import load_clip
from clipspace.errors import UnknownModelError, UnsafeCheckpointError, WeightsNotAvailableError
from clipspace.train.clip import save_checkpoint

TEXTS = ["a red circle", "two blue squares"]


@pytest.fixture(scope="module")
def source(build_random_clip):
    """A seeded random tiny CLIP, different from the session fixture (seed 3)."""
    return build_random_clip("clipspace-tiny", seed=3)


@pytest.fixture(scope="module")
def probe_images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 64, 3), dtype=np.uint8)) for i in range(3)]


def embeddings(clip, images):
    """open_clip's own calls: the reference every loaded model must reproduce."""
    with torch.inference_mode():
        z_img = clip.model.encode_image(torch.stack([clip.preprocess(im) for im in images]), normalize=True)
        z_txt = clip.model.encode_text(clip.tokenizer(TEXTS), normalize=True)
    return z_img.numpy(), z_txt.numpy()


def assert_same_model(loaded, source, images):
    for a, b in zip(embeddings(loaded, images), embeddings(source, images)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.fixture
def model_dir(tmp_path, source):
    save_checkpoint(source.model, "clipspace-tiny", tmp_path / "clipspace-tiny", "open_clip_model.safetensors")
    return tmp_path / "clipspace-tiny"


def test_default_without_weights_says_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setattr(factory, "DEFAULT_WEIGHTS", tmp_path / "missing")
    with pytest.raises(WeightsNotAvailableError, match=r"python -m clipspace\.train clip --out"):
        load_clip()


def test_default_loads_the_weights_folder(model_dir, monkeypatch, source, probe_images):
    # Its speed (under 2 s) is a benchmark figure, not a timed test: this machine's load varies.
    monkeypatch.setattr(factory, "DEFAULT_WEIGHTS", model_dir)
    clip = load_clip()
    assert (clip.name, clip.embed_dim, clip.image_size, clip.context_length) == ("clipspace-tiny", 128, 64, 32)
    assert clip.device == torch.device("cpu") and not clip.model.training
    weights = (model_dir / "open_clip_model.safetensors").read_bytes()
    assert clip.weights_id == "sha256:" + hashlib.sha256(weights).hexdigest()
    assert_same_model(clip, source, probe_images)


def test_folder_by_path_and_by_local_dir_schema(model_dir, source, probe_images):
    for name in (str(model_dir), f"local-dir:{model_dir}"):
        assert_same_model(load_clip(name), source, probe_images)


def test_checkpoint_files(tmp_path, source, probe_images):
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "w.pt")  # plain tensors: torch.load(weights_only=True) accepts it
    for f in ("w.safetensors", "w.pt"):
        clip = load_clip("clipspace-tiny", pretrained=str(tmp_path / f))
        assert clip.pretrained == str(tmp_path / f)
        assert_same_model(clip, source, probe_images)


def test_weights_id_follows_file_content(tmp_path, source):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    first = load_clip("clipspace-tiny", pretrained=str(path)).weights_id
    state = {k: v.contiguous() + (1 if k == "logit_scale" else 0) for k, v in source.model.state_dict().items()}
    save_file(state, str(path))
    assert load_clip("clipspace-tiny", pretrained=str(path)).weights_id != first


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_with_arbitrary_object_refused(tmp_path, model_dir):
    sentinel = tmp_path / "code-ran"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload(sentinel)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="evil.pt.*safetensors"):
        load_clip("clipspace-tiny", pretrained=str(tmp_path / "evil.pt"))
    (model_dir / "open_clip_model.safetensors").unlink()  # a folder whose only weights are the pickle
    (tmp_path / "evil.pt").rename(model_dir / "open_clip_pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError):
        load_clip(str(model_dir))
    assert not sentinel.exists()


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1, empty caches, and any connection attempt is a test failure."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # open_clip's URL cache is ~/.cache/clip

    def no_network(*args, **kwargs):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return tmp_path / "hub"


def test_offline_tag_not_cached_fails_fast_and_says_what_to_do(offline):
    t = time.perf_counter()
    with pytest.raises(WeightsNotAvailableError) as e:
        load_clip("ViT-B-32", pretrained="openai")
    assert time.perf_counter() - t < 20.0  # no retry loop with back-off (a hang, not a speed figure)
    msg = str(e.value)
    for needed in ("ViT-B-32", "'openai'", "offline", "HF_HUB_OFFLINE=1", str(offline), "pretrained='/path/to/"):
        assert needed in msg
    assert e.value.__cause__ is None and e.value.__context__ is None  # no hub-client traceback chained


def test_offline_hub_name_not_cached(offline):
    with pytest.raises(WeightsNotAvailableError, match=r"hf-hub:org/nothing.*HF_HUB_OFFLINE"):
        load_clip("hf-hub:org/nothing")


def fake_hub_snapshot(hub, repo, model_dir):
    """Lay out `model_dir`'s files as huggingface_hub's cache does after a download."""
    root = hub / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in model_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0" * 40)


def test_offline_hub_name_and_tag_load_from_cache(offline, model_dir, source, probe_images, monkeypatch):
    fake_hub_snapshot(offline, "org/tiny", model_dir)
    clip = load_clip("hf-hub:org/tiny")
    assert clip.pretrained == "hf-hub:org/tiny"
    assert_same_model(clip, source, probe_images)
    # a pretrained tag registered as open_clip registers its own, pointing at that hub repo
    tag = {"hf_hub": "org/tiny/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "clipspace-tiny", {"test": tag})
    clip = load_clip("clipspace-tiny", pretrained="test")
    normalize = clip.preprocess.transforms[-1]
    assert tuple(normalize.mean) == tag["mean"] and tuple(normalize.std) == tag["std"]  # the tag's preprocess
    with torch.inference_mode():
        x = torch.rand(1, 3, 64, 64)
        np.testing.assert_allclose(clip.model.encode_image(x), source.model.encode_image(x), atol=1e-6)


def test_unknown_names_suggest_close_matches():
    with pytest.raises(UnknownModelError, match=r"'ViT-B-23'.*Close matches: .*ViT-B-32"):
        load_clip("ViT-B-23")
    with pytest.raises(UnknownModelError, match=r"'opnai'.*Close matches: openai"):
        load_clip("ViT-B-32", pretrained="opnai")
    with pytest.raises(WeightsNotAvailableError, match="checkpoint file not found"):
        load_clip("ViT-B-32", pretrained="/nowhere/w.safetensors")
    with pytest.raises(WeightsNotAvailableError, match="folder not found"):
        load_clip("/nowhere/model")


def test_random_architecture_is_seeded_and_warned():
    with pytest.warns(UserWarning, match="random weights"):
        a = load_clip("ViT-S-32-alt")
    with pytest.warns(UserWarning):
        b = load_clip("ViT-S-32-alt")
    assert a.weights_id == b.weights_id == "random-seed0"
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert (a.image_size, a.context_length) == (224, 77)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        load_clip("ViT-S-32-alt", device="cuda")
