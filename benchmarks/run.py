"""flagcore's benchmark suite: runs every figure and rewrites BENCHMARKS.md.

    .venv/bin/python benchmarks/run.py            # everything (about 25 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --skip demo,pages   # leave out the slow sections

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
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "BENCHMARKS.md"
# targets missed once, profiled and fixed: kept in BENCHMARKS.md as before/after
HISTORY = [
    "2026-11-26, solution comparison page, 4.1 s -> 2.4 s in the browser: the equity-curve figure was built "
    "from timezone-aware timestamps (0.76 s to build and 0.49 s to serialise on the server, measured with "
    "time.perf_counter around plots.equity_curves and Figure.to_json; with datetime64 values 0.22 s and 0.03 s) "
    "and drawn as WebGL traces, which headless chromium without a GPU renders in software; now SVG traces of at "
    "most 1,000 points each. The logit-analysis page went from 2.7 s to 1.9 s with the same change.",
    "2026-11-26, local worker pools (retraining CPCV, batch inference, demo training): every spawned worker "
    "imported torch and peft again, 5.0 s per pool of 2 on this machine (python -X importtime: peft 2.8 s, "
    "torch about 1.9 s); a 2-worker batch inference of the quick demo took 20.3 s against 9.0 s in process. "
    "Workers are now forked from a forkserver that imports them once: an empty pool of 2 takes 3.9 s the first "
    "time and 0.04 s after that.",
]
SECTIONS = ("inference", "slider", "validation", "retrain", "store", "peers", "demo", "pages")


def timed(fn, reps: int, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    a = np.asarray(ts)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "p95": float(np.percentile(a, 95)), "reps": reps}


def fmt_s(t: dict, unit: str = "ms") -> str:
    k = 1e3 if unit == "ms" else 1.0
    return f"{t['median'] * k:.1f} {unit} ({t['min'] * k:.1f} to {t['max'] * k:.1f}, n={t['reps']})"


# ----------------------------------------------------------------------------- machine


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cfg = torch.__config__.show()
    import re

    found = re.search(r"BLAS_INFO=([^,\s]+)", cfg)
    blas = found.group(1) if found else "unknown"
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "blas": blas, "mkldnn": torch.backends.mkldnn.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


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
    return {**t, "preset": name, "batch": batch, "bars_per_s": bps, "gflops": flops * bps / 1e9,
            "gflop_per_window": flops / 1e9, "device": str(device), "dtype": str(dtype).replace("torch.", "")}


def section_inference(res: dict) -> None:
    import torch

    full_peak = gemm_peak(64 * 64, 768, 3072)
    demo_peak = gemm_peak(256 * 32, 64, 256)
    res["inference"] = {
        "peak_full_shape": full_peak, "peak_demo_shape": demo_peak,
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
    res["slider"] = {"threshold": t, "tau": t2, "bars": len(inp.test["close"])}


def section_validation(res: dict, store, run_id: int) -> None:
    from flagcore.analysis.hifa import hifa_verdict, permutation_test, posthoc_cpcv
    from flagcore.dashboard.live import load_live_inputs
    from flagcore.pipeline.evaluate import _sweep, default_thresholds

    inp = load_live_inputs(store, run_id)
    grid = default_thresholds()
    _, R = _sweep(inp.test, inp.train, inp.cfg, "opt3_threshold", "hold_threshold", grid, {"tau": 1.0})
    r = np.diff(inp.test.close) / inp.test.close[:-1]
    rng = np.random.default_rng(1)
    pos = np.sign(rng.standard_normal(r.size))

    def all_three():
        cp = posthoc_cpcv(R, grid, purge=24, embargo=24)
        perm = permutation_test(pos, r, 10_000, block=24, seed=0)
        hifa_verdict(cpcv_path_sharpes=cp.path_sharpes, returns=R[-1], n_trials=48, trial_sharpes=R.mean(1),
                     permutation_p=perm.p_value, periods_per_year=8766.0)

    res["validation"] = {"all_three": timed(all_three, 7), "bars": r.size + 1, "grid": len(grid),
                         "cpcv": timed(lambda: posthoc_cpcv(R, grid, purge=24, embargo=24), 7),
                         "permutation_10k": timed(lambda: permutation_test(pos, r, 10_000, 24, 0), 7)}


def _runs(fn, reps: int) -> tuple[dict, object]:
    """Median and spread of ``reps`` calls, and the last call's result."""
    ts, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    a = np.asarray(ts)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()), "reps": reps}, out


def section_retrain(res: dict, quick_root: Path) -> None:
    """Retraining CPCV and batch inference as tasks: in process, a local pool, a local Ray instance."""
    import ray
    import torch

    import flagcore
    from flagcore.data.dataset import load_dataset
    from flagcore.models.flag_trader import preset
    from flagcore.pipeline.evaluate import INFERENCE_SETTINGS, _cgdt_id, flag_trader_settings, prefetch_inference
    from flagcore.store.store import Store
    from flagcore.training.tasks import Placement, run_tasks
    from flagcore.training.train import TrainConfig, retrain_cpcv

    ds = load_dataset(quick_root / "train.parquet")
    cfg = TrainConfig(loss="weighted", epochs=2, windows_per_epoch=2000)
    reps = 3
    out = {"bars": ds.n_bars, "splits": 15, "ray": ray.__version__}
    # Ray's own start and stop, with nothing to run (a builtin as the task: nothing to import)
    out["ray_start_stop"], _ = _runs(lambda: run_tasks(max, [0, 1], shared=0, placement=Placement(ray_address="local")),
                                     reps)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"py_modules": [str(Path(flagcore.__file__).parent)]})
    try:
        threads = torch.get_num_threads()
        logits, times = {}, {}
        for name, placement, n_threads in [("in_process_1_thread", Placement(workers=1), 1),
                                           ("in_process", Placement(workers=1), threads),
                                           ("local_pool_2", Placement(workers=2), threads),
                                           ("ray_2", Placement(ray_address="auto"), threads)]:
            torch.set_num_threads(n_threads)
            try:
                times[name], rc = _runs(lambda p=placement: retrain_cpcv(ds, preset("demo"), cfg, placement=p), reps)
            finally:
                torch.set_num_threads(threads)
            logits[name] = rc.path_logits
        out["retrain"] = times
        # one torch thread per split in the pool, on Ray and in the 1-thread run: the same arithmetic
        out["retrain_identical"] = bool(np.array_equal(logits["local_pool_2"], logits["ray_2"])
                                        and np.array_equal(logits["local_pool_2"], logits["in_process_1_thread"]))
        out["retrain_max_diff_2_threads"] = float(np.abs(logits["in_process"] - logits["local_pool_2"]).max())

        # batch inference: the quick demo's checkpoints on its test and training sets, nothing cached
        from flagcore.models.checkpoint import load_checkpoint
        from flagcore.pipeline.evaluate import recent

        test = load_dataset(quick_root / "test.parquet")
        train = recent(ds, 8766, history=63)
        jobs = []
        for m in ("ce", "weighted", "focal"):
            info = load_checkpoint(quick_root / "models" / m).checkpoint_info
            jobs.append(("flag-trader", str(info.path), info.sha256, flag_trader_settings(info)))
        cg = quick_root / "models" / "cgdt" / "cgdt.safetensors"
        jobs.append(("cgdt", str(cg), _cgdt_id(cg), INFERENCE_SETTINGS))
        tmp = Path(tempfile.mkdtemp(prefix="flagcore-scale-"))
        counter = iter(range(10_000))

        def infer(placement):
            store = Store(tmp / f"s{next(counter)}.duckdb")
            stats = {"computed": 0, "cached": 0}
            prefetch_inference(store, jobs, [test, train], stats, placement)
            return [store.cached_logits(j[2], d.content_hash, f"{j[3]};bars={d.attrs.get('slice', 'all')}")
                    for j in jobs for d in (test, train)]

        inf, got = {}, {}
        inf["in_process"], got["in_process"] = _runs(lambda: _infer_in_process(jobs, test, train), reps)
        for name, placement in [("local_pool_2", Placement(workers=2)), ("ray_2", Placement(ray_address="auto"))]:
            inf[name], got[name] = _runs(lambda p=placement: infer(p), reps)
        shutil.rmtree(tmp, ignore_errors=True)
        out["inference"] = inf
        out["inference_tasks"] = len(jobs) * 2
        out["inference_max_diff"] = float(max(
            np.abs(np.asarray(a[["logit_sell", "logit_hold", "logit_buy"]]) - np.asarray(b)).max()
            for name in ("local_pool_2", "ray_2")
            for a, b in zip(got[name], got["in_process"])))
    finally:
        ray.shutdown()
    res["retrain"] = out


def _infer_in_process(jobs, test, train) -> list:
    from flagcore.pipeline.evaluate import _inference_task

    return [_inference_task(None, (kind, path, d, None, mid))[0] for kind, path, mid, _ in jobs for d in (test, train)]


def section_store(res: dict, full_root: Path, store, run_id: int, tmp: Path) -> None:
    from flagcore.pipeline import evaluate as pipeline
    from flagcore.store.store import Store

    captured = {}
    real = pipeline.write_run
    pipeline.write_run = lambda s, run, **kw: captured.setdefault("run", run) and 0
    try:
        pipeline.evaluate(full_root / "models" / "ce", full_root / "test.parquet", store=store,
                          train_data=full_root / "train.parquet", partner=full_root / "models" / "cgdt" /
                          "cgdt.safetensors", retrained=[str(full_root / "models" / m) for m in
                                                         ("weighted", "focal", "logit_adjusted", "oversample",
                                                          "multitask")])
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
    q["live inputs (slider)"] = timed(lambda: __import__("flagcore.dashboard.live").live.load_live_inputs(s, run_id), 5)
    a = np.asarray(ts)
    res["store"] = {"write": {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
                              "reps": len(a)}, "options": len(run.options), "prediction_rows": rows,
                    "queries": q}


# ----------------------------------------------------------------------------- peers


def section_peers(res: dict) -> None:
    from skfolio.measures import deflated_sharpe_ratio as sk_dsr
    from skfolio.measures import probabilistic_sharpe_ratio as sk_psr
    from skfolio.model_selection import CombinatorialPurgedCV

    from flagcore.analysis.backtest import metrics
    from flagcore.analysis.hifa import (
        block_permutations,
        cpcv_splits,
        deflated_sharpe_ratio,
        permutation_test,
        probabilistic_sharpe_ratio,
        sharpe_moments,
    )

    out = {}
    n, N, k, h = 9072, 6, 2, 24
    cv = CombinatorialPurgedCV(n_folds=N, n_test_folds=k, purged_size=h, embargo_size=h)
    X = np.zeros((n, 1))
    ours = cpcv_splits(n, N, k, h, h)
    sk = list(cv.split(X))
    by_test = {tuple(int(g) for g in tg): sk[i][0] for i, tg in enumerate(cv.test_set_index)}
    same = all(np.array_equal(s.train, by_test[tuple(s.test_groups)]) for s in ours)
    out["cpcv"] = {"ours": timed(lambda: cpcv_splits(n, N, k, h, h), 10),
                   "skfolio": timed(lambda: list(cv.split(X)), 10), "identical": same}

    rng = np.random.default_rng(0)
    r = rng.standard_t(5, n) * 0.01 + 0.0005
    trials = rng.normal(0.01, 0.02, 48)
    sr, nobs, sk_, ku = sharpe_moments(r)

    def ours_psr():
        s, m, a, b = sharpe_moments(r)
        return probabilistic_sharpe_ratio(s, m, a, b), deflated_sharpe_ratio(s, m, a, b, 48, trials.var(ddof=1))

    p1, d1 = ours_psr()
    p2, d2 = sk_psr(r), sk_dsr(r, trials)
    out["psr_dsr"] = {"ours": timed(ours_psr, 20), "skfolio": timed(lambda: (sk_psr(r), sk_dsr(r, trials)), 20),
                      "max_abs_diff": float(max(abs(p1 - p2), abs(d1 - d2)))}

    pos = np.sign(rng.standard_normal(n))
    block, m = 24, 1000
    fast = permutation_test(pos, r, m, block, seed=3)

    def naive():
        perms = block_permutations(m, n // block, 3)
        rb = r[: (n // block) * block].reshape(-1, block)
        null = []
        for p in perms:
            rr = np.concatenate([rb[p].ravel(), r[(n // block) * block:]])
            x = pos * rr
            null.append(x.mean() / x.std(ddof=1))
        return np.asarray(null)

    slow_null = naive()
    out["permutation"] = {"ours": timed(lambda: permutation_test(pos, r, m, block, seed=3), 5),
                          "naive_loop": timed(naive, 3), "max_abs_diff": float(np.abs(fast.null_sharpes - slow_null).max()),
                          "permutations": m}

    import empyrical as ep

    ppy = 8766.0
    net = r * 0.3
    mine = metrics(net, np.append(pos, 0.0), ppy)
    theirs = {"sharpe": ep.sharpe_ratio(net, annualization=ppy), "sortino": ep.sortino_ratio(net, annualization=ppy),
              "max_drawdown": ep.max_drawdown(net), "annual_volatility": ep.annual_volatility(net, annualization=ppy)}
    out["backtest"] = {"ours": timed(lambda: metrics(net, np.append(pos, 0.0), ppy), 20),
                       "empyrical": timed(lambda: (ep.sharpe_ratio(net, annualization=ppy),
                                                   ep.sortino_ratio(net, annualization=ppy), ep.max_drawdown(net),
                                                   ep.annual_volatility(net, annualization=ppy)), 20),
                       "diffs": {k: float(abs(mine[k] - v)) for k, v in theirs.items()},
                       "empyrical_version": ep.__version__}
    res["peers"] = out


# ----------------------------------------------------------------------------- demo and pages


def section_demo(res: dict, tmp: Path) -> None:
    out = {}
    for quick, reps in ((True, 3), (False, 1)):  # the full build takes about 3 minutes: once
        runs, again, steps = [], [], None
        for r in range(reps):
            root, st = tmp / f"demo{int(quick)}_{r}", tmp / f"demo{int(quick)}_{r}.duckdb"
            cmd = [str(ROOT / ".venv" / "bin" / "flagcore"), "demo", "--root", str(root), "--store", str(st),
                   "--quiet", "--json"] + (["--quick"] if quick else [])
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, text=True, check=True)
            again.append(time.perf_counter() - t)
            steps = json.loads(p.stdout)["steps"]
            shutil.rmtree(root, ignore_errors=True)
        a, b = np.asarray(runs), np.asarray(again)
        out["quick" if quick else "full"] = {
            "first": {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()), "reps": reps},
            "second_call": {"median": float(np.median(b)), "min": float(b.min()), "max": float(b.max()),
                            "reps": reps}, "steps": steps}
    res["demo"] = out


def section_pages(res: dict, store_path: Path, run_id: int) -> None:
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FLAGCORE_STORE": str(store_path)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                             "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    pages = {"status": "", "model health": "model_health", "logit analysis": "logits",
             "solution comparison": "solutions", "HIFA criteria": "hifa", "reviews": "reviews"}
    out = {}
    try:
        import urllib.request
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                  args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            pg = b.new_page(viewport={"width": 1400, "height": 1000})

            def visit(path):
                pg.goto(f"{url}/{path}?run={run_id}")
                pg.wait_for_timeout(50)
                pg.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)
                pg.wait_for_function("() => document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0",
                                     timeout=120_000)
                if path in ("model_health", "logits", "solutions", "hifa"):
                    pg.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=120_000)

            for path in pages.values():  # warm the server's caches
                visit(path)
            for name, path in pages.items():
                out[name] = timed(lambda path=path: visit(path), 3, warmup=0)
            b.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    res["pages"] = out


# ----------------------------------------------------------------------------- report


def write_markdown(res: dict) -> str:
    m = res["machine"]
    L = ["# Benchmarks", "",
         f"Generated by `benchmarks/run.py` on {m['date']}. Machine: {m['cores']} cores, {m['cpu']}, "
         f"Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads, BLAS {m['blas']}, "
         f"oneDNN {m['mkldnn']}), GPU: {m['gpu']}. Figures are medians with min to max over n runs; "
         "these machines are noisy, so compare ratios measured in one run.", ""]
    if "inference" in res:
        i = res["inference"]
        fp, dp = i["peak_full_shape"], i["peak_demo_shape"]
        L += ["## Inference (CPU, fp32)", "",
              "| preset | batch | bars/s | GFLOP/window | achieved GFLOP/s | GEMM peak GFLOP/s (same run) | share of peak | time per run |",
              "|---|---|---|---|---|---|---|---|"]
        for key, peak in (("full_b64", fp), ("demo_b256", dp), ("demo_b1024", dp)):
            r = i[key]
            L.append(f"| {r['preset']} | {r['batch']} | {r['bars_per_s']:,.1f} | {r['gflop_per_window']:.3f} | "
                     f"{r['gflops']:.1f} | {peak['gflops']:.1f} {peak['shape']} | {r['gflops'] / peak['gflops']:.0%} | "
                     f"{fmt_s(r, 's')} |")
        if "gpu_full_b256" in i:
            g, gp = i["gpu_full_b256"], i["gpu_peak"]
            L.append(f"| full (GPU, bf16) | {g['batch']} | {g['bars_per_s']:,.1f} | {g['gflop_per_window']:.3f} | "
                     f"{g['gflops']:.1f} | {gp['gflops']:.1f} | {g['gflops'] / gp['gflops']:.0%} | {fmt_s(g, 's')} |")
        L += ["", "Target: `full` at batch >= 64 reaches at least 60% of the GEMM peak measured with a similar "
              "shape (the feed-forward matmul of a batch of 64 windows). LoRA is merged into the base weights "
              "and only the last position runs the last block's query, output projection and feed-forward, so "
              "the work is a few large matmuls. The `demo` preset is compared with a GEMM of its own small shape "
              "(d_model 64): its matmuls cannot use the cores as well as the large shape does, which is why "
              "its GFLOP/s are a third of `full`'s; it is fast in absolute terms.", ""]
    if "slider" in res:
        s = res["slider"]
        L += ["## Slider recompute", "",
              f"From stored logits, {s['bars']:,} bars, with Kelly sizing, the backtest, a 1,000-permutation "
              "p-value and the three HIFA criteria (target p50 < 50 ms, p95 < 200 ms):", "",
              "| slider | p50 | p95 | min to max |", "|---|---|---|---|"]
        for k in ("threshold", "tau"):
            t = s[k]
            L.append(f"| {k} | {t['median'] * 1e3:.1f} ms | {t['p95'] * 1e3:.1f} ms | "
                     f"{t['min'] * 1e3:.1f} to {t['max'] * 1e3:.1f} ms (n={t['reps']}) |")
        L.append("")
    if "validation" in res:
        v = res["validation"]
        L += ["## Validation", "",
              f"{v['bars']:,} bars; post-hoc CPCV (N=6, k=2, a {v['grid']}-value threshold grid refitted per "
              "split), PSR/DSR and a 10,000-permutation test (target: all three under 2 s):", "",
              f"- all three together: {fmt_s(v['all_three'])}",
              f"- post-hoc CPCV alone: {fmt_s(v['cpcv'])}",
              f"- permutation test alone (10,000): {fmt_s(v['permutation_10k'])}", ""]
    if "retrain" in res:
        r = res["retrain"]
        t, inf = r["retrain"], r["inference"]
        base = t["in_process"]["median"]
        L += ["## Scale-out: retraining CPCV and batch inference as tasks", "",
              f"Retraining CPCV: {r['splits']} splits on the quick demo's training set ({r['bars']:,} bars), "
              "class-weighted loss, 2 epochs of 2,000 windows per split. Ray "
              f"{r['ray']} runs a local instance started once before the timings (`--ray-address auto` joins "
              "it); starting and stopping one for a call (`--ray-address local`) costs "
              f"{fmt_s(r['ray_start_stop'], 's')} on top.", "",
              "| where the splits run | time | speed-up vs in process |", "|---|---|---|"]
        for k, label in [("in_process_1_thread", "in process, 1 torch thread"),
                         ("in_process", "in process, 2 torch threads (`--workers 1`)"),
                         ("local_pool_2", "2 local worker processes, 1 thread each (`--workers 2`)"),
                         ("ray_2", "Ray, 2 tasks of 1 CPU at a time (`--ray-address`)")]:
            L.append(f"| {label} | {fmt_s(t[k], 's')} | {base / t[k]['median']:.2f}x |")
        L += ["", f"Path logits identical (bit for bit) in the pool, on Ray and in the 1-thread run: "
              f"{r['retrain_identical']}; the 2-thread run differs by at most {r['retrain_max_diff_2_threads']:.1e} "
              "(another summation order inside torch). Two tasks at a time are "
              f"{t['in_process_1_thread']['median'] / t['local_pool_2']['median']:.2f}x faster than one at a time "
              "on one core: the splits are independent, so on a cluster the time falls with the CPUs given, down "
              "to the longest split. On this 2-core machine one process already uses both cores through torch's "
              "threads, so the pool and Ray gain little over it; Ray's workers were already running (started "
              "before the timings), the pool's are forked afresh in each call.", "",
              f"Batch inference ({r['inference_tasks']} tasks: the quick demo's 3 FLAG-TRADER checkpoints and its "
              "CGDT on the test and training periods, nothing cached):", "",
              "| where the inference runs | time |", "|---|---|"]
        base_inf = inf["in_process"]["median"]
        for k, label in [("in_process", "in process, 2 torch threads"), ("local_pool_2", "2 local worker processes"),
                         ("ray_2", "Ray, 2 tasks at a time")]:
            L.append(f"| {label} | {fmt_s(inf[k], 's')}, {base_inf / inf[k]['median']:.2f}x |")
        L += ["", f"Largest logit difference from the in-process run: {r['inference_max_diff']:.1e}. Each task "
              "loads its checkpoint and sends its logits back, and the two workers run one torch thread each "
              "where the in-process run has two: on 2 cores and with these small models that costs more than "
              "it wins. The tasks are for a cluster, and for many checkpoints of the `full` preset, whose "
              "inference is compute-bound (2.6 s per 64 bars here).", ""]
    if "store" in res:
        s = res["store"]
        w = s["write"]
        L += ["## Store", "",
              f"Writing one full-demo run ({s['options']} options, {s['prediction_rows']:,} per-bar prediction rows, "
              f"plus sweeps, CPCV paths, 10,000-value permutation nulls): {w['median'] * 1e3:.0f} ms "
              f"({w['min'] * 1e3:.0f} to {w['max'] * 1e3:.0f}, n={w['reps']}); target under 1 s.", "",
              "Dashboard queries (each opens a read-only connection; target under 100 ms each):", "",
              "| query | time |", "|---|---|"]
        L += [f"| {k} | {fmt_s(t)} |" for k, t in s["queries"].items()]
        L.append("")
    if "peers" in res:
        p = res["peers"]
        c, d, pm, b = p["cpcv"], p["psr_dsr"], p["permutation"], p["backtest"]
        L += ["## Peers (same inputs, same run)", "",
              "| what | flagcore | peer | ratio (peer / flagcore) | same results |", "|---|---|---|---|---|",
              f"| CPCV splits, 9,072 obs, N=6, k=2, purge = embargo = 24 | {fmt_s(c['ours'])} | skfolio "
              f"CombinatorialPurgedCV {fmt_s(c['skfolio'])} | {c['skfolio']['median'] / c['ours']['median']:.1f}x | "
              f"{'identical train sets' if c['identical'] else 'DIFFERENT'} |",
              f"| PSR and DSR | {fmt_s(d['ours'])} | skfolio.measures {fmt_s(d['skfolio'])} | "
              f"{d['skfolio']['median'] / d['ours']['median']:.1f}x | max difference {d['max_abs_diff']:.1e} |",
              f"| permutation test, {pm['permutations']:,} perms of 24-bar blocks | {fmt_s(pm['ours'])} | "
              f"naive Python loop {fmt_s(pm['naive_loop'])} | {pm['naive_loop']['median'] / pm['ours']['median']:.0f}x | "
              f"max difference of null Sharpes {pm['max_abs_diff']:.1e} |",
              f"| Sharpe, Sortino, max drawdown, volatility | {fmt_s(b['ours'])} | empyrical-reloaded "
              f"{b['empyrical_version']} {fmt_s(b['empyrical'])} | {b['empyrical']['median'] / b['ours']['median']:.1f}x | "
              "max difference " + ", ".join(f"{k} {v:.1e}" for k, v in b["diffs"].items()) + " |", "",
              "flagcore's metrics() computes about fifteen figures (trades, exposure, turnover, Calmar...) in the "
              "time shown; empyrical computes the four compared.", ""]
    if "demo" in res:
        d = res["demo"]
        L += ["## Demo build", "", "| demo | first build | second call (reuses everything) | target |", "|---|---|---|---|",
              f"| `flagcore demo --quick` | {fmt_s(d['quick']['first'], 's')} | {fmt_s(d['quick']['second_call'], 's')} "
              "| under 60 s |",
              f"| `flagcore demo` | {fmt_s(d['full']['first'], 's')} | {fmt_s(d['full']['second_call'], 's')} "
              "| under 5 min |", "",
              "Each build starts from an empty folder and store, as a fresh clone does, in a new process (the "
              "command as a user runs it); the quick build's 4 models train in 2 worker processes.", ""]
    if "pages" in res:
        L += ["## Pages in the browser", "",
              "Chromium (headless) against a warm `streamlit run` on the full demo; from navigation to the page "
              "settled with its charts drawn (target under 3 s each):", "", "| page | time |", "|---|---|"]
        L += [f"| {k} | {fmt_s(t, 's')} |" for k, t in res["pages"].items()]
        L.append("")
    for path in sorted((ROOT / "benchmarks" / "results").glob("device-*.json")):
        L += device_markdown(json.loads(path.read_text()), path.relative_to(ROOT))
    L += ["## Fixed after profiling", ""] + [f"- {h}" for h in HISTORY] + [""]
    if res.get("notes"):
        L += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(L)


def device_markdown(d: dict, path: Path) -> list[str]:
    """The figures of ``benchmarks/device.py`` from a lent GPU machine, kept in ``path``."""
    m = d["machine"]
    L = [f"## On a lent GPU machine: {m['gpu']}, {m['cores']} vCPUs", "",
         f"Measured by `benchmarks/device.py` on {m['date']} (results in `{path}`; that machine is lent to some "
         f"sessions only, so these figures are not rerun by `run.py`). Python {m['python']}, torch {m['torch']}.", ""]
    g = d.get("gpu")
    if g:
        pk, sq = g["peak_ffn_b256_bf16"], g["peak_8192_bf16"]
        L += ["### Inference on the GPU (bf16)", "",
              f"bf16 GEMM peak measured in the same run: {pk['gflops'] / 1e3:,.0f} TFLOP/s for the feed-forward shape "
              f"{pk['shape']}, {sq['gflops'] / 1e3:,.0f} TFLOP/s for {sq['shape']}.", "",
              "| preset | dtype | batch | bars/s | achieved TFLOP/s | share of the feed-forward-shape peak | time per run |",
              "|---|---|---|---|---|---|---|"]
        for k in ("full_b64_bf16", "full_b256_bf16", "full_b1024_bf16", "full_b4096_bf16", "full_b256_fp32",
                  "demo_b4096_bf16"):
            r = g[k]
            L.append(f"| {r['preset']} | {r['dtype']} | {r['batch']} | {r['bars_per_s']:,.0f} | {r['gflops'] / 1e3:,.1f} | "
                     f"{r['gflops'] / pk['gflops']:.0%} | {fmt_s(r)} |")
        a = g["predict_bf16_vs_fp32"]
        b64 = g["full_b64_bf16"]
        L += ["", f"Batch 256 and up reach {g['full_b256_bf16']['gflops'] / pk['gflops']:.0%} to "
              f"{g['full_b4096_bf16']['gflops'] / pk['gflops']:.0%} of the peak. Batch 64 reaches "
              f"{b64['gflops'] / pk['gflops']:.0%}: a forward pass of 64 windows takes "
              f"{b64['median'] / 20 * 1e3:.1f} ms, and its matmuls have 4,096 rows (64 windows x 64 positions), too "
              "few to keep the GPU's 132 multiprocessors busy, so the fixed cost of launching each of the pass's many "
              "small kernels weighs more (not profiled: the device time ran out; CUDA graphs would be the next step). "
              "`flagcore predict` uses batch 256 by default. The demo preset (d_model 64) is launch-bound on a GPU.",
              "",
              f"`flagcore.predict` end to end, the `full` preset on the seed's {g['predict_full_bars']:,} bars (batch "
              f"512): bf16 {fmt_s(g['predict_full_bf16'], 's')}, fp32 {fmt_s(g['predict_full_fp32'], 's')}; the "
              "first bf16 call includes CUDA's start-up. Besides the batches, each call merges LoRA into a copy of "
              "the 88M-parameter model, moves it to the GPU and predicts the first 63 bars one short window at a "
              f"time. bf16 against fp32 on the same model and bars: {a['actions_equal']:.1%} of actions equal, "
              f"logits within {a['max_abs_logit_diff']:.3f}, confidence within {a['max_abs_confidence_diff']:.4f}.",
              ""]
    for key, title in (("scaleout_spawn", "spawned workers (before)"), ("scaleout", "workers forked from a "
                                                                             "forkserver (after)")):
        s = d.get(key)
        if not s:
            continue
        t = s["retrain"]
        base = t["workers_1"]["median"]
        L += [f"### Retraining CPCV on {s['cores']} vCPUs, {title}", "",
              f"{s['splits']} splits of the quick demo's training set ({s['bars']:,} bars), class-weighted loss, "
              f"2 epochs of 2,000 windows per split ({s['machine_date']}):", "",
              "| workers (torch threads each) | time | speed-up vs in process |", "|---|---|---|"]
        for k, v in t.items():
            w = int(k.split("_")[1])
            L.append(f"| {w} ({max(1, s['cores'] // w)}) | {fmt_s(v, 's')} | {base / v['median']:.2f}x |")
        diffs = s["max_logit_diff_vs_in_process"]
        L += ["", f"Path logits against the in-process run: at most {max(diffs.values()):.1e} apart (torch's "
              "summation order changes with the thread count).", ""]
    if d.get("scaleout"):
        L += ["On this machine more workers did not make retraining CPCV faster, with either start method: the "
              "in-process run (16 threads, about 1.2 s per split) was as fast as any pool, and 15 one-thread workers "
              "took longer. The forkserver removed the per-worker import of torch and peft (on the 2-core machine: 5 s "
              "per pool before, 0.04 s per pool after the first), and the times hardly moved, so start-up is not "
              "the cause. On the 2-core "
              "machine two one-thread workers are 1.5x faster than one (table above), so the splits do run in "
              "parallel; that 16 vCPUs gave no more suggests the virtual machine's CPUs do not deliver 16 cores of "
              "throughput to small-matmul work (a CPU quota or shared physical cores). Not profiled further: the "
              "session's device time ran out. The in-process run is the default (`--workers 1` for evaluate).", ""]
    return L


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip", default="", help=f"comma-separated sections to skip: {', '.join(SECTIONS)}")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--keep", action="store_true",
                    help="keep the skipped sections' figures from the last BENCHMARKS.json (their date is noted)")
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
                f"sections {', '.join(kept)} are from the run of {prev['machine']['date']} on the same kind of "
                f"machine; the others from this run")
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
        guarded("peers", section_peers, res)
        if ({"slider", "validation", "store", "pages", "retrain"} - skip):
            log("demo stores (built under data/demo if missing)")
            full_store, full_run, full_root = demo_store(tmp, quick=False)
            quick_store, quick_run, quick_root = demo_store(tmp, quick=True)
            guarded("slider", section_slider, res, full_store, full_run)
            guarded("validation", section_validation, res, full_store, full_run)
            guarded("store", section_store, res, full_root, full_store, full_run, tmp)
            guarded("retrain", section_retrain, res, quick_root)
            guarded("pages", section_pages, res, full_store.path, full_run)
        guarded("demo", section_demo, res, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).write_text(write_markdown(res) + "\n")
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
