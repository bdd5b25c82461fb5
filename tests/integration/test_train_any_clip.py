"""Decoders and priors for any CLIP, trained on your own files (clipspace.train.data, --images, --pairs).

The CLIP is a real open_clip architecture with random weights: ViT-B-32's towers (512-d), at 32 px
with one transformer layer per tower for the time budget, saved as an open_clip folder and loaded
through `load_clip(folder)` as a user would. The images are scikit-image's bundled photos and
textures (and crops of them), with one file that is not an image. Decoders are 32 px, two blocks.
"""
import csv
import json

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from clipspace import load_clip
from clipspace.photos import PHOTOS, TEXTURES, photo
from clipspace.train.__main__ import main as train_cli
from clipspace.train.data import ImageSet, PairSet, read_image_source, read_pair_source, write_embeddings
from clipspace.unclip.decoder import build_decoder, get_decoder_config, load_decoder
from clipspace.unclip.prior import get_prior_config, load_prior

pytestmark = pytest.mark.filterwarnings("ignore:.* images could not be read")  # expected: the bad file
CLIP_NAME = "ViT-B-32-32px"
BAD = "not-an-image.jpg"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / CLIP_NAME
    folder.mkdir()
    cfg = open_clip.get_model_config("ViT-B-32")
    cfg["vision_cfg"]["image_size"] = 32
    cfg["vision_cfg"]["layers"] = cfg["text_cfg"]["layers"] = 1
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in open_clip.CLIP(**cfg).state_dict().items()},
              folder / "open_clip_model.safetensors")
    return folder


@pytest.fixture(scope="module")
def clip(clip_dir):
    return load_clip(clip_dir)


def _write_photos(folder, names, crops):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        im = photo(n)
        w, h = im.size
        for k, box in enumerate([(0, 0, w, h), (0, 0, w // 2, h // 2), (w // 3, h // 3, w, h)][:crops]):
            im.crop(box).resize((48, 40)).save(folder / f"{n}-{k}.png")  # not square: the centre square is used


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of 24 bundled photos, textures and crops plus one bad file; and a held-out folder of 4."""
    root = tmp_path_factory.mktemp("photos")
    names = list(PHOTOS) + list(TEXTURES)
    _write_photos(root / "train", names[:4], 3)
    _write_photos(root / "train", names[4:], 2)
    (root / "train" / BAD).write_bytes(b"this is text, not a JPEG")
    _write_photos(root / "held", names[:4], 1)
    return root


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    cfg = get_decoder_config("decoder-tiny")
    cfg["unet"].update(block_out_channels=[8, 16], norm_num_groups=4, down_block_types=["DownBlock2D"] * 2,
                       up_block_types=["UpBlock2D"] * 2)
    path = tmp_path_factory.mktemp("cfg") / "decoder-32-small.json"
    path.write_text(json.dumps(cfg))  # clip_embed_dim 128 here: the trainer takes the CLIP's 512
    return path


@pytest.fixture(scope="module")
def decoder_run(clip_dir, photos, tiny_unet, tmp_path_factory):
    out = tmp_path_factory.mktemp("decoder-run") / "run"
    train_cli(["decoder", "--clip", str(clip_dir), "--images", str(photos / "train"), "--config", str(tiny_unet),
               "--steps", "3", "--batch-size", "8", "--warmup", "1", "--checkpoint-every", "2", "--held-out", "4",
               "--out", str(out)])
    return out


def test_images_source_run_records_the_clip_skips_the_bad_file_and_writes_a_card(decoder_run, clip, photos):
    cfg = json.loads((decoder_run / "decoder_config.json").read_text())
    assert cfg["clip_model"] == CLIP_NAME and cfg["clip_embed_dim"] == 512 and cfg["trained_steps"] == 3
    assert cfg["clip_weights_id"] == clip.weights_id and cfg["train_images"] == 22  # 24 less 2 held out
    ckpt = json.loads((decoder_run / "checkpoints" / "step000002" / "decoder_config.json").read_text())
    assert ckpt["clip_model"] == CLIP_NAME and ckpt["clip_embed_dim"] == 512
    dec = load_decoder(decoder_run, clip=clip)  # the loader's own check: this CLIP's name and size
    assert dec.unet.config.projection_class_embeddings_input_dim == 512
    data = json.loads((decoder_run / "data.json").read_text())
    assert data["skipped"] == [[str(photos / "train" / BAD), "not an image file PIL can read"]]
    assert data["held_out"] == 2 and len(set(data["held_out_sources"])) == 2  # a tenth of 24, set aside
    assert BAD in (decoder_run / "train.log").read_text()  # logged, and the run went on
    card = (decoder_run / "MODEL_CARD.md").read_text()
    assert f"# decoder for {CLIP_NAME} (512-d)" in card and "1 skipped" in card and "crop+flip" in card
    assert "--images" in card and "measure_decoder" in card
    assert [json.loads(x)["step"] for x in (decoder_run / "history.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (decoder_run / "preview.png").is_file()


def test_init_resumes_the_step_count_from_the_checkpoints_weights(decoder_run, clip_dir, photos, tmp_path):
    # lr 0: Adam moves nothing and the average of unmoved weights is those weights, so the continued run's
    # weights must be the checkpoint's exactly: they were loaded, not built afresh.
    out = tmp_path / "more"
    train_cli(["decoder", "--clip", str(clip_dir), "--images", str(photos / "train"), "--init", str(decoder_run),
               "--steps", "2", "--batch-size", "8", "--lr", "0", "--warmup", "1", "--out", str(out)])
    cfg = json.loads((out / "decoder_config.json").read_text())
    assert cfg["trained_steps"] == 5 and cfg["continued_from"] == str(decoder_run)
    steps = [json.loads(x)["step"] for x in (out / "history.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    before, after = load_file(str(decoder_run / "decoder.safetensors")), load_file(str(out / "decoder.safetensors"))
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)
    assert "--init" in (out / "MODEL_CARD.md").read_text()


def test_loss_falls_on_the_photos(clip, photos, tiny_unet):
    from clipspace.train.decoder import train

    data = ImageSet.from_source(photos / "train", 32, clip)
    _, hist = train(None, str(tiny_unet), steps=30, batch_size=8, lr=3e-3, warmup=1, seed=0, progress=False,
                    images=data)
    first, last = np.mean([h["loss"] for h in hist[:5]]), np.mean([h["loss"] for h in hist[-5:]])
    assert last < 0.8 * first


def test_precomputed_parquet_gives_the_same_first_step_without_a_clip(clip, photos, tiny_unet, tmp_path):
    from clipspace.train.decoder import train

    parquet = write_embeddings(clip, photos / "train", tmp_path / "emb.parquet")
    table = read_image_source(parquet)
    assert table.clip["clip_model"] == CLIP_NAME and table.embeddings.shape == (24, 512)  # the bad file left out
    computed = ImageSet.from_source(photos / "train", 32, clip)
    stored = ImageSet.from_source(parquet, 32, clip=None)  # no CLIP exists here to be called
    assert stored.sources == computed.sources and torch.equal(stored.pixels, computed.pixels)
    torch.testing.assert_close(stored.z, computed.z, rtol=0, atol=1e-6)
    kw = dict(steps=1, batch_size=8, warmup=1, seed=4, progress=False)
    _, h_computed = train(clip, str(tiny_unet), images=computed, **kw)
    _, h_stored = train(None, str(tiny_unet), images=stored, **kw)
    assert h_stored[0]["loss"] == pytest.approx(h_computed[0]["loss"], rel=1e-5)
    # the CLI: no --clip, the parquet names it; the config records the CLIP that made the embeddings
    train_cli(["decoder", "--images", str(parquet), "--config", str(tiny_unet), "--steps", "1", "--batch-size", "4",
               "--warmup", "1", "--out", str(tmp_path / "run")])
    cfg = json.loads((tmp_path / "run" / "decoder_config.json").read_text())
    assert cfg["clip_model"] == CLIP_NAME and cfg["clip_weights_id"] == clip.weights_id and cfg["clip_embed_dim"] == 512
    assert "precomputed in the parquet" in (tmp_path / "run" / "MODEL_CARD.md").read_text()
    with pytest.raises(ValueError, match="holds embeddings of 'ViT-B-32-32px', not of 'ViT-L-14'"):
        ImageSet.from_source(parquet, 32, clip=None, clip_name="ViT-L-14")
    with pytest.raises(ValueError, match="not of --clip 'ViT-L-14'"):  # checked against the parquet, never loaded
        train_cli(["decoder", "--clip", "ViT-L-14", "--images", str(parquet), "--config", str(tiny_unet),
                   "--steps", "1", "--out", str(tmp_path / "wrong")])


def test_file_list_source_keeps_its_order_and_says_why_files_are_skipped(clip, photos, tmp_path):
    names = ["chelsea-1.png", BAD, "coffee-0.png", "missing.png", "astronaut-0.png"]
    lst = tmp_path / "list.txt"
    lst.write_text("# my images\n" + "\n".join(f"{photos / 'train' / n}" for n in names) + "\n\n")
    data = ImageSet.from_source(lst, 32, clip, augment="none")
    assert [p.split("/")[-1] for p in data.sources] == ["chelsea-1.png", "coffee-0.png", "astronaut-0.png"]
    reasons = {str(s).split("/")[-1]: r for s, r in data.failures}
    assert reasons == {BAD: "not an image file PIL can read", "missing.png": "file not found"}
    # each row's embedding is the one encode_images gives its file
    ref = np.asarray(clip.encode_images([photos / "train" / "coffee-0.png"], cache=False))
    np.testing.assert_allclose(data.z[1].numpy(), ref[0], atol=1e-6)
    assert data.pixels.shape == (3, 3, 32, 32)


def test_crops_and_flips_are_windows_of_the_stored_image(clip, photos):
    data = ImageSet.from_source(photos / "train", 32, clip, augment="crop+flip")
    assert data.pixels.shape[-1] == 36 and data.margin == 4
    rng = np.random.default_rng(0)
    x, z = data.batch(rng, 16)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(data), 16)
    flips = 0
    for k, i in enumerate(idx):
        target = ((x[k] + 1) * 127.5).round().to(torch.uint8)
        src = data.pixels[i]
        windows = [src[:, a:a + 32, b:b + 32] for a in range(5) for b in range(5)]
        plain = any(torch.equal(target, w) for w in windows)
        mirrored = any(torch.equal(target, w.flip(-1)) for w in windows)
        assert plain or mirrored
        flips += mirrored and not plain
        torch.testing.assert_close(z[k], data.z[i])
    assert 0 < flips < 16


def test_size_picks_the_shipped_config_and_the_64px_config_builds():
    from clipspace.train.decoder import config_for_size

    assert config_for_size(64) == "decoder-64" and config_for_size(32) == "decoder-tiny"
    assert config_for_size(None) == "decoder-tiny" and config_for_size(48, "decoder-64")["image_size"] == 48
    with pytest.raises(FileNotFoundError, match="decoder-64"):
        config_for_size(48)  # the message lists the shipped configs
    cfg = get_decoder_config("decoder-64")
    cfg["clip_embed_dim"] = 768
    dec = build_decoder(cfg, seed=0)
    assert dec.unet.config.sample_size == 64 and dec.unet.config.projection_class_embeddings_input_dim == 768
    n = sum(p.numel() for p in dec.unet.parameters())
    assert 10e6 < n < 30e6 and dec.unet.attn_processors  # self-attention at 16 and 8 px
    x = torch.randn(1, 3, 64, 64)
    assert dec.predict(x, 500, torch.nn.functional.normalize(torch.randn(1, 768), dim=-1)).shape == x.shape
    assert "decoder-64" not in open_clip.list_models() and "prior-base" not in open_clip.list_models()


def test_measure_decoder_on_a_held_out_folder(decoder_run, clip_dir, photos, tmp_path):
    from clipspace.train.measure_decoder import main

    main(["--weights", str(decoder_run), "--clip", str(clip_dir), "--images", str(photos / "held"), "--steps", "3",
          "--iterations", "2", "--json", str(tmp_path / "m.json")])
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["images"] == 4 and "No factor judges" in m["judges"]
    for k in ("round_trip_psnr", "round_trip_psnr_wrong_z", "round_trip_psnr_fixed_point_2"):
        assert 5 < m[k] < 100, k
    for k in ("source_cosine", "round_trip_cosine", "sample_cosine", "sample_cosine_wrong_z", "variation_cosine"):
        assert -1 <= m[k] <= 1 + 1e-6, k
    assert m["source_cosine"] > 0.99  # the random CLIP at 32 px barely tells a 32 px square from its file
    card = (decoder_run / "MODEL_CARD.md").read_text()
    assert "| round_trip_psnr |" in card and "No factor judges" in card


# ---------------------------------------------------------------------------------------------
# The prior
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs_csv(photos):
    path = photos / "pairs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption"])
        for p in sorted((photos / "train").iterdir()):
            w.writerow([f"train/{p.name}", f"a photo of {p.stem.split('-')[0].replace('_', ' ')}"])
    return path


@pytest.fixture(scope="module")
def tiny_prior_cfg(tmp_path_factory):
    cfg = get_prior_config("prior-tiny")
    cfg["transformer"].update(num_layers=1, num_attention_heads=2, attention_head_dim=16)
    path = tmp_path_factory.mktemp("pcfg") / "prior-small.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def prior_run(clip_dir, pairs_csv, tiny_prior_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior-run") / "run"
    train_cli(["prior", "--clip", str(clip_dir), "--pairs", str(pairs_csv), "--config", str(tiny_prior_cfg),
               "--steps", "4", "--batch-size", "8", "--warmup", "1", "--checkpoint-every", "2", "--held-out", "4",
               "--out", str(out), "--no-progress"])
    return out


def test_prior_from_pairs_records_the_clip_and_resumes(prior_run, clip, clip_dir, pairs_csv, tmp_path):
    cfg = json.loads((prior_run / "prior_config.json").read_text())
    assert cfg["clip_model"] == CLIP_NAME and cfg["clip_embed_dim"] == 512 and cfg["trained_steps"] == 4
    prior = load_prior(prior_run, clip=clip)
    assert prior.embed_dim == 512 and prior.sample(["a photo of chelsea"], clip=clip).shape == (1, 512)
    data = json.loads((prior_run / "data.json").read_text())
    assert data["kept"] == 22 and data["held_out"] == 2 and data["skipped"][0][0].endswith(BAD)
    rows = [json.loads(x) for x in (prior_run / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [2, 4]
    assert f"# prior for {CLIP_NAME} (512-d)" in (prior_run / "MODEL_CARD.md").read_text()
    out = tmp_path / "more"
    train_cli(["prior", "--clip", str(clip_dir), "--pairs", str(pairs_csv), "--init", str(prior_run), "--steps", "2",
               "--batch-size", "8", "--lr", "0", "--warmup", "1", "--out", str(out), "--no-progress"])
    assert json.loads((out / "prior_config.json").read_text())["trained_steps"] == 6
    before, after = load_file(str(prior_run / "prior.safetensors")), load_file(str(out / "prior.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)  # lr 0: the checkpoint's weights, loaded


def test_pair_sources_agree_and_precomputed_pairs_need_no_clip(clip, photos, pairs_csv, tiny_prior_cfg, tmp_path):
    from clipspace.train.prior import train

    # the same pairs as a folder with sidecar captions
    side = tmp_path / "side"
    side.mkdir()
    for row in csv.DictReader(open(pairs_csv)):
        src = photos / row["path"]
        (side / src.name).write_bytes(src.read_bytes())
        (side / src.name).with_suffix(".txt").write_text(row["caption"] + "\n")
    (side / "no-caption.png").write_bytes((photos / "held" / "chelsea-0.png").read_bytes())
    folder_table = read_pair_source(side)
    assert any("no caption file" in r for _, r in folder_table.failures)
    from_csv, from_folder = PairSet.from_source(pairs_csv, clip), PairSet.from_source(side, clip)
    by_name = lambda s: {p.split("/")[-1]: i for i, p in enumerate(s.sources)}  # noqa: E731
    a, b = by_name(from_csv), by_name(from_folder)
    assert set(a) == set(b) and len(a) == 24
    for name in a:
        assert from_csv.captions[a[name]] == from_folder.captions[b[name]]
        torch.testing.assert_close(from_csv.z_t[a[name]], from_folder.z_t[b[name]], rtol=0, atol=1e-6)
    # precomputed: a parquet of both embeddings trains the first step as the CSV does, with no CLIP
    parquet = write_embeddings(clip, pairs_csv, tmp_path / "pairs.parquet", pairs=True)
    stored = PairSet.from_source(parquet, clip=None)
    torch.testing.assert_close(stored.z_i, from_csv.z_i, rtol=0, atol=1e-6)
    kw = dict(steps=1, batch_size=8, warmup=1, seed=2, progress=False)
    _, h1 = train(clip, str(tiny_prior_cfg), pairs=from_csv, **kw)
    _, h2 = train(None, str(tiny_prior_cfg), pairs=stored, **kw)
    assert h2[0]["loss"] == pytest.approx(h1[0]["loss"], rel=1e-5)


def test_measure_prior_on_held_out_pairs(prior_run, decoder_run, clip_dir, pairs_csv, tmp_path):
    from clipspace.train.measure_prior import main

    main(["--weights", str(prior_run), "--clip", str(clip_dir), "--pairs", str(pairs_csv), "--decoder",
          str(decoder_run), "--steps", "2", "--json", str(tmp_path / "p.json")])
    m = json.loads((tmp_path / "p.json").read_text())
    assert m["pairs"] == 24 and m["skipped"] == 1
    for k in ("prior_cosine", "prior_cosine_wrong", "z_t_cosine", "train_mean_cosine", "decoded_cosine_to_z_i",
              "decoded_cosine_to_caption"):
        assert -1 - 1e-6 <= m[k] <= 1 + 1e-6, k
    assert m["prior_mean_gap"] >= 0 and "| prior_cosine |" in (prior_run / "MODEL_CARD.md").read_text()


def test_bad_sources_are_clear_errors(clip, tmp_path):
    from clipspace.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="no such folder or file"):
        read_image_source(tmp_path / "nothing")
    (tmp_path / "p.csv").write_text("file,label\na.png,cat\n")
    with pytest.raises(InvalidArgumentError, match=r"caption column.*found \['file', 'label'\]"):
        read_pair_source(tmp_path / "p.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImageSet.from_source(tmp_path / "empty", 32, clip)
