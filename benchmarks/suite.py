"""The tests section of the benchmark suite (issue 18, item 4): the README's test command (the whole
suite) and the fast subset (its pytest markers), each run as a user runs it, in a new process from the
repository root, timed on the wall clock.

Targets: the whole suite under 10 minutes, the fast subset under 2 minutes, on a 2-core machine. The
session-wide quick demo is built once per pytest run and shared by its workers (``tests/conftest.py``,
``quick_demo``), so a run's time includes one demo build.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from timing import fmt_s, spread

ROOT = Path(__file__).resolve().parents[1]
# the README's commands, word for word after the interpreter
WHOLE = ["-m", "pytest", "-n", "auto", "--dist", "loadfile"]
FAST = ["-m", "pytest", "-n", "auto", "-m", "not slow and not browser and not ray"]
TARGETS_S = {"whole": 600.0, "fast": 120.0}
COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped)")


def pytest_run(args: list[str]) -> dict:
    """One pytest run: its wall seconds and its summary counts (passed, failed, errors, skipped)."""
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, *args, "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t
    last = (p.stdout.strip().splitlines() or [""])[-1]
    counts = {kind.rstrip("s"): int(n) for n, kind in COUNTS.findall(last)}
    return {"seconds": seconds, "returncode": p.returncode, "counts": counts, "summary": last}


def section_tests(res: dict, fast_reps: int = 3, whole_reps: int = 1) -> None:
    """``res["tests"]``: the fast subset ``fast_reps`` times and the whole suite ``whole_reps`` times."""
    out = {}
    for name, args, reps in (("fast", FAST, fast_reps), ("whole", WHOLE, whole_reps)):
        runs = [pytest_run(args) for _ in range(reps)]
        out[name] = {
            "command": "python " + " ".join(a if " " not in a else repr(a) for a in args),
            "time": spread(r["seconds"] for r in runs),
            "runs": runs,
            "target_s": TARGETS_S[name],
        }
    res["tests"] = out


def md_tests(t: dict) -> list[str]:
    L = [
        "## The test suite",
        "",
        "The README's test command (the whole suite) and the fast subset (pytest markers), each in a new "
        "process from the repository root, as a user runs them; the session-wide quick demo is built "
        "once per run and shared by the pytest-xdist workers.",
        "",
        "| run | command | wall time | tests | target |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("fast", "fast subset"), ("whole", "whole suite")):
        if name not in t:
            continue
        r = t[name]
        ok = all(x["returncode"] == 0 for x in r["runs"])
        met = r["time"]["median"] < r["target_s"] and ok
        counts = r["runs"][-1]["counts"]
        tests = ", ".join(f"{n} {k}" for k, n in counts.items()) or r["runs"][-1]["summary"]
        L.append(
            f"| {label} | `{r['command']}` | {fmt_s(r['time'], 's')} | {tests} | "
            f"under {r['target_s'] / 60:.0f} min: {'met' if met else 'NOT met'} |"
        )
    return [*L, ""]
