"""fp32 against int8 inference of the `full` preset (88M, random weights) on a CPU, and the short
windows at the start of a file batched against one by one. Prints one JSON dict.

    .venv/bin/python benchmarks/precision.py [--bars 256] [--int8-batches 8,16,32] [--threads 2] [--profile]

Each precision runs ``predict`` on 63 short windows plus ``--bars`` full windows (the 64-bar
window of the preset); the time of the full windows alone is split off with the progress
callback. About 90 s on a quiet 2-core machine; figures measured while other work runs are not
comparable (say so beside them). ``--profile`` adds the self time of one int8 forward at the int8
batch by operator (torch.profiler), grouped: the int8 products, the embedding and head, attention,
GELU, the norms and residual adds, the smoothing divisions.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from flagcore.models.flag_trader import PRESETS, build_model, merged_copy
from flagcore.models.inference import BATCH_SIZE, predict
from flagcore.models.int8 import ENGINE, Int8FlagTrader

# torch.profiler operator names -> the profile's groups
OP_GROUPS = {
    "quantized::linear_dynamic": "int8 products (activation quantisation included)",
    "aten::addmm": "float32 products (embedding, head)",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention (softmax included)",
    "aten::gelu": "gelu",
    "aten::native_layer_norm": "layer norms",
    "aten::add": "residual adds",
    "aten::mul": "smoothing divisions",
}


def timed_predict(model, x: np.ndarray, W: int, **kw) -> tuple[dict, np.ndarray]:
    """Wall time of ``predict`` split into its short windows and its full windows."""
    marks: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    p = predict(model, x, progress=lambda d, n: marks.append((d, time.perf_counter())), **kw)
    total = time.perf_counter() - t0
    short_s = next(t for d, t in marks if d == W - 1) - t0
    full = len(x) - (W - 1)
    return {
        "total_s": round(total, 2),
        "bars_per_s": round(len(x) / total, 2),
        "short_windows_s": round(short_s, 3),
        "full_windows_per_s": round(full / (total - short_s), 2),
    }, p.logits


def one_by_one_short(model, x: np.ndarray, W: int) -> float:
    """Seconds for the W-1 short windows run one by one, as ``predict`` did before they were batched."""
    net = merged_copy(model)
    xs = torch.from_numpy(x)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for t in range(W - 1):
            net.last_logits(xs[None, : t + 1])
    return time.perf_counter() - t0


def int8_profile(model, x: np.ndarray, W: int, batch: int, repeats: int = 5) -> dict:
    """Share of one int8 forward's self time by operator group, and its milliseconds per window, on
    one torch thread (as ``predict`` runs each int8 batch: ``inference.in_order``)."""
    from torch.profiler import ProfilerActivity, profile

    net = Int8FlagTrader(merged_copy(model))
    xs = torch.from_numpy(x[: W + batch - 1]).unfold(0, W, 1).transpose(1, 2)[:batch]  # (batch, W, s)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            net.last_logits(xs)
            with profile(activities=[ProfilerActivity.CPU]) as p:
                for _ in range(repeats):
                    net.last_logits(xs)
    finally:
        torch.set_num_threads(threads)
    times: dict[str, float] = {}
    for e in p.key_averages():
        group = OP_GROUPS.get(e.key, "other")
        times[group] = times.get(group, 0.0) + e.self_cpu_time_total
    total = sum(times.values())
    return {
        "batch_size": batch,
        "ms_per_window": round(total / 1e3 / repeats / batch, 2),
        "share": {k: round(v / total, 3) for k, v in sorted(times.items(), key=lambda kv: -kv[1])},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=256, help="full windows per precision")
    ap.add_argument("--int8-batches", default="8,16,32", help="int8 batch sizes to time")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--profile", action="store_true", help="one int8 forward's time by operator group")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = PRESETS["full"]
    W = cfg.window
    model = build_model(cfg, seed=0).eval()
    x = np.random.default_rng(0).normal(size=(W - 1 + a.bars, cfg.state_dim)).astype(np.float32)

    out: dict = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "quantized_engine": ENGINE or torch.backends.quantized.engine,  # the one int8's weights use
        "preset": "full",
        "window": W,
        "short_windows": W - 1,
        "full_windows": a.bars,
    }
    fp32, ref = timed_predict(model, x, W, batch_size=BATCH_SIZE["fp32"])
    out["fp32"] = {"batch_size": BATCH_SIZE["fp32"], **fp32}
    out["short_one_by_one_s"] = round(one_by_one_short(model, x, W), 3)
    out["short_batched_speedup_fp32"] = round(out["short_one_by_one_s"] / fp32["short_windows_s"], 2)
    out["int8"] = []
    for b in (int(s) for s in a.int8_batches.split(",")):
        r, logits = timed_predict(model, x, W, precision="int8", batch_size=b)
        r["speedup_full_windows"] = round(r["full_windows_per_s"] / fp32["full_windows_per_s"], 2)
        r["actions_equal_share"] = float((logits.argmax(1) == ref.argmax(1)).mean())
        r["max_abs_logit_diff"] = float(np.abs(logits - ref).max())
        out["int8"].append({"batch_size": b, **r})
    out["fp32_max_abs_logit"] = float(np.abs(ref).max())  # the scale the differences compare with
    if a.profile:
        out["int8_profile"] = int8_profile(model, x, W, BATCH_SIZE["int8"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
