"""Timing and statistics for benchmarks on a noisy machine.

Every comparison is measured side by side: `interleave` runs the contenders round-robin (the order
rotates each round), so a slow spell of the machine hits all of them alike, and `paired_ratio` takes
the ratio within each round before summarising. Figures are medians with their spread (quartiles
and min/max), never a single run. `latency` records one sample per call for p50/p95 budgets.
"""
from __future__ import annotations

import gc
import math
import time
from typing import Callable, Mapping

import numpy as np

Clock = Callable[[], float]


def time_call(fn: Callable[[], object], clock: Clock = time.perf_counter) -> float:
    """Seconds one call of `fn` takes, with the cyclic garbage collector paused (as timeit does):
    a collection that the previous contender's garbage triggers would otherwise land on this one."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = clock()
        fn()
        return clock() - t0
    finally:
        if enabled:
            gc.enable()


def interleave(contenders: Mapping[str, Callable[[], object]], repeat: int = 5, warmup: int = 1,
               setup: Callable[[str], object] | None = None, clock: Clock = time.perf_counter) -> dict[str, list[float]]:
    """Time each contender `repeat` times, round-robin, after `warmup` untimed rounds.

    Rounds come in pairs: round 2k runs the contenders rotated to start at index k, round 2k+1 the
    same order reversed. The rotation keeps any one from always being first (after a garbage
    collection, or after another warmed the caches); the reversal puts every pair of contenders in
    both orders equally often, so a drift within a round (a slower second of two heavy runs on a
    VM, say) cannot always land on the same one of a pair. `setup(name)` runs untimed before each
    timed call (e.g. point the cache at a fresh folder). Returns name -> seconds.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            if setup:
                setup(name)
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        order = [names[(r // 2 + j) % len(names)] for j in range(len(names))]
        for name in (order if r % 2 == 0 else order[::-1]):
            if setup:
                setup(name)
            times[name].append(time_call(contenders[name], clock))
    return times


def latency(fn: Callable[[int], object], n: int = 30, warmup: int = 2, clock: Clock = time.perf_counter) -> list[float]:
    """`n` timed calls of `fn(i)` (i = warmup, warmup+1, ...: a new argument each call, as a widget
    sends a new value each time) after `warmup` untimed ones."""
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(warmup, warmup + n):
        out.append(time_call(lambda: fn(i), clock))
    return out


def summarize(samples) -> dict:
    """median, quartiles, IQR, min, max, p95, mean and n of a list of numbers (None if empty)."""
    x = np.asarray(list(samples), dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None, "iqr": None, "min": None, "max": None,
                "p95": None, "mean": None}
    q1, med, q3, p95 = np.percentile(x, [25, 50, 75, 95])
    return {"n": int(x.size), "median": float(med), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
            "min": float(x.min()), "max": float(x.max()), "p95": float(p95), "mean": float(x.mean())}


def paired_ratio(slow: list[float], fast: list[float]) -> dict:
    """Summary of slow[i] / fast[i] over rounds (a speed-up of `fast` over `slow`, > 1 = faster).
    The two lists come from one `interleave`, so round i of each ran side by side."""
    if len(slow) != len(fast):
        raise ValueError(f"paired_ratio: {len(slow)} vs {len(fast)} samples; time them in one interleave")
    return summarize([s / f for s, f in zip(slow, fast) if f > 0])


def scale(summary: dict, factor: float) -> dict:
    """A summary with every statistic multiplied by `factor` (e.g. seconds -> ms, or to a rate's
    reciprocal use `rate`)."""
    return {k: (v * factor if isinstance(v, float) else v) for k, v in summary.items()}


def rate(times: list[float], items: float) -> dict:
    """Summary of items per second over timed calls that each processed `items` items."""
    return summarize([items / t for t in times if t > 0])


def goal_check(value: float | None, goal: float, higher_is_better: bool = True) -> bool | None:
    """Whether `value` meets `goal` (None when there is no value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value >= goal if higher_is_better else value <= goal
