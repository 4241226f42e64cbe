"""Benchmarks for a machine with a GPU and many cores: bf16 inference and the scale-out of retraining CPCV.

    python benchmarks/device.py --train data/demo/quick/train.parquet --out DIR

writes DIR/device.json. Copy it to ``benchmarks/results/device.json`` and ``benchmarks/run.py`` puts
its figures in BENCHMARKS.md beside this machine's, with the machine they ran on. Needs torch,
peft, numpy, pandas, pyarrow and scipy; not the store, the dashboard or Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import bench_inference, gemm_peak, machine  # noqa: E402
from timing import runs  # noqa: E402


def gpu_section(res: dict, save) -> None:
    import torch

    from flagcore.models.flag_trader import build_model, preset
    from flagcore.models.inference import predict

    bf16 = torch.bfloat16
    g = res.setdefault("gpu", {})
    # the feed-forward matmul of a batch of 256 windows of the full preset, and a large square one
    g["peak_ffn_b256_bf16"] = gemm_peak(256 * 64, 768, 3072, reps=20, device="cuda", dtype=bf16)
    g["peak_8192_bf16"] = gemm_peak(8192, 8192, 8192, reps=10, device="cuda", dtype=bf16)
    save()
    for batch, batches in ((64, 20), (256, 10), (1024, 4), (4096, 2)):
        g[f"full_b{batch}_bf16"] = bench_inference("full", batch, batches, 7, "cuda", bf16)
        save()
    g["full_b256_fp32"] = bench_inference("full", 256, 4, 5, "cuda", torch.float32)
    g["demo_b4096_bf16"] = bench_inference("demo", 4096, 10, 7, "cuda", bf16)
    save()
    # flagcore.predict end to end (windows built on the host, copied, predicted): the seed's 9,073 bars
    model = build_model(preset("full"), seed=0)
    with torch.no_grad():  # trained-looking adapters, so that bf16 and fp32 are compared on real work
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    x = np.random.default_rng(0).standard_normal((9073 + 63, 60)).astype(np.float32)
    t_bf16, p_bf16 = runs(lambda: predict(model, x, device="cuda", dtype=bf16, batch_size=512), 3)
    t_fp32, p_fp32 = runs(lambda: predict(model, x, device="cuda", batch_size=512), 3)
    g["predict_full_bars"] = int(x.shape[0])
    g["predict_full_bf16"] = t_bf16
    g["predict_full_fp32"] = t_fp32
    g["predict_bf16_vs_fp32"] = {
        "actions_equal": float((p_bf16.action == p_fp32.action).mean()),
        "max_abs_logit_diff": float(np.abs(p_bf16.logits - p_fp32.logits).max()),
        "max_abs_confidence_diff": float(np.abs(p_bf16.confidence - p_fp32.confidence).max()),
    }
    save()


def scaleout_section(res: dict, save, train_path: Path, reps: int) -> None:
    from flagcore.data.dataset import load_dataset
    from flagcore.models.flag_trader import preset
    from flagcore.training.cpcv import retrain_cpcv
    from flagcore.training.loop import TrainConfig
    from flagcore.training.tasks import Placement

    ds = load_dataset(train_path)
    cfg = TrainConfig(loss="weighted", epochs=2, windows_per_epoch=2000)
    s = res.setdefault("scaleout", {"bars": ds.n_bars, "splits": 15, "cores": os.cpu_count(), "retrain": {}})
    logits = {}
    for workers in (1, 2, 4, 8, 15):
        s["retrain"][f"workers_{workers}"], rc = runs(
            lambda w=workers: retrain_cpcv(ds, preset("demo"), cfg, placement=Placement(workers=w)), reps
        )
        logits[workers] = rc.path_logits
        save()
    base = logits[1]
    s["max_logit_diff_vs_in_process"] = {str(w): float(np.abs(v - base).max()) for w, v in logits.items()}
    save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="the quick demo's train.parquet")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-gpu", action="store_true", help="only the scale-out figures")
    args = ap.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"machine": machine()}

    def save() -> None:
        (out / "device.json").write_text(json.dumps(res, indent=1, default=str))

    save()
    t0 = time.perf_counter()
    if torch.cuda.is_available() and not args.skip_gpu:
        try:
            gpu_section(res, save)
        except Exception as e:  # noqa: BLE001 - keep what ran, and the scale-out figures
            res["gpu_error"] = f"{type(e).__name__}: {e}"
        print(f"gpu done in {time.perf_counter() - t0:.0f}s", flush=True)
    scaleout_section(res, save, Path(args.train), args.reps)
    print(f"all done in {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
