"""GPU figures, when torch sees a CUDA device; otherwise the last ones recorded, marked as such.

- ViT-B-32 image tower in bfloat16 from preprocessed tensors: images/s, and that as a share of the
  GPU's peak (ViT-B-32 is 8.82 GFLOPs per image, counted; an H100 SXM's 989 dense bf16 TFLOP/s
  would be ~112k images/s) and of a measured bf16 matmul peak.
- images/s through `clip.encode_images(paths)` (PNG decoding and preprocessing included), against
  a torch DataLoader with worker processes doing the decoding (what overlap would give), and the
  same call at bf16 / fp16 (`precision=`) with its agreement with fp32, side by side.
- the Stable unCLIP adapter (`clipspace.unclip.stable_unclip`) on tiny components built from configs:
  invert plus decode, one image, 50 steps.
Every measurement function takes a device, so the same code is smoke-tested on the CPU.
The figures of the last GPU run are kept in benchmarks/gpu_last.json (date and device with them).
"""
from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from . import peak, subjects
from .harness import summarize
from .report import now, write_json

LAST_FILE = Path(__file__).resolve().parent / "gpu_last.json"
# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, without sparsity).
DATASHEET_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                         "H100 NVL": 835.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def datasheet_peak(name: str) -> float | None:
    for key, tflops in DATASHEET_BF16_TFLOPS.items():  # most specific keys first
        if key in name:
            return tflops
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn, device: torch.device, repeat: int) -> list[float]:
    """Wall seconds of `repeat` calls of fn() after one untimed call, the device synchronised around each."""
    fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def vit_tensor_throughput(device, batch: int = 512, iters: int = 10, repeat: int = 5, arch: str = subjects.RANDOM_ARCH,
                          dtype=torch.bfloat16) -> dict:
    """images/s of the image tower on preprocessed (random) tensors; summary over `repeat` timings of `iters` batches."""
    import open_clip

    device = torch.device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(arch, pretrained=None).eval().to(device=device, dtype=dtype)
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(2):
            model.encode_image(x)
        _sync(device)
        rates = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(iters):
                model.encode_image(x)
            _sync(device)
            rates.append(batch * iters / (time.perf_counter() - t0))
    return summarize(rates)


def device_matmul_peak(device, n: int = 8192, dtype=torch.bfloat16, iters: int = 20) -> float:
    """Best TFLOP/s of n x n matmuls on `device`."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        _sync(device)
        best = max(best, 2 * n ** 3 * iters / (time.perf_counter() - t0) / 1e12)
    return best


def files_throughput(device, n: int = 512, repeat: int = 3, workers: int = 8, arch: str = subjects.RANDOM_ARCH) -> dict:
    """images/s embedding n PNG files: clipspace's encode_images (cache off) at fp32 and at each
    reduced precision, and a DataLoader with workers at fp32 ("speed", keyed "fp32", "bf16", "fp16"
    and the DataLoader's name); each reduced precision's agreement with fp32 (cosine, zero-shot
    top-1: the encode section's `precision_agreement`) on the same files ("agreement")."""
    from PIL import Image

    from clipspace import load_clip

    from .encode import PRECISIONS, precision_agreement

    device = torch.device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = load_clip(arch, device=str(device))

    class Files(torch.utils.data.Dataset):
        def __init__(self, paths):
            self.paths = paths

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            return clip.preprocess(Image.open(self.paths[i]))

    with tempfile.TemporaryDirectory() as d:
        paths = subjects.write_image_files(Path(d), n)
        loader = torch.utils.data.DataLoader(Files(paths), batch_size=64, num_workers=workers,
                                             pin_memory=device.type == "cuda")

        def dataloader():
            with torch.inference_mode():
                for x in loader:
                    clip.model.encode_image(x.to(device, non_blocking=True), normalize=True).float().cpu()

        contenders = {p: lambda p=p: clip.encode_images(paths, cache=False, progress=False, precision=p)
                      for p in ("fp32",) + PRECISIONS}
        contenders[f"DataLoader, {workers} workers"] = dataloader
        speed = {name: summarize([n / s for s in _seconds(fn, device, repeat)]) for name, fn in contenders.items()}
        agreement = precision_agreement(clip, paths)
    return {"speed": speed, "agreement": agreement}


def tiny_stable_unclip(device, embed_dim: int = 128, seed: int = 0):
    """A StableUnclipDecoder over tiny, randomly initialised components (the tests' own)."""
    from diffusers import StableUnCLIPImg2ImgPipeline

    from clipspace.unclip.stable_unclip import StableUnclipDecoder, tiny_components

    pipe = StableUnCLIPImg2ImgPipeline(feature_extractor=None, image_encoder=None, **tiny_components(embed_dim, seed=seed))
    pipe.to(torch.device(device))
    return StableUnclipDecoder(pipe, clip_name="clipspace-tiny")


def stable_unclip_roundtrip(device, steps: int = 50, repeat: int = 5) -> dict:
    """Seconds to invert one image and decode it back through the Stable unCLIP adapter (tiny components)."""
    from clipspace import world
    from clipspace.unclip.latents import decode, invert

    device = torch.device(device)
    clip, _ = subjects.offline_clip()
    clip.model.to(device)
    clip.device = device
    dec = tiny_stable_unclip(device, clip.embed_dim)
    image = world.single_objects(1)[0].render(dec.image_size)

    def roundtrip():
        lat = invert(dec, clip, [image], steps=steps)
        return decode(dec, lat.z, lat.x_T, steps=steps, output="pt")

    return summarize(_seconds(roundtrip, device, repeat))


def measure(device, quick: bool = False) -> dict:
    """All GPU figures on `device` (any device: quick=True on the CPU is the smoke test)."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    batch, n_files = (8, 16) if quick else (512, 512)
    flops = 8.82e9
    vit = vit_tensor_throughput(device, batch=batch, iters=2 if quick else 10, repeat=2 if quick else 5)
    matmul = device_matmul_peak(device, n=512 if quick else 8192, iters=2 if quick else 20)
    sheet = datasheet_peak(name)
    rows = [{"what": f"ViT-B-32 image tower, bf16, preprocessed tensors, batch {batch}", "images_per_s": vit,
             "share_datasheet": vit["median"] * flops / (sheet * 1e12) if sheet else None,
             "share_measured": vit["median"] * flops / (matmul * 1e12)}]
    arch = "ViT-S-32-alt" if quick else subjects.RANDOM_ARCH
    files = files_throughput(device, n=n_files, repeat=1 if quick else 3, workers=0 if quick else 8, arch=arch)
    fp32, agree = files["speed"]["fp32"]["median"], files["agreement"]
    for what, r in files["speed"].items():
        row = {"what": f"{arch} from {n_files} PNG files: " + (what if what.startswith("DataLoader") else
                                                               f"clipspace encode_images, precision={what!r}"),
               "images_per_s": r, "vs_fp32": r["median"] / fp32}
        if what in agree:
            row["agreement"] = (f"cosine min {agree[what]['cos_min']:.6f}, zero-shot top-1 "
                                f"{agree[what]['top1_agreement']:.0%} ({agree['n_captions']} captions)")
        rows.append(row)
    su = stable_unclip_roundtrip(device, steps=5 if quick else 50, repeat=1 if quick else 5)
    return {"date": now(), "device": name, "datasheet_bf16_tflops": sheet, "measured_bf16_matmul_tflops": matmul,
            "rows": rows, "stable_unclip_roundtrip_s": su}


def _section(figures: dict, status: str, reason: str = "") -> dict:
    rows = list(figures.get("rows", []))
    if figures.get("stable_unclip_roundtrip_s"):
        rows.append({"what": "Stable unCLIP adapter, tiny components: invert + decode 1 image, 50 steps (seconds)",
                     "seconds": figures["stable_unclip_roundtrip_s"]})
    notes = [f"figures from {figures['date']} on {figures['device']}" + (" (an earlier run, not this one)"
                                                                        if status != "ok" else ""),
             f"bf16 peaks: datasheet {figures.get('datasheet_bf16_tflops') or '?'} TFLOP/s, measured matmul "
             f"{figures['measured_bf16_matmul_tflops']:.0f} TFLOP/s; ViT-B-32 = 8.82 GFLOPs per image"] if rows else []
    return {"title": "GPU", "status": status, "reason": reason, "notes": notes,
            "tables": [{"caption": "", "columns": [["what", "what"], ["images_per_s", "images/s"],
                                                   ["share_datasheet", "share of datasheet peak"],
                                                   ["share_measured", "share of measured matmul peak"],
                                                   ["vs_fp32", "speed vs fp32"], ["agreement", "agreement with fp32"],
                                                   ["seconds", "seconds"]], "rows": rows}] if rows else [],
            "data": figures}


def load_last() -> dict | None:
    try:
        return json.loads(LAST_FILE.read_text())
    except (OSError, ValueError):
        return None


VIT_B32_GFLOPS = 8.82  # per 224 px image (the figure; the encode section counts its own)
H100_BF16_TFLOPS = 989.0
COMMAND = ".venv/bin/python -m benchmarks.run --only gpu --out benchmarks/gpu-run"  # from the repository root


def arithmetic() -> list[str]:
    """What 'share of peak' means, worked out: the images/s a GPU would reach at 100 % of its peak."""
    at_peak = H100_BF16_TFLOPS * 1e12 / (VIT_B32_GFLOPS * 1e9)
    return [f"peak-share arithmetic: ViT-B-32 is {VIT_B32_GFLOPS} GFLOPs per image; an H100's ≈{H100_BF16_TFLOPS:.0f} "
            f"TFLOP/s dense bf16 / {VIT_B32_GFLOPS} GFLOPs ≈ {at_peak / 1e3:,.0f}k images/s at 100 % of peak, so "
            f"every 1 % of peak is ≈{at_peak / 100:,.0f} images/s (other GPUs: their datasheet bf16 TFLOP/s, "
            "`DATASHEET_BF16_TFLOPS`, in place of 989).",
            "measured there: (1) ViT-B-32 image tower, bf16, batch 512, from preprocessed tensors: images/s and "
            "its share of the datasheet and of a measured bf16 matmul peak; (2) images/s from 512 PNG files "
            "through `encode_images` (decoding and preprocessing included) against a DataLoader with 8 workers, "
            "and through `encode_images(precision=...)` at bf16 and fp16 with their agreement with fp32 (cosine, "
            "zero-shot top-1), side by side; (3) the Stable unCLIP adapter on tiny components: invert + decode one "
            "image, 50 steps."]


def run(quick: bool = False) -> dict:
    if not torch.cuda.is_available():
        last = load_last()
        how = f"torch sees no CUDA GPU in this run. To measure, run `{COMMAND}` on a machine with one"
        if last is None:
            sec = {"title": "GPU", "status": "not measured here",
                   "reason": f"{how}; the figures are then kept in benchmarks/{LAST_FILE.name} and shown by every "
                             "later run. Last GPU figures: none recorded yet.",
                   "notes": arithmetic(), "tables": []}
            return sec
        sec = _section(last, "not measured here", f"{how}. The last GPU figures follow, from {last['date']} "
                                                  f"on {last['device']} (benchmarks/{LAST_FILE.name}).")
        sec["notes"] = arithmetic() + sec["notes"]
        return sec
    figures = measure("cuda", quick=quick)
    if not quick:
        write_json(figures, LAST_FILE)
    sec = _section(figures, "ok")
    sec["notes"] = arithmetic() + sec["notes"]
    return sec
