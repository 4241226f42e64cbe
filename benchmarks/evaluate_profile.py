"""`flagcore evaluate` of an imported `full` checkpoint (88M, random weights) with `--train`, by stage:
fp32 against int8 against int8 with the payoff sample. Writes benchmarks/results/evaluate_profile.json.

    .venv/bin/python benchmarks/evaluate_profile.py                   # 9,073 bars: about 30 min, 2 cores
    .venv/bin/python benchmarks/evaluate_profile.py --bars 320            # scaled down, extrapolated per bar
    .venv/bin/python benchmarks/evaluate_profile.py --variants fp32 --bars 2000   # one variant: runs in parts

The checkpoint is the `full` preset's random weights (LoRA B non-zero) saved in the reviewed format
and imported (``models.checkpoint.import_checkpoint``), as a team's own file would be; the data is the
demo market (``data.market``) with 9,073 evaluated bars (``--bars``), their 63 bars of window history,
and a training file holding a year of bars before them. Each variant evaluates into a fresh store (no
inference cache) and is timed by stage from the pipeline's progress callback: load, inference on the
test period, the fp32 agreement sample (int8; not scaled), inference on the training stretch (the
year, or its payoff sample), options (options and sweeps), validation, write (diagnostics and the
store's transaction).

With ``--bars N`` below 9,073 every stage is also extrapolated to the full size in proportion to the
bars it processes (inference: the bars it infers; options and validation: the evaluated bars; load and
write: not scaled), and the JSON marks those figures ``"extrapolated": true``. Variants already in the
JSON from another part stay unless run again. Measure on a quiet machine: figures taken while other
work runs are not comparable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # conftest.reviewed_state_dict: the reviewed key layout

OUT = ROOT / "benchmarks" / "results" / "evaluate_profile.json"
FULL_BARS = 9073  # the seed's test set
YEAR = 8766  # hourly bars per year (24/7 calendar): the payoff stretch
MIN_BARS = 301  # evaluate's least: 6 CPCV groups outlasting a 24-bar label horizon's purge and embargo
SAMPLE_BLOCKS, SAMPLE_BLOCK = 8, 250  # the payoff sample at full size: 2,000 bars
VARIANTS = {  # name -> (precision, payoff sample)
    "fp32": ("fp32", False),
    "int8": ("int8", False),
    "int8_sample": ("int8", True),
}
# environment variables that cap the instruction sets torch's libraries use
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")
# pipeline progress stages -> the profile's stages
STAGES = {
    "loading": "load",
    "inference on test": "inference_test",
    # int8's fp32 agreement sample: 256 bars whatever the file's length, so not scaled with the bars
    "agreement sample": "agreement",
    "inference on train": "inference_train",
    "options": "options",
    "sweeps": "options",
    "validation": "validation",
    "diagnostics": "write",
    "writing": "write",
}


def build_inputs(root: Path, bars: int, window: int) -> dict:
    """The imported `full` checkpoint and the test and training files for ``bars`` evaluated bars."""
    import pandas as pd
    import torch
    from conftest import reviewed_state_dict

    from flagcore.data.dataset import write_dataset
    from flagcore.data.features import build_datasets
    from flagcore.data.market import TEST_START, demo_market
    from flagcore.models.checkpoint import import_checkpoint
    from flagcore.models.flag_trader import PRESETS

    cfg = PRESETS["full"]
    reviewed = root / "reviewed_full.pt"
    torch.save({"model_state_dict": reviewed_state_dict(cfg), "epoch": 1}, reviewed)
    ckpt = import_checkpoint(reviewed, root / "full")
    stretch = scaled_stretch(bars)
    days = math.ceil((stretch + 2000) / 24)  # the features' warm-up, the purge and the year
    market = demo_market(train_start=TEST_START - pd.Timedelta(days=days), test_bars=bars)
    sets = build_datasets(market, test_start=TEST_START, context=window - 1)
    paths = {k: write_dataset(df, root / f"{k}.parquet", **meta) for k, (df, meta) in sets.items()}
    return {"checkpoint": ckpt, "test": paths["test"], "train": paths["train"], "stretch": stretch}


def scaled_stretch(bars: int) -> int:
    """The payoff stretch at ``bars`` evaluated bars: the year, scaled like the test period."""
    return YEAR if bars >= FULL_BARS else max(60, round(YEAR * bars / FULL_BARS))


def sample_settings(bars: int) -> tuple[int, int]:
    """(payoff_sample, payoff_block) at ``bars``: 8 blocks of 250 bars at full size, scaled down."""
    block = SAMPLE_BLOCK if bars >= FULL_BARS else max(5, round(SAMPLE_BLOCK * bars / FULL_BARS))
    return SAMPLE_BLOCKS * block, block


def profile_variant(inputs: dict, bars: int, precision: str, sampled: bool, tmp: Path) -> dict:
    """One evaluate into a fresh store, timed by stage."""
    from flagcore.pipeline.evaluate import evaluate
    from flagcore.pipeline.settings import EvaluateSettings
    from flagcore.store.store import Store

    marks: list[tuple[str, float]] = []

    def progress(stage: str, frac: float) -> None:
        key = next((v for k, v in STAGES.items() if stage.endswith(k)), None)
        if key is not None and (not marks or marks[-1][0] != key):
            marks.append((key, time.perf_counter()))

    sample, block = sample_settings(bars) if sampled else (None, 250)
    s = EvaluateSettings(
        precision=precision,
        payoff_sample=sample,
        payoff_block=block,
        payoff_years=inputs["stretch"] / YEAR,
        periods_per_year=YEAR,
    )
    store = Store(tmp / f"{precision}-{sampled}.duckdb")
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    marks.append(("load", t0))
    res = evaluate(
        inputs["checkpoint"],
        inputs["test"],
        store=store,
        train_data=inputs["train"],
        settings=s,
        progress=progress,
    )
    end = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_SELF)
    stages: dict[str, float] = {}
    for (k, t), (_, t_next) in zip(marks, [*marks[1:], ("end", end)], strict=True):
        stages[k] = round(stages.get(k, 0.0) + t_next - t, 2)
    summary = store.run(res["run_id"])["summary"]
    period = summary["payoff_period"] or {}
    inferred_train = (period.get("sample") or {}).get("inferred_bars") or period.get("bars", 0)
    return {
        "precision": precision,
        "payoff_sample": (period.get("sample") or {}).get("source"),
        "evaluated_bars": summary["evaluated_bars"],
        "inferred_test_bars": summary["evaluated_bars"] + 63,
        "inferred_train_bars": int(inferred_train),
        "stages_s": stages,
        "total_s": round(end - t0, 2),
        # the process's CPU time in user code and in the kernel, and its minor page faults: a batch's
        # activations on fresh pages each time cost a quarter of int8's CPU time (models/malloc.py)
        "cpu_s": {
            "user": round(after.ru_utime - before.ru_utime, 1),
            "kernel": round(after.ru_stime - before.ru_stime, 1),
        },
        "minor_page_faults": after.ru_minflt - before.ru_minflt,
        "inference": summary.get("inference"),
    }


def extrapolate(v: dict, sampled: bool) -> dict:
    """Stage seconds at 9,073 evaluated bars, each in proportion to the bars it processes."""
    f_test = (FULL_BARS + 63) / v["inferred_test_bars"]
    full_train = SAMPLE_BLOCKS * SAMPLE_BLOCK if sampled else YEAR + 63  # a sample's history is not inferred
    f_train = full_train / max(1, v["inferred_train_bars"])
    f_eval = FULL_BARS / v["evaluated_bars"]
    scale = {"inference_test": f_test, "inference_train": f_train, "options": f_eval, "validation": f_eval}
    stages = {k: round(s * scale.get(k, 1.0), 1) for k, s in v["stages_s"].items()}
    return {"extrapolated": True, "stages_s": stages, "total_s": round(sum(stages.values()), 1)}


def int8_product(rows: int = 1024, d: int = 768, n: int = 2304, reps: int = 15) -> dict:
    """One int8 product of a block's q/k/v shape ((rows, d) @ (d, n): a batch of 16 windows of 64
    positions) against the fp32 product of the same shape, on one torch thread as int8 batches run,
    with the oneDNN implementation that ran it (its verbose log): what the instruction set gives int8
    over fp32 on this CPU (or under the caps), before anything else in the forward."""
    import statistics

    import torch
    import torch.nn.functional as F

    from flagcore.models.int8 import Int8Linear

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        w, x = torch.randn(n, d, generator=g) * 0.02, torch.randn(rows, d, generator=g)
        lin = Int8Linear(w, torch.zeros(n))
        lin(x), F.linear(x, w)  # primitives created, buffers allocated
        with tempfile.TemporaryFile(mode="w+") as log:  # oneDNN's verbose lines go to the C stdout
            sys.stdout.flush()
            saved = os.dup(1)
            os.dup2(log.fileno(), 1)
            try:
                with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                    lin(x)
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
                os.close(saved)
            log.seek(0)
            lines = [r.split(",") for r in log.read().splitlines()]
        impl = sorted({r[6] for r in lines if len(r) > 6 and r[3] == "exec" and r[5] == "matmul"})

        def median_s(fn) -> float:
            ts = []
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            return statistics.median(ts)

        i8, f32 = median_s(lambda: lin(x)), median_s(lambda: F.linear(x, w))
    finally:
        torch.set_num_threads(threads)
    ops = 2 * rows * d * n
    return {
        "shape": [rows, d, n],
        "implementation": ", ".join(impl) or "unknown",
        "int8_gops": round(ops / i8 / 1e9, 1),
        "fp32_gflops": round(ops / f32 / 1e9, 1),
        "speedup": round(f32 / i8, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=FULL_BARS, help=f"evaluated bars (default {FULL_BARS})")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    chosen = [v for v in a.variants.split(",") if v]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if a.bars < MIN_BARS:
        ap.error(
            f"--bars must be at least {MIN_BARS}: the validation's 6 CPCV groups of 2 x 24 + 2 bars, and one"
        )
    from flagcore.models.malloc import keep_freed_memory

    keep_freed_memory()  # as the `flagcore` command does first, before any thread takes an arena
    import torch

    from flagcore.models.flag_trader import PRESETS

    out = Path(a.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    if res.get("bars") not in (None, a.bars):
        res = {}  # another size's parts do not mix with these
    res.update(
        {
            "bars": a.bars,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "torch_threads": torch.get_num_threads(),
            # the instruction sets the libraries were capped at (run.py's AVX2 class), if any
            "isa_caps": {k: os.environ[k] for k in ISA_CAPS if k in os.environ},
            "command": " ".join(sys.argv),
            "int8_product": int8_product(),
        }
    )
    res.setdefault("variants", {})
    with tempfile.TemporaryDirectory(prefix="flagcore-evaluate-profile-") as d:
        tmp = Path(d)
        inputs = build_inputs(tmp, a.bars, PRESETS["full"].window)
        for name in chosen:
            precision, sampled = VARIANTS[name]
            print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
            try:
                v = profile_variant(inputs, a.bars, precision, sampled, tmp)
            except Exception as e:  # noqa: BLE001 - one failed variant must not lose the others
                res["variants"][name] = {"failed": f"{type(e).__name__}: {e}"}
                write(out, res)
                continue
            if a.bars < FULL_BARS:
                v[f"at_{FULL_BARS}_bars"] = extrapolate(v, sampled)
            res["variants"][name] = v
            write(out, res)  # after each variant: a run stopped later keeps what it measured
    write(out, res)
    print(json.dumps(res, indent=1, default=str))


def write(out: Path, res: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
