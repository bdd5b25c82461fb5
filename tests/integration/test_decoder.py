"""The offline decoder: config as data, save/load, CLIP matching, guidance, and the trainer."""
import json

import numpy as np
import open_clip
import pytest
import torch

from clipspace import world
from clipspace.unclip import decoder as decoder_mod
from clipspace.errors import DecoderMismatchError, DecoderNotFoundError
from clipspace.unclip.decoder import (PixelDecoder, build_decoder,
                               classifier_free_guidance, get_decoder_config, load_decoder, save_decoder)


def test_shipped_config_builds_the_proposed_unet():
    dec = build_decoder("decoder-tiny", seed=0)
    cfg = get_decoder_config("decoder-tiny")
    assert dec.unet.config.projection_class_embeddings_input_dim == cfg["clip_embed_dim"] == dec.embed_dim
    assert dec.unet.config.sample_size == dec.image_size == cfg["image_size"]
    assert dec.unet.config.class_embed_type == "projection"
    assert not dec.unet.attn_processors  # no cross-attention: z enters through the timestep embedding only
    assert sum(p.numel() for p in dec.unet.parameters()) * 2 < 25e6  # fp16 file under 25 MB
    x = torch.randn(2, *dec.latent_shape)
    out = dec.predict(x, 500, torch.nn.functional.normalize(torch.randn(2, dec.embed_dim), dim=-1))
    assert out.shape == x.shape and torch.isfinite(out).all()
    # the decoder configs are not mistaken for CLIP configs by open_clip's registry
    assert "decoder-tiny" not in open_clip.list_models()


def test_embedding_changes_the_prediction(tiny_config):
    dec = build_decoder(tiny_config(), seed=0)
    torch.nn.init.normal_(dec.unet.class_embedding.linear_1.weight, std=0.5)
    x, z = torch.randn(2, *dec.latent_shape), torch.randn(2, dec.embed_dim)
    assert (dec.predict(x, 10, z) - dec.predict(x, 10, -z)).abs().max() > 1e-3


def test_classifier_free_guidance_formula(tiny_config):
    dec = build_decoder(tiny_config(), seed=1)
    torch.nn.init.normal_(dec.unet.class_embedding.linear_1.weight, std=0.5)
    x, z = torch.randn(3, *dec.latent_shape), torch.randn(3, dec.embed_dim)
    with torch.no_grad():
        cond = dec.unet(x, 300, encoder_hidden_states=None, class_labels=z).sample
        uncond = dec.unet(x, 300, encoder_hidden_states=None, class_labels=torch.zeros_like(z)).sample
    for g in (0.0, 1.0, 3.0):
        torch.testing.assert_close(dec.predict(x, 300, z, guidance=g), uncond + g * (cond - uncond),
                                   atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(classifier_free_guidance(uncond, cond, 0.0), uncond)


@pytest.mark.parametrize("fp16", [False, True])
def test_save_load_round_trip(tiny_config, tmp_path, tiny_clip, fp16):
    dec = build_decoder(tiny_config(), seed=2)
    save_decoder(dec, tmp_path / "d", fp16=fp16)
    assert json.loads((tmp_path / "d" / "decoder_config.json").read_text())["image_size"] == 16
    back = load_decoder(tmp_path / "d", clip=tiny_clip)
    assert back.unet.dtype == torch.float32
    x, z = torch.randn(2, *dec.latent_shape), torch.randn(2, dec.embed_dim)
    a, b = dec.predict(x, 100, z), back.predict(x, 100, z)
    assert (a - b).abs().max() < (5e-3 if fp16 else 1e-7)


def test_shipped_decoder_loads_and_saves_back_bit_for_bit(tmp_path):
    # The shipped fp16 file, read independently of load_decoder, is what the default decoder holds,
    # and save_decoder(fp16=True) writes it back tensor for tensor: the format round trip loses nothing.
    from safetensors.torch import load_file

    shipped = load_file(str(decoder_mod.DEFAULT_DECODER_WEIGHTS / decoder_mod.WEIGHTS_FILE))
    dec = load_decoder()
    assert dec.unet.dtype == torch.float32 and dec.config["trained_steps"] > 0
    state = dec.unet.state_dict()
    assert set(state) == set(shipped) and all(torch.equal(state[k], shipped[k].float()) for k in shipped)
    save_decoder(dec, tmp_path / "again", fp16=True)
    again = load_file(str(tmp_path / "again" / decoder_mod.WEIGHTS_FILE))
    assert all(again[k].dtype == shipped[k].dtype and torch.equal(again[k], shipped[k]) for k in shipped)
    x, z = torch.randn(2, *dec.latent_shape), torch.nn.functional.normalize(torch.randn(2, dec.embed_dim), dim=-1)
    torch.testing.assert_close(load_decoder(tmp_path / "again").predict(x, 500, z), dec.predict(x, 500, z),
                               rtol=0, atol=0)


def test_missing_default_weights_say_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setattr(decoder_mod, "DEFAULT_DECODER_WEIGHTS", tmp_path / "nothing")
    with pytest.raises(DecoderNotFoundError, match="python -m clipspace.train decoder"):
        load_decoder()
    with pytest.raises(DecoderNotFoundError, match="decoder_config.json"):
        load_decoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="decoder-tiny"):
        get_decoder_config("decoder-nonexistent")


def test_mismatched_clip_is_a_clear_error(tiny_config, tmp_path, tiny_clip):
    save_decoder(build_decoder(tiny_config(clip_embed_dim=64)), tmp_path / "dim")
    with pytest.raises(DecoderMismatchError, match=r"64-d.*clipspace-tiny.*128-d"):
        load_decoder(tmp_path / "dim", clip=tiny_clip)
    save_decoder(build_decoder(tiny_config(clip_model="ViT-B-32")), tmp_path / "name")
    with pytest.raises(DecoderMismatchError, match=r"'ViT-B-32'.*'clipspace-tiny'"):
        load_decoder(tmp_path / "name", clip=tiny_clip)
    build_decoder(tiny_config()).check_clip(tiny_clip)  # the matching pair passes


def test_trainer_writes_loadable_checkpoints_and_is_seeded(tiny_config, tmp_path, tiny_clip):
    from clipspace.train.decoder import train

    kw = dict(config=tiny_config(), steps=4, batch_size=6, warmup=2, checkpoint_every=2, progress=False)
    dec, hist = train(tiny_clip, seed=3, out=tmp_path / "a", **kw)
    assert isinstance(dec, PixelDecoder) and [h["step"] for h in hist] == [1, 2, 3, 4]
    assert all(np.isfinite(h["loss"]) and "seconds" in h for h in hist)
    assert "val_loss" in hist[1] and "val_loss" in hist[3]
    lines = (tmp_path / "a" / "history.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in lines] == [1, 2, 3, 4]
    ckpt = load_decoder(tmp_path / "a" / "checkpoints" / "step000002", clip=tiny_clip)
    final = load_decoder(tmp_path / "a", clip=tiny_clip)
    assert (tmp_path / "a" / "preview.png").is_file()
    assert json.loads((tmp_path / "a" / "decoder_config.json").read_text())["trained_steps"] == 4
    x, z = torch.randn(1, *final.latent_shape), torch.randn(1, final.embed_dim)
    torch.testing.assert_close(final.predict(x, 5, z), dec.predict(x, 5, z))  # the EMA weights were saved
    assert (final.predict(x, 5, z) - ckpt.predict(x, 5, z)).abs().max() > 0  # and they moved
    _, again = train(tiny_clip, seed=3, out=None, **kw)
    assert [h["loss"] for h in again] == [h["loss"] for h in hist]


def test_trainer_loss_falls(tiny_config, tiny_clip):
    # Not a quality check (the card has that): the objective and the optimiser are wired so loss falls.
    from clipspace.train.decoder import train

    _, hist = train(tiny_clip, tiny_config(), steps=30, batch_size=8, lr=3e-3, warmup=1, seed=0, progress=False)
    first, last = np.mean([h["loss"] for h in hist[:5]]), np.mean([h["loss"] for h in hist[-5:]])
    assert last < 0.8 * first


def test_a_continued_run_starts_from_the_first_and_counts_on(tiny_config, tmp_path, tiny_clip):
    from clipspace.train.decoder import train

    kw = dict(batch_size=6, warmup=1, checkpoint_every=2, progress=False)
    first, _ = train(tiny_clip, tiny_config(), steps=2, seed=3, out=tmp_path / "a", **kw)
    # Zero steps of a continuation would be the first run itself: the weights it starts from.
    cont, hist = train(tiny_clip, steps=2, seed=3, out=tmp_path / "b", init=tmp_path / "a", pool=16, **kw)
    assert [h["step"] for h in hist] == [1, 2, 3, 4]  # the first run's history, then its own steps
    assert hist[2]["seconds"] >= hist[1]["seconds"]
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step000002"]
    cfg = json.loads((tmp_path / "b" / "decoder_config.json").read_text())
    assert cfg["trained_steps"] == 4 and cfg["continued_from"] == str(tmp_path / "a")
    x, z = torch.randn(1, *first.latent_shape), torch.randn(1, first.embed_dim)
    start = load_decoder(tmp_path / "b" / "checkpoints" / "step000002")
    torch.testing.assert_close(start.predict(x, 5, z), first.predict(x, 5, z))  # the first run, copied
    assert (load_decoder(tmp_path / "b").predict(x, 5, z) - first.predict(x, 5, z)).abs().max() > 0


def test_scene_pool_pairs_each_image_with_its_embedding(tiny_clip):
    from clipspace.train.decoder import ScenePool, clip_embeddings

    rng = np.random.default_rng(0)
    pool = ScenePool(tiny_clip, 10, 32, rng, chunk=4)  # chunks: the last one is short
    assert len(pool) == 10 and pool.pixels.dtype == torch.uint8 and pool.pixels.shape == (10, 3, 32, 32)
    scenes = [world.random_scene(np.random.default_rng(0)) for _ in range(1)]
    x, z = pool.batch(np.random.default_rng(1), 5)
    assert x.shape == (5, 3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1
    torch.testing.assert_close(pool.z[:1], clip_embeddings(tiny_clip, scenes), atol=1e-5, rtol=0)


@pytest.mark.parametrize("start", [0, 27000])
def test_weight_average_is_min_decay_n_over_9_plus_n(start):
    # Reference: the average by hand, decay min(ema_decay, n / (9 + n)) at the n-th step of the whole
    # training, so a continued run (start steps done) goes on with the full decay.
    from clipspace.train.decoder import weight_average

    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    average = weight_average(model, 0.9, step=start)
    by_hand = [p.detach().clone() for p in model.parameters()]
    for n in range(start + 1, start + 31):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.step(model.parameters())
        d = min(0.9, n / (9 + n))
        by_hand = [d * h + (1 - d) * p.detach() for h, p in zip(by_hand, model.parameters())]
        assert average.cur_decay_value == pytest.approx(d, rel=1e-12, abs=0)
    for h, s in zip(by_hand, average.shadow_params):
        torch.testing.assert_close(s, h, rtol=1e-5, atol=1e-6)
    copy = torch.nn.Linear(6, 3).requires_grad_(False)
    average.copy_to(copy.parameters())
    torch.testing.assert_close(copy.weight, by_hand[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_min_snr_weights_put_min_snr_gamma_on_the_x0_error(prediction_type):
    # Reference: diffusers' own conversion of a model output to x0 (DDPMScheduler.step's
    # pred_original_sample). The weighted loss on the prediction must equal min(SNR, gamma) times the
    # squared error of the x0 it implies, at every timestep.
    from diffusers import DDPMScheduler

    from clipspace.train.decoder import diffusion_target, min_snr_weights

    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type, clip_sample=False)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 3, 4, 4, generator=g), torch.randn(1, 3, 4, 4, generator=g)
    gamma = 5.0
    for t in (1, 50, 300, 600, 900, 999):
        tt = torch.tensor([t])
        xt = sched.add_noise(x0, noise, tt)
        target = diffusion_target(sched, x0, noise, tt)
        pred = target + 0.1 * torch.randn(target.shape, generator=g)
        x0_hat = sched.step(pred, t, xt).pred_original_sample
        a = sched.alphas_cumprod[t]
        snr = float(a / (1 - a))
        weighted = float(min_snr_weights(sched, tt, gamma)[0] * (pred - target).pow(2).mean())
        expected = min(snr, gamma) * float((x0_hat - x0).pow(2).mean())
        assert weighted == pytest.approx(expected, rel=1e-3), t


def test_min_snr_loss_trains_and_is_recorded(tiny_config, tmp_path, tiny_clip):
    from clipspace.train.decoder import train

    _, hist = train(tiny_clip, tiny_config(), steps=2, batch_size=6, warmup=1, seed=0, progress=False,
                    out=tmp_path / "a", min_snr=5.0, single_share=0.5)
    assert all(np.isfinite(h["loss"]) for h in hist)
    cfg = json.loads((tmp_path / "a" / "decoder_config.json").read_text())
    assert cfg["min_snr_gamma"] == 5.0 and cfg["single_share"] == 0.5
    # A continuation without them does not inherit the first run's recipe in its config.
    train(tiny_clip, steps=1, batch_size=6, warmup=1, seed=0, progress=False, out=tmp_path / "b", init=tmp_path / "a")
    cfg = json.loads((tmp_path / "b" / "decoder_config.json").read_text())
    assert "min_snr_gamma" not in cfg and "single_share" not in cfg


def test_single_share_draws_plain_single_objects():
    from clipspace.train.decoder import draw_scene

    all_single = [draw_scene(np.random.default_rng(i), 1.0) for i in range(20)]
    assert all(len(s.objects) == 1 and s.text is None for s in all_single)
    # share 0 is the CLIP's mixture, scene for scene
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    assert [draw_scene(a, 0.0) for _ in range(10)] == [world.random_scene(b) for _ in range(10)]
    rng = np.random.default_rng(0)
    half = [draw_scene(rng, 0.5) for _ in range(400)]
    plain = np.mean([len(s.objects) == 1 and s.text is None for s in half])
    assert 0.55 < plain < 0.72  # half forced, plus the mixture's own quarter of the other half
