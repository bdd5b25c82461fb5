"""The tiny CLIP's config registration and a few real training steps."""
import json

import numpy as np
import open_clip
import torch

import clipspace  # noqa: F401  (registers the shipped configs)
from clipspace import world
from clipspace.factory import CONFIG_DIR
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


def test_lr_schedule_is_linear_warm_up_then_diffusers_half_cosine():
    # Reference for the cosine part: diffusers' get_cosine_schedule_with_warmup. Its warm-up starts at 0
    # (lr * step / warmup); ours, which trained the shipped models, at lr / warmup, one step ahead.
    from diffusers.optimization import get_cosine_schedule_with_warmup

    from clipspace.train.clip import lr_at

    steps, warmup, lr = 50, 8, 1e-3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = get_cosine_schedule_with_warmup(opt, warmup, steps)
    theirs = []
    for _ in range(steps):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [lr_at(s, steps, lr, warmup) for s in range(steps)]
    np.testing.assert_allclose(ours[warmup:], theirs[warmup:], rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(ours[:warmup], [lr * (s + 1) / warmup for s in range(warmup)], rtol=1e-12)
    assert ours[warmup - 1] == ours[warmup] == lr and theirs[0] == 0.0
