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


def spread(values) -> dict:
    """Median, min and max of measured seconds, in the shape :func:`fmt_s` reads."""
    a = np.asarray(list(values), dtype=float)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()), "reps": int(a.size)}


# the demo's stages in the order a build runs them; each training task adds "<task> training" and
# "<task> inference" (in its worker), with their CPU seconds ("... cpu")
DEMO_STAGES = ("data", "workers ready", "training", "evaluate", "total", "main cpu")


def md_demo_build(d: dict) -> list[str]:
    """BENCHMARKS.md's "Demo build" section from ``section_demo``'s results: the builds against their
    targets, then each build's stages (medians over the builds; wall seconds unless marked CPU)."""
    names = {"quick": "`flagcore demo --quick`", "full": "`flagcore demo`"}
    lines = [
        "## Demo build",
        "",
        "| demo | first build | second call (reuses everything) | target (median of 3 fresh builds) |",
        "|---|---|---|---|",
    ]
    for k, v in d.items():
        ok = "met" if v["first"]["median"] <= v["target_s"] else "NOT met"
        lines.append(
            f"| {names.get(k, k)} | {fmt_s(v['first'], 's')} | {fmt_s(v['second_call'], 's')} | "
            f"under {v['target_s']:.0f} s: {ok} |"
        )
    lines += [
        "",
        "Each build starts from an empty folder and store, as a fresh clone does, in a new process (the "
        "command as a user runs it). Its models train in 2 worker processes, each model's inference on "
        "the evaluated and training periods right after its training, in the same worker; the "
        "evaluation then finds every logit cached.",
        "",
        "Where the time goes, from each build's own records (`timings` in `flagcore demo --json`): wall "
        "seconds, medians over the builds; the tasks run two at a time, so their sum exceeds the "
        "training stage.",
        "",
        "| stage | " + " | ".join(names.get(k, k) for k in d) + " |",
        "|---|" + "---|" * len(d),
    ]
    keys = [k for k in DEMO_STAGES if any(k in v["stages"] for v in d.values())]
    keys[2:2] = sorted({k for v in d.values() for k in v["stages"] if k not in DEMO_STAGES})
    for key in keys:
        cells = [fmt_s(v["stages"][key], "s") if key in v["stages"] else "" for v in d.values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines + [""]
