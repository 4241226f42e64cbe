"""Timing helpers of the benchmark suite: the median and spread of repeated calls, and how they are
written in BENCHMARKS.md."""

from __future__ import annotations

import time

import numpy as np


def timed(fn, reps: int, warmup: int = 1) -> dict:
    """Median, spread and 95th percentile of ``reps`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    a = np.asarray(ts)
    return {
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
        "p95": float(np.percentile(a, 95)),
        "reps": reps,
    }


def runs(fn, reps: int) -> tuple[dict, object]:
    """Median and spread of ``reps`` calls, and the last call's result."""
    ts, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    a = np.asarray(ts)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()), "reps": reps}, out


def fmt_s(t: dict, unit: str = "ms") -> str:
    """``t`` (from :func:`timed` or :func:`runs`) as "median unit (min to max, n=reps)"."""
    k = 1e3 if unit == "ms" else 1.0
    return f"{t['median'] * k:.1f} {unit} ({t['min'] * k:.1f} to {t['max'] * k:.1f}, n={t['reps']})"
