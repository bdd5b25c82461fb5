"""The prior's trainer (clipspace.train.prior): a few steps on a tiny config, resumable, files written;
and the measurement script's pieces on the same tiny models."""
import json
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "unit"))
from test_prior import tiny_prior_config  # noqa: E402

from clipspace import world  # noqa: E402
from clipspace.train import prior as trainer  # noqa: E402
from clipspace.unclip.prior import get_prior_config, load_prior  # noqa: E402


@pytest.fixture(scope="module")
def run(tiny_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior-run")
    cfg = tiny_prior_config(clip_model=tiny_clip.name)
    prior, history = trainer.train(tiny_clip, cfg, steps=40, batch_size=64, lr=3e-3, warmup=5, out=out,
                                   checkpoint_every=20, pool=384, held_out=16, progress=False)
    return out, prior, history


def test_loss_falls_and_files_are_written(run, tiny_clip):
    out, prior, history = run
    losses = [h["loss"] for h in history]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    assert {p.name for p in out.iterdir()} >= {"prior_config.json", "prior.safetensors", "history.jsonl"}
    assert (out / "checkpoints" / "step000020" / "prior.safetensors").is_file()
    cfg = json.loads((out / "prior_config.json").read_text())
    assert cfg["trained_steps"] == 40 and cfg["clip_weights_id"] == tiny_clip.weights_id
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [20, 40]
    assert all(-1 <= r["val_cosine"] <= 1 and r["val_mean_gap"] >= 0 for r in rows if "val_loss" in r)
    # the data's statistics are stored with the weights and loaded back
    back = load_prior(out, clip=tiny_clip)
    torch.testing.assert_close(back.transformer.clip_std, prior.transformer.clip_std)
    assert float(back.transformer.clip_std.min()) > 0 and not torch.allclose(back.transformer.clip_std,
                                                                             torch.ones_like(back.transformer.clip_std))


def test_resume_continues_the_step_count(run, tiny_clip, tmp_path):
    out, prior, _ = run
    more, history = trainer.train(tiny_clip, steps=10, batch_size=32, out=tmp_path, init=out, pool=128,
                                  held_out=8, progress=False, checkpoint_every=0)
    assert history[0]["step"] == 1 and history[-1]["step"] == 50 and len(history) == 50
    assert json.loads((tmp_path / "prior_config.json").read_text())["trained_steps"] == 50
    # statistics carried over, not recomputed from the new pool
    torch.testing.assert_close(more.transformer.clip_mean, prior.transformer.clip_mean)


def test_cli_trains_and_logs(tiny_clip, tmp_path, monkeypatch):
    import clipspace.factory

    monkeypatch.setattr(clipspace.factory, "load_clip", lambda *a, **k: tiny_clip)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_prior_config(clip_model=tiny_clip.name)))
    from clipspace.train.__main__ import main

    main(["prior", "--config", str(cfg), "--steps", "3", "--batch-size", "8", "--pool", "64", "--held-out", "8",
          "--out", str(tmp_path / "r"), "--no-progress"])
    assert (tmp_path / "r" / "prior.safetensors").is_file() and (tmp_path / "r" / "train.log").is_file()
    assert json.loads((tmp_path / "r" / "train_args.json").read_text())["steps"] == "3"


def test_shipped_config_is_the_proposed_size():
    from clipspace.unclip.prior import build_prior

    p = build_prior(get_prior_config("prior-tiny"), seed=0)
    n = sum(x.numel() for x in p.transformer.parameters())
    assert 0.5e6 < n < 1.5e6 and p.transformer.config.num_layers == 4
    assert p.scheduler.config.prediction_type == "sample"


def test_measure_pieces(tiny_clip):
    from clipspace.train import measure_prior as m

    ims = [s.render(32) for s in world.single_objects(6)]
    assert list(m.pixel_colour(ims)) == [s.objects[0].colour for s in world.single_objects(6)]
    z = np.eye(3)
    assert m.mean_pairwise_cosine(z) == 0.0 and m.mean_pairwise_cosine(np.ones((4, 3))) == pytest.approx(1.0)
