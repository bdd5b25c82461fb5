"""The tiny CLIP's config registration and a few real training steps."""
import json

import numpy as np
import open_clip
import torch

import clipspace  # noqa: F401  (registers the shipped configs)
from clipspace import world
from clipspace.clip import CONFIG_DIR
from clipspace.train.clip import save_checkpoint, scenes_to_tensor, train


def test_config_is_registered_with_open_clip():
    assert "clipspace-tiny" in open_clip.list_models()
    cfg = json.loads((CONFIG_DIR / "clipspace-tiny.json").read_text())
    assert open_clip.get_model_config("clipspace-tiny") == cfg
    tok = open_clip.get_tokenizer("clipspace-tiny")
    assert isinstance(tok, open_clip.SimpleTokenizer) and tok.context_length == cfg["text_cfg"]["context_length"]


def test_training_tensors_equal_open_clip_preprocess():
    model, _, preprocess = open_clip.create_model_and_transforms("clipspace-tiny", pretrained=None)
    scenes = world.mixed_scenes(4, seed=2)
    ours = scenes_to_tensor(scenes, 64, model.visual.image_mean, model.visual.image_std)
    theirs = torch.stack([preprocess(s.render(64)) for s in scenes])
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_a_few_steps_are_reproducible_and_learn(tmp_path):
    _, h1 = train(steps=24, batch_size=16, lr=2e-3, warmup=4, seed=5, progress=False)
    _, h2 = train(steps=3, batch_size=16, lr=2e-3, warmup=4, seed=5, progress=False)
    losses = [h["loss"] for h in h1]
    assert losses[:2] == [h["loss"] for h in h2[:2]]  # same seed, same numbers
    assert all(np.isfinite(losses)) and np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.2


def test_checkpoint_loads_back_through_open_clip_local_dir(tmp_path):
    torch.manual_seed(0)
    model = open_clip.create_model("clipspace-tiny", pretrained=None).eval()
    save_checkpoint(model, "clipspace-tiny", tmp_path, "open_clip_model.safetensors")
    again = open_clip.create_model(f"local-dir:{tmp_path}").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), again.encode_image(x), atol=1e-6)
