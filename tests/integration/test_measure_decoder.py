"""The decoder's measurement script: every number of the card, on a few-step decoder trained here."""
import json

import numpy as np
import pytest
from safetensors import safe_open

from clipspace import load_clip
from clipspace.train.measure_decoder import TARGETS, main
from clipspace.train.decoder import main as train_main



@pytest.fixture(scope="module")
def run_dir(tiny_config, tmp_path_factory):
    d = tmp_path_factory.mktemp("decoder-run")
    (d / "cfg.json").write_text(json.dumps(tiny_config()))
    train_main(["--clip", "default", "--config", str(d / "cfg.json"), "--steps", "4", "--batch-size", "4",
                "--warmup", "1", "--checkpoint-every", "2", "--out", str(d / "run")])
    return d / "run"


def test_ship_writes_fp16_weights_metrics_and_card(run_dir, tmp_path):
    ship = tmp_path / "decoder-tiny"
    main(["--weights", str(run_dir), "-n", "3", "--steps", "3", "--curve", "--curve-n", "2", "--ship", str(ship)])
    with safe_open(str(ship / "decoder.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    metrics = json.loads((ship / "metrics.json").read_text())
    final = metrics["final"]
    for key in [k for k, t in TARGETS.items() if isinstance(t, float)] + ["round_trip_psnr_wrong_z"]:
        assert np.isfinite(final[key]), key
    for key in ("sample_colour", "sample_shape", "variation_colour", "variation_shape", "text_diff_blue"):
        assert 0.0 <= final[key] <= 1.0, key
    # the judge itself works: the default CLIP reads the 16 px sources' colours
    assert final["judge_colour_on_sources"] >= 0.6
    assert final["fp16_vs_fp32_psnr"] > 30  # fp16 storage of a (barely trained) decoder changes little
    assert [row["step"] for row in metrics["curve"]] == [2, 4]
    card = (ship / "MODEL_CARD.md").read_text()
    assert "| round_trip_psnr |" in card and "--steps 4 --batch-size 4" in card
    assert "What falls short" in card
    load_clip()  # the card's CLIP is the offline default the decoder checks against


def test_card_of_a_continued_run_lists_both_runs_and_one_curve(run_dir, tmp_path):
    cont = tmp_path / "run2"
    train_main(["--clip", "default", "--init", str(run_dir), "--steps", "2", "--batch-size", "4", "--warmup", "1",
                "--checkpoint-every", "2", "--pool", "8", "--min-snr", "5", "--single-share", "0.5",
                "--out", str(cont)])
    ship = tmp_path / "shipped"
    (tmp_path / "notes.md").write_text("- Shape came at step 6.\n")
    main(["--weights", str(cont), "-n", "2", "--steps", "2", "--curve", "--curve-n", "2", "--ship", str(ship),
          "--notes", str(tmp_path / "notes.md")])
    metrics = json.loads((ship / "metrics.json").read_text())
    assert [row["step"] for row in metrics["curve"]] == [2, 4, 6]  # the first run's checkpoints, then its own
    card = (ship / "MODEL_CARD.md").read_text()
    assert f"--steps 4 --batch-size 4" in card and f"--pool 8 --min-snr 5.0 --single-share 0.5 --init {run_dir}" in card
    assert "6 steps of 4" in card and "4 steps then 2 steps" in card
    assert "marked --min-snr" in card and "marked --single-share" in card
    assert card.rstrip().endswith("## Notes (by hand, after reading the curve)\n\n- Shape came at step 6.")
    first_card = tmp_path / "first" / "MODEL_CARD.md"
    main(["--weights", str(run_dir), "-n", "2", "--steps", "2", "--ship", str(first_card.parent)])
    assert "min-snr" not in first_card.read_text() and "## Notes" not in first_card.read_text()


def test_curve_rows_are_cached_in_each_checkpoint_and_keyed(run_dir, monkeypatch):
    from clipspace.train import measure_decoder

    clip = load_clip()
    first = measure_decoder.curve(run_dir, clip, n=2)
    assert (run_dir / "checkpoints" / "step000002" / "curve_n2.json").is_file()

    def no_measuring(*a, **k):
        raise AssertionError("a cached checkpoint was measured again")

    monkeypatch.setattr(measure_decoder, "measure", no_measuring)
    assert measure_decoder.curve(run_dir, clip, n=2) == first  # every row from the cache
    assert [r["step"] for r in first] == [2, 4]  # the checkpoint, then the run's end
    assert measure_decoder.curve(run_dir, clip, n=2, every=4) == first[1:]  # step 2 skipped, the end kept
    with pytest.raises(AssertionError, match="measured again"):
        measure_decoder.curve(run_dir, clip, n=3)  # another scene count is another key
    monkeypatch.setattr(measure_decoder, "MEASURE_VERSION", measure_decoder.MEASURE_VERSION + 1)
    with pytest.raises(AssertionError, match="measured again"):
        measure_decoder.curve(run_dir, clip, n=2)  # so is a changed measure()
