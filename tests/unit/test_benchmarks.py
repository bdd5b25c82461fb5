"""The benchmark harness: statistics, interleaving, ratios and the report writer (no timed assertions:
a fake clock makes every duration known in advance)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

# benchmarks/ is a folder of the repository, not part of the installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import harness, report  # noqa: E402


class FakeClock:
    """Each call of a contender advances time by what it says it costs."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def spend(self, seconds):
        def fn():
            self.t += seconds
        return fn


def test_summarize_against_numpy():
    x = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    s = harness.summarize(x)
    assert s["n"] == 6 and s["median"] == pytest.approx(np.median(x))
    assert s["q1"] == pytest.approx(np.percentile(x, 25)) and s["q3"] == pytest.approx(np.percentile(x, 75))
    assert s["iqr"] == pytest.approx(s["q3"] - s["q1"])
    assert (s["min"], s["max"]) == (1.0, 10.0) and s["p95"] == pytest.approx(np.percentile(x, 95))
    assert harness.summarize([])["median"] is None


def test_interleave_rotates_order_and_pairs_rounds():
    clock, order = FakeClock(), []

    def contender(name, cost):
        def fn():
            order.append(name)
            clock.t += cost
        return fn

    times = harness.interleave({"a": contender("a", 2.0), "b": contender("b", 0.5), "c": contender("c", 1.0)},
                               repeat=4, warmup=1, clock=clock)
    assert times == {"a": [2.0] * 4, "b": [0.5] * 4, "c": [1.0] * 4}
    assert order[:3] == ["a", "b", "c"]  # the warm-up round
    rounds = [order[3 + 3 * r: 6 + 3 * r] for r in range(4)]
    assert [r[0] for r in rounds[::2]] == ["a", "b"]  # each pair of rounds starts at the next contender
    for x, y in (("a", "b"), ("a", "c"), ("b", "c")):  # every pair in both orders, equally often
        assert sum(r.index(x) < r.index(y) for r in rounds) == 2
    r = harness.paired_ratio(times["a"], times["b"])
    assert r["median"] == pytest.approx(4.0) and r["iqr"] == pytest.approx(0.0)


def test_paired_ratio_is_per_round():
    # a slow spell in round 2 hits both contenders: the per-round ratio stays 2
    r = harness.paired_ratio([2.0, 20.0, 2.0], [1.0, 10.0, 1.0])
    assert r["median"] == pytest.approx(2.0) and r["min"] == r["max"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="one interleave"):
        harness.paired_ratio([1.0], [1.0, 2.0])


def test_setup_runs_untimed_before_each_call():
    clock, seen = FakeClock(), []
    times = harness.interleave({"x": clock.spend(1.0)}, repeat=2, warmup=0,
                               setup=lambda name: (seen.append(name), clock.spend(100.0)()), clock=clock)
    assert times == {"x": [1.0, 1.0]} and seen == ["x", "x"]


def test_latency_passes_a_new_value_each_call():
    clock, args = FakeClock(), []

    def fn(i):
        args.append(i)
        clock.t += 0.01 * i

    samples = harness.latency(fn, n=3, warmup=2, clock=clock)
    assert args == [0, 1, 2, 3, 4] and samples == pytest.approx([0.02, 0.03, 0.04])


def test_rate_and_goal():
    assert harness.rate([2.0, 4.0], 100)["median"] == pytest.approx(37.5)
    assert harness.goal_check(1.2, 1.0) is True and harness.goal_check(0.9, 1.0) is False
    assert harness.goal_check(0.08, 0.1, higher_is_better=False) is True
    assert harness.goal_check(None, 1.0) is None


def test_cells_render():
    assert report.fmt_cell(None) == "—"
    assert report.fmt_cell(True) == "yes" and report.fmt_cell(False) == "**no**"
    assert report.fmt_cell(1234.5) == "1,234" or report.fmt_cell(1234.5) == "1,235"
    assert report.fmt_cell(0.01234) == "0.012"
    assert report.fmt_cell(harness.summarize([1.0, 2.0, 3.0, 4.0, 5.0])) == "3.00 [2.00–4.00]"
    assert report.fmt_cell("a|b") == "a\\|b"


def test_report_renders_tables_and_goals_from_a_results_dict(tmp_path):
    ratio = harness.paired_ratio([3.0, 3.3, 2.7], [1.0, 1.1, 0.9])
    results = {
        "meta": {"date": "2026-01-01 00:00 UTC", "quick": False, "duration_s": 12.0,
                 "machine": {"cpu_model": "Test CPU", "logical_cores": 2, "gpu": None},
                 "versions": {"python": "3.11", "torch": "2.x"}},
        "sections": {
            "encode": {"title": "Encode throughput", "status": "ok", "notes": ["a note"],
                       "goals": [{"figure": "batched", "goal": "≥ 1×", "value": 3.0, "met": True, "why": ""}],
                       "tables": [{"caption": "Ratios", "columns": [["model", "model"], ["value", "median [IQR]"]],
                                   "rows": [{"model": "tiny", "value": ratio}, {"model": "big"}]}]},
            "gpu": {"title": "GPU", "status": "skipped", "reason": "no GPU in this run", "tables": []},
        }}
    json_path, md_path = report.write_report(results, tmp_path, findings="Fixed X: 1.0 -> 2.0.")
    md = md_path.read_text()
    assert "| model | median [IQR] |" in md and "| tiny | 3.00 [3.00–3.00] |" in md and "| big | — |" in md
    assert "## Goals" in md and "| Encode throughput | batched | ≥ 1× | 3.00 | yes |" in md
    assert "**skipped**: no GPU in this run" in md and "Test CPU" in md and "torch 2.x" in md
    assert "Fixed X" in md
    assert json.loads(json_path.read_text())["sections"]["encode"]["tables"][0]["rows"][0]["value"]["median"] == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["REPORT.md", "results.json"]  # no temporary files left


def test_machine_and_versions_are_recorded():
    m, v = report.machine_info(), report.versions()
    assert m["logical_cores"] >= 1 and m["memory_gib"] > 0 and m["cpu_model"]
    assert {"python", "torch", "open_clip", "diffusers", "numpy"} <= set(v) and v["torch"]


def test_flop_figures_include_attention():
    # the figure counts q/k/v/output projections and attention, whichever kernel this torch picks
    # (nn.MultiheadAttention's fused fast path, or SDPA's CPU flash kernel, which torch 2.14's
    # FlopCounterMode has no formula for): both against the count by hand
    import torch
    import torch.nn.functional as F

    from benchmarks.peak import forward_flops

    mha = torch.nn.MultiheadAttention(64, 4, batch_first=True).eval()
    x = torch.randn(1, 10, 64)
    projections = 2 * 10 * 64 * (3 * 64) + 2 * 10 * 64 * 64
    attention = 2 * 2 * 10 * 10 * 64
    assert forward_flops(lambda: mha(x, x, x, need_weights=False)) == projections + attention
    q, k, v = torch.randn(2, 4, 10, 16), torch.randn(2, 4, 12, 16), torch.randn(2, 4, 12, 8)
    assert forward_flops(F.scaled_dot_product_attention, q, k, v) == 2 * 2 * 4 * 10 * 12 * (16 + 8)


# ---------------------------------------------------------------------------------------------
# Smoke runs of the sections' own code on tiny inputs (real models, seconds)
# ---------------------------------------------------------------------------------------------
def test_encode_contenders_agree_and_ratios_are_reported(tiny_clip, tmp_path, monkeypatch):
    from benchmarks import encode, subjects

    monkeypatch.setenv("CLIPSPACE_CACHE_DIR", str(tmp_path / "cache"))
    paths = subjects.write_image_files(tmp_path / "images", 16, size=48)
    texts = subjects.world_captions(12)
    # the baselines compute what clipspace computes
    batched = encode.openclip_batched_images(tiny_clip.model, tiny_clip.preprocess, paths, batch_size=5)
    np.testing.assert_allclose(encode.openclip_per_image(tiny_clip.model, tiny_clip.preprocess, paths), batched, atol=1e-5)
    np.testing.assert_allclose(tiny_clip.encode_images(paths, cache=False), batched, atol=1e-5)
    before, truncated = encode.encode_texts_before(tiny_clip, texts, batch_size=5)
    np.testing.assert_allclose(tiny_clip.encode_texts(texts), before, atol=1e-5)
    np.testing.assert_allclose(encode.openclip_per_text(tiny_clip.model, tiny_clip.tokenizer, texts), before, atol=1e-5)
    assert truncated == []

    img = encode.bench_images(tiny_clip, paths, repeat=1, tmp=tmp_path / "img", precision_repeat=1)
    txt = encode.bench_texts(tiny_clip, texts, repeat=1, tmp=tmp_path / "txt")
    assert img["max_abs_diff_vs_open_clip"] < 1e-5 and txt["max_abs_diff_vs_open_clip"] < 1e-5
    for res, n in ((img, 16), (txt, 12)):
        assert res["n"] == n
        for r in res["ratios"].values():
            assert r["n"] == 1 and r["median"] > 0
        assert {"vs open_clip batched", "vs per-item loop", "cached rerun vs uncached",
                "before fix: vs open_clip batched"} <= set(res["ratios"])
    assert img["seconds"]["clipspace, cached rerun"]["median"] < img["seconds"]["clipspace, cold cache"]["median"]


def test_notebook_section_reports_failures_and_absence(tmp_path, monkeypatch):
    import nbformat

    from benchmarks import notebooks

    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", tmp_path)
    assert notebooks.run()["status"] == "not available yet"  # no notebooks yet: said, not an error
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0")])
    nbformat.write(nb, tmp_path / "broken.ipynb")
    sec = notebooks.run()
    row = sec["tables"][0]["rows"][0]
    assert row["status"] == "error" and "ZeroDivisionError" in row["error"] and row["met"] is False
    assert sec["goals"][0]["met"] is False


def test_gpu_section_without_a_gpu_says_how_and_keeps_last_figures(tmp_path, monkeypatch):
    import torch

    from benchmarks import gpu

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the section measures instead")
    monkeypatch.setattr(gpu, "LAST_FILE", tmp_path / "gpu_last.json")
    sec = gpu.run()
    assert sec["status"] == "not measured here" and gpu.COMMAND in sec["reason"] and "none recorded" in sec["reason"]
    assert any("112k images/s" in n for n in sec["notes"])  # 989e12 / 8.82e9 = 112,132
    last = {"date": "2026-01-01 00:00 UTC", "device": "NVIDIA H100 80GB HBM3", "datasheet_bf16_tflops": 989.0,
            "measured_bf16_matmul_tflops": 700.0, "stable_unclip_roundtrip_s": harness.summarize([0.5, 0.6]),
            "rows": [{"what": "ViT-B-32 image tower", "images_per_s": harness.summarize([30000.0]),
                      "share_datasheet": 0.27, "share_measured": 0.38}]}
    report.write_json(last, gpu.LAST_FILE)
    sec = gpu.run()
    md = report.render_section(sec)
    assert "2026-01-01" in md and "NVIDIA H100 80GB HBM3" in md and "30,000" in md and gpu.COMMAND in md
    assert gpu.datasheet_peak("NVIDIA H100 PCIe") == 756.0 and gpu.datasheet_peak("NVIDIA H100 80GB HBM3") == 989.0


def test_gpu_measurements_run_on_the_cpu(monkeypatch):
    # the GPU code paths, smoke-tested on the CPU at toy sizes (the figures mean nothing here)
    from benchmarks import gpu

    r = gpu.vit_tensor_throughput("cpu", batch=1, iters=1, repeat=1, arch="ViT-S-32-alt", dtype=torch_float32())
    assert r["median"] > 0
    assert gpu.device_matmul_peak("cpu", n=64, dtype=torch_float32(), iters=1) > 0
    files = gpu.files_throughput("cpu", n=4, repeat=1, workers=0, arch="ViT-S-32-alt")
    assert set(files["speed"]) == {"fp32", "bf16", "fp16", "DataLoader, 0 workers"}
    assert all(r["median"] > 0 for r in files["speed"].values())
    assert files["agreement"]["bf16"]["cos_min"] > 0.99  # autocast keeps the direction; the figure is the device's


def torch_float32():
    import torch

    return torch.float32
