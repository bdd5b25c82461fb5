"""The hardware's achievable peak, measured, and model FLOPs, counted (nanoGPT's MFU, for a CPU).

Peak: the best of several large square torch.matmul calls, in float32 and bfloat16: what this
machine's BLAS reaches on the most favourable kernel there is, so "share of peak" below is an upper
bound on what a model could reach here, not the vendor's datasheet figure.
FLOPs: counted by torch's own FlopCounterMode on one forward (a multiply-add is 2 FLOPs), so the
figure covers the matmuls and convolutions of the real model, not a formula. Where the installed
torch has no formula for an attention kernel (torch 2.14 lacks the CPU flash kernel's, and would
silently drop attention from every figure), `MISSING_FORMULAS` supplies the standard one.
"""
from __future__ import annotations

import time

import torch

from .harness import summarize


def matmul_peak(n: int = 2048, repeat: int = 5, dtype=torch.float32) -> dict:
    """GFLOP/s of an (n x n) @ (n x n) matmul: summary over `repeat` calls after one warm-up."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        rates.append(2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    s = summarize(rates)
    s["n"] = n
    return s


def sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """Scaled dot-product attention: Q K^T (2 b h s_q s_k d) plus the weights times V (2 b h s_q s_k d_v)."""
    b, h, s_q, d = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * d + 2 * b * h * s_q * s_k * d_v


def missing_formulas() -> dict:
    """Attention kernels this torch's FlopCounterMode has no formula for, mapped to `sdpa_flops`."""
    from torch.utils.flop_counter import flop_registry

    ops = [getattr(torch.ops.aten, name, None) for name in (
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")]
    return {op: sdpa_flops for op in ops if op is not None and op not in flop_registry}


def forward_flops(fn, *args) -> int:
    """FLOPs of one call of fn(*args), counted by torch.utils.flop_counter (multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path is one fused op the counter cannot see into:
    # count the same maths on the ordinary path (it would miss the q/k/v and output projections)
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=missing_formulas()) as counter:
            fn(*args)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


def image_flops(clip) -> int:
    """FLOPs to embed one image with `clip`'s image tower at its input size."""
    x = torch.zeros(1, 3, clip.image_size, clip.image_size)
    return forward_flops(clip.model.encode_image, x)


def text_flops(clip) -> int:
    """FLOPs to embed one text (a full context of tokens: open_clip always runs the whole context)."""
    tokens = clip.tokenizer(["a photo"])
    return forward_flops(clip.model.encode_text, tokens)


def native_bf16() -> bool:
    """Whether bfloat16 matmuls run in hardware: a GPU, or a CPU with AVX512-BF16 or AMX. Elsewhere
    torch emulates them about 100 times slower than float32 (measured here: 511 s for this section)."""
    from .report import cpu_flags

    return torch.cuda.is_available() or bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def run(quick: bool = False) -> dict:
    n = 1024 if quick else 2048
    rows, notes = [], []
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        size = n if dtype == torch.float32 or native_bf16() else 256  # emulated: a size that ends, for the record
        s = matmul_peak(size, 3 if quick else 7, dtype)
        rows.append({"dtype": name, "size": f"{size}x{size}", "gflops": s, "best": s["max"]})
    if not native_bf16():
        notes.append("this CPU has no bfloat16 matmul units (no avx512_bf16 / amx_bf16): bfloat16 is emulated, "
                     "measured at 256x256 only, and no figure below uses it")
    return {"title": "Hardware peak (measured matmul)", "status": "ok",
            "notes": [f"torch.matmul of two {n}x{n} matrices, {torch.get_num_threads()} torch threads; "
                      "'best' is the peak used as the denominator of every 'share of peak' figure below.", *notes],
            "tables": [{"caption": "", "columns": [["dtype", "dtype"], ["size", "matrices"],
                                                   ["gflops", "GFLOP/s"], ["best", "best GFLOP/s"]],
                        "rows": rows}],
            "peak_gflops": {r["dtype"]: r["best"] for r in rows}}
