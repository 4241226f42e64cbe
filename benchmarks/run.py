"""flagcore's benchmark suite: runs every figure and rewrites BENCHMARKS.md.

    .venv/bin/python benchmarks/run.py            # everything (about 50 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --skip demo,pages   # leave out the slow sections
    .venv/bin/python benchmarks/run.py --skip inference,peers,slider,validation,retrain,store,pages \
        --demo quick --demo-builds 1 --out /tmp/bench.md   # one quick demo build, by stage

Each figure is the median over several runs with its spread (min to max); ratios against peers are
measured in the same run on the same inputs, and the results are checked to be identical. Nothing
here is asserted in the tests: these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # its sibling modules, also when loaded from elsewhere

from markdown_report import write_markdown  # noqa: E402
from peers import section_peers  # noqa: E402
from scaleout import section_retrain  # noqa: E402
from suite import section_tests  # noqa: E402
from timing import spread, timed  # noqa: E402

OUT = ROOT / "BENCHMARKS.md"
FULL_BARS = 9073  # the seed's test period
# the AVX2 class (a 2-core EPYC without AVX-512 or VNNI, where int8 ran 24-25 windows/s): on an AVX-512
# CPU, its libraries capped at AVX2 (oneDNN's products, MKL's, ATen's kernels), int8 with the payoff
# sample at AVX2_BARS evaluated bars, extrapolated (capped so, a Zen 4 EPYC ran int8 at 25.6 windows/s)
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
AVX2_BARS = 2000
SECTIONS = (
    "inference",
    "precision",
    "evaluate",
    "slider",
    "validation",
    "retrain",
    "store",
    "peers",
    "demo",
    "pages",
    "meeting",
    "tests",
)


# ----------------------------------------------------------------------------- machine


# the vector instructions that set int8's and fp32's speed here (VNNI: int8 products in one instruction)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")


def machine() -> dict:
    import torch

    cpu, flags = platform.processor() or "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not flags:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    cfg = torch.__config__.show()
    import re

    found = re.search(r"BLAS_INFO=([^,\s]+)", cfg)
    blas = found.group(1) if found else "unknown"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "blas": blas,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ----------------------------------------------------------------------------- inference


def gemm_peak(m: int, k: int, n: int, reps: int = 5, device="cpu", dtype=None) -> dict:
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)

    def run():
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()

    t = timed(run, reps, warmup=2)
    return {**t, "gflops": 2 * m * k * n / t["median"] / 1e9, "shape": f"({m} x {k}) @ ({k} x {n})"}


def bench_inference(name: str, batch: int, batches: int, reps: int, device="cpu", dtype=None) -> dict:
    import torch

    from flagcore.models.flag_trader import base_network, build_model, flops_per_window, merged_copy, preset

    dtype = dtype or torch.float32
    cfg = preset(name)
    net = merged_copy(build_model(cfg, seed=0)).to(device=device, dtype=dtype).eval()
    W = cfg.window
    x = torch.randn(batch, W, cfg.state_dim, device=device, dtype=dtype)

    def run():
        with torch.inference_mode():
            for _ in range(batches):
                net.last_logits(x)
        if device != "cpu":
            torch.cuda.synchronize()

    t = timed(run, reps, warmup=1)
    bars = batch * batches
    flops = flops_per_window(base_network(net).config if hasattr(net, "base_model") else cfg)
    bps = bars / t["median"]
    return {
        **t,
        "preset": name,
        "batch": batch,
        "bars_per_s": bps,
        "gflops": flops * bps / 1e9,
        "gflop_per_window": flops / 1e9,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
    }


def section_inference(res: dict) -> None:
    import torch

    full_peak = gemm_peak(64 * 64, 768, 3072)
    demo_peak = gemm_peak(256 * 32, 64, 256)
    res["inference"] = {
        "peak_full_shape": full_peak,
        "peak_demo_shape": demo_peak,
        "full_b64": bench_inference("full", 64, 1, 3),
        "demo_b256": bench_inference("demo", 256, 20, 5),
        "demo_b1024": bench_inference("demo", 1024, 5, 5),
    }
    if torch.cuda.is_available():
        res["inference"]["gpu_peak"] = gemm_peak(64 * 64, 768, 3072, device="cuda", dtype=torch.bfloat16)
        res["inference"]["gpu_full_b256"] = bench_inference("full", 256, 4, 5, "cuda", torch.bfloat16)


# ----------------------------------------------------------------------------- store-backed sections


def demo_store(tmp: Path, quick: bool) -> tuple:
    """A demo store to read from: data/demo if built, else built here."""
    from flagcore.pipeline.demo import build_demo
    from flagcore.store.store import Store

    root = ROOT / "data" / "demo"
    store = Store(tmp / ("quick.duckdb" if quick else "full.duckdb"))
    res = build_demo(store, quick=quick, root=root)
    return store, res["run_id"], root / ("quick" if quick else "full")


def section_slider(res: dict, store, run_id: int) -> None:
    from flagcore.dashboard.live import load_live_inputs, tau_view, threshold_view

    inp = load_live_inputs(store, run_id)
    rng = np.random.default_rng(0)
    values = iter(rng.uniform(0.4, 1.0, 200))
    t = timed(lambda: threshold_view(inp, float(next(values))), 60, warmup=3)
    taus = iter(rng.uniform(0, 3, 200))
    t2 = timed(lambda: tau_view(inp, float(next(taus))), 60, warmup=3)
    res["slider"] = {"threshold": t, "tau": t2, "bars": len(inp.test.close)}


def section_validation(res: dict, store, run_id: int) -> None:
    from flagcore.analysis.cpcv import posthoc_cpcv
    from flagcore.analysis.gate import hifa_verdict
    from flagcore.analysis.permutation import permutation_test
    from flagcore.dashboard.live import load_live_inputs
    from flagcore.pipeline.run import sweep
    from flagcore.pipeline.settings import default_thresholds

    inp = load_live_inputs(store, run_id)
    grid = default_thresholds()
    _, R, _ = sweep(inp.test, inp.train, inp.cfg, "opt3_threshold", "hold_threshold", grid, {"tau": 1.0})
    r = np.diff(inp.test.close) / inp.test.close[:-1]
    rng = np.random.default_rng(1)
    pos = np.sign(rng.standard_normal(r.size))

    def all_three():
        cp = posthoc_cpcv(R, grid, purge=24, embargo=24)
        perm = permutation_test(pos, r, 10_000, block=24, seed=0)
        hifa_verdict(
            cpcv_path_sharpes=cp.path_sharpes,
            returns=R[-1],
            trades=40,
            n_trials=48,
            trial_sharpes=R.mean(1),
            permutation_p=perm.p_value,
            periods_per_year=8766.0,
        )

    res["validation"] = {
        "all_three": timed(all_three, 7),
        "bars": r.size + 1,
        "grid": len(grid),
        "cpcv": timed(lambda: posthoc_cpcv(R, grid, purge=24, embargo=24), 7),
        "permutation_10k": timed(lambda: permutation_test(pos, r, 10_000, 24, 0), 7),
    }


def section_store(res: dict, full_root: Path, store, run_id: int, tmp: Path) -> None:
    from flagcore.pipeline import evaluate as pipeline
    from flagcore.store.store import Store

    captured = {}
    real = pipeline.write_run
    pipeline.write_run = lambda s, run, **kw: captured.setdefault("run", run) and 0
    try:
        pipeline.evaluate(
            full_root / "models" / "ce",
            full_root / "test.parquet",
            store=store,
            train_data=full_root / "train.parquet",
            partner=full_root / "models" / "cgdt" / "cgdt.safetensors",
            retrained=[
                str(full_root / "models" / m)
                for m in ("weighted", "focal", "logit_adjusted", "oversample", "multitask")
            ],
        )
    finally:
        pipeline.write_run = real
    run = captured["run"]

    def write():
        s = Store(tmp / f"w{time.perf_counter_ns()}.duckdb")
        s.ensure()
        t = time.perf_counter()
        real(s, run)
        return time.perf_counter() - t

    ts = [write() for _ in range(5)]
    rows = sum(len(o["actions"]) for o in run.options.values())
    q = {}
    s = store
    q["list_runs"] = timed(lambda: s.list_runs(), 10)
    q["run"] = timed(lambda: s.run(run_id), 10)
    q["option_results"] = timed(lambda: s.option_results(run_id), 10)
    q["hifa"] = timed(lambda: s.hifa(run_id), 10)
    q["diagnostics"] = timed(lambda: s.diagnostics(run_id), 10)
    q["predictions (one option)"] = timed(lambda: s.predictions(run_id, "baseline"), 10)
    q["equity_curves (all options)"] = timed(lambda: s.equity_curves(run_id), 10)
    q["sweeps"] = timed(lambda: s.sweeps(run_id), 10)
    q["cpcv_paths"] = timed(lambda: s.cpcv_paths(run_id), 10)
    q["permutation_null"] = timed(lambda: s.permutation_null(run_id, "baseline"), 10)
    q["reviews"] = timed(lambda: s.reviews(run_id), 10)
    from flagcore.dashboard.live import load_live_inputs

    q["live inputs (slider)"] = timed(lambda: load_live_inputs(s, run_id), 5)
    a = np.asarray(ts)
    res["store"] = {
        "write": {
            "median": float(np.median(a)),
            "min": float(a.min()),
            "max": float(a.max()),
            "reps": len(a),
        },
        "options": len(run.options),
        "prediction_rows": rows,
        "queries": q,
    }


# ----------------------------------------------------------------------------- peers


# ----------------------------------------------------------------------------- demo and pages


DEMO_TARGETS = {"quick": 30.0, "full": 120.0}  # seconds, issue 18: median of 3 fresh builds on 2 cores


def section_demo(res: dict, tmp: Path, reps: int = 3, which: tuple[str, ...] = ("quick", "full")) -> None:
    """``flagcore demo`` (and ``--quick``) into empty folders, ``reps`` fresh builds each, in a new
    process as a user runs it: wall time, a second call that reuses everything, and the build's own
    per-stage wall times (``timings`` of its JSON output: data, each training task's training and
    inference in its worker, the training stage, the evaluation), medians over the builds."""
    out = {}
    for name in which:
        quick = name == "quick"
        runs, again, stages, steps = [], [], [], None
        for r in range(reps):
            root, st = tmp / f"demo{int(quick)}_{r}", tmp / f"demo{int(quick)}_{r}.duckdb"
            cmd = [
                str(ROOT / ".venv" / "bin" / "flagcore"),
                "demo",
                "--root",
                str(root),
                "--store",
                str(st),
                "--quiet",
                "--json",
            ] + (["--quick"] if quick else [])
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, text=True, check=True)
            again.append(time.perf_counter() - t)
            built = json.loads(p.stdout)
            steps = built["steps"]
            stages.append(built.get("timings", {}))
            shutil.rmtree(root, ignore_errors=True)
            st.unlink(missing_ok=True)
        out[name] = {
            "first": spread(runs),
            "second_call": spread(again),
            "steps": steps,
            "stages": {k: spread([s[k] for s in stages if k in s]) for k in stages[-1]},
            "target_s": DEMO_TARGETS[name],
        }
    res["demo"] = out


def section_precision(res: dict) -> None:
    """fp32 against int8 inference of the `full` preset and the batched short windows
    (``benchmarks/precision.py``, in its own process)."""
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "precision.py"), "--profile"],
        capture_output=True,
        text=True,
        check=True,
    )
    res["precision"] = json.loads(p.stdout)


def section_evaluate(res: dict, tmp: Path, bars: int) -> None:
    """``flagcore evaluate`` of an imported `full` checkpoint with ``--train``, by stage, fp32 against
    int8 against int8 with the payoff sample (``benchmarks/evaluate_profile.py``, in its own process),
    at ``bars`` evaluated bars; below 9,073 each stage is also extrapolated to 9,073, and the target's
    own case (int8 with the payoff sample) is measured at 9,073 bars as well (``full_size``): the
    extrapolation scales a stage's fixed costs with the bars and misses how the rate moves with the
    file (it gave 302 s where 9,073 bars took 329 s, 2026-12-02)."""
    res["evaluate"] = _evaluate_profile(tmp / "evaluate_profile.json", bars)
    if bars < FULL_BARS:
        res["evaluate"]["full_size"] = _evaluate_profile(tmp / "evaluate_full.json", FULL_BARS, "int8_sample")
    if "avx512f" in res["machine"]["isa"]:  # an AVX2 CPU's own figures above are the class's already
        res["evaluate"]["avx2"] = _evaluate_profile(
            tmp / "evaluate_avx2.json", AVX2_BARS, "int8_sample", AVX2_ENV
        )


def _evaluate_profile(out: Path, bars: int, variants: str | None = None, env: dict | None = None) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "evaluate_profile.py"),
        "--bars",
        str(bars),
        "--out",
        str(out),
    ]
    subprocess.run(
        [*cmd, *(["--variants", variants] if variants else [])],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.read_text())


def section_pages(res: dict, store_path: Path, run_id: int) -> None:
    """Every page cold (its first visit after a server start) and on later visits, slider steps from
    the key press to the changed numbers, and the floor (a bare Streamlit app) timed the same way, in
    headless chromium against the dashboard's server."""
    from browser_timing import floor_pages, floor_slider, pages_cold_and_warm, slider_steps, summary

    starts: list[float] = []  # each fresh server's start, warm-up included, to its health check's "ok"
    res["pages"] = {
        "pages": pages_cold_and_warm(store_path, run_id, server_starts=starts),
        "slider": slider_steps(store_path, run_id),
        "server_start": summary(starts),
        "floor": {"pages": floor_pages(), "slider": floor_slider()},
    }


def section_meeting(res: dict, store_path: Path, run_id: int) -> None:
    """A review meeting: 20 browser sessions on one server for two minutes, then the same load from 20
    websocket sessions (the server alone, no browser drawing on its cores)."""
    from meeting import review_meeting
    from meeting_load import meeting_load

    res["meeting"] = review_meeting(store_path, run_id, sessions=20, seconds=120)
    res["meeting"]["server_only"] = meeting_load(store_path, run_id, sessions=20, seconds=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip", default="", help=f"comma-separated sections to skip: {', '.join(SECTIONS)}")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the skipped sections' figures from the last BENCHMARKS.json (their date is noted)",
    )
    ap.add_argument("--demo-builds", type=int, default=3, help="fresh builds per demo (default 3)")
    ap.add_argument("--demo", default="quick,full", help="which demo builds to time: quick, full or both")
    ap.add_argument(
        "--evaluate-bars",
        type=int,
        default=1000,
        help="evaluated bars of the evaluate profile (9,073 takes about 40 min; fewer are extrapolated)",
    )
    args = ap.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    res = {"machine": machine()}
    last = Path(args.out).with_suffix(".json")
    if args.keep and last.exists():
        prev = json.loads(last.read_text())
        kept = [k for k in SECTIONS if k in skip and k in prev]
        res.update({k: prev[k] for k in kept})
        if kept:
            res.setdefault("notes", []).append(
                f"sections {', '.join(kept)} are from the run of {prev['machine']['date']} on a 2-core "
                f"{prev['machine'].get('cpu', 'machine')}; the others from this run on a "
                f"{res['machine'].get('cpu', 'machine')}"
            )
    tmp = Path(tempfile.mkdtemp(prefix="flagcore-bench-"))
    try:

        def log(msg):
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

        def guarded(name, fn, *a):
            if name in skip:
                return
            log(name)
            try:
                fn(*a)
            except Exception as e:  # noqa: BLE001 - one failed section must not lose the others
                res.setdefault("notes", []).append(f"section {name} failed: {type(e).__name__}: {e}")
                log(f"{name} FAILED: {e}")

        guarded("inference", section_inference, res)
        guarded("precision", section_precision, res)
        guarded("evaluate", section_evaluate, res, tmp, args.evaluate_bars)
        guarded("peers", section_peers, res)
        if {"slider", "validation", "store", "pages", "retrain", "meeting"} - skip:
            log("demo stores (built under data/demo if missing)")
            full_store, full_run, full_root = demo_store(tmp, quick=False)
            quick_store, quick_run, quick_root = demo_store(tmp, quick=True)
            guarded("slider", section_slider, res, full_store, full_run)
            guarded("validation", section_validation, res, full_store, full_run)
            guarded("store", section_store, res, full_root, full_store, full_run, tmp)
            guarded("retrain", section_retrain, res, quick_root)
            guarded("pages", section_pages, res, full_store.path, full_run)
            guarded("meeting", section_meeting, res, full_store.path, full_run)
        guarded("demo", section_demo, res, tmp, args.demo_builds, tuple(args.demo.split(",")))
        guarded("tests", section_tests, res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).write_text(write_markdown(res) + "\n")
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
