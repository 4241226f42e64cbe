"""The scale-out section of the benchmark suite: retraining CPCV and batch inference as tasks, in
process, in a local worker pool and on a local Ray instance, with their results compared."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from timing import runs


def section_retrain(res: dict, quick_root: Path) -> None:
    """Retraining CPCV and batch inference as tasks: in process, a local pool, a local Ray instance."""
    import ray

    import flagcore
    from flagcore.data.dataset import load_dataset
    from flagcore.training.tasks import Placement, run_tasks

    ds = load_dataset(quick_root / "train.parquet")
    reps = 3
    out = {"bars": ds.n_bars, "splits": 15, "ray": ray.__version__}
    # Ray's own start and stop, with nothing to run (a builtin as the task: nothing to import)
    out["ray_start_stop"], _ = runs(
        lambda: run_tasks(max, [0, 1], shared=0, placement=Placement(ray_address="local")), reps
    )
    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"py_modules": [str(Path(flagcore.__file__).parent)]},
    )
    try:
        out.update(_retrain_placements(ds, reps))
        out.update(_batch_inference_placements(quick_root, ds, reps))
    finally:
        ray.shutdown()
    res["retrain"] = out


def _retrain_placements(ds, reps: int) -> dict:
    """Retraining CPCV in process (1 and all torch threads), in a local pool of 2 and on the running Ray."""
    import torch

    from flagcore.models.flag_trader import preset
    from flagcore.training.cpcv import retrain_cpcv
    from flagcore.training.loop import TrainConfig
    from flagcore.training.tasks import Placement

    cfg = TrainConfig(loss="weighted", epochs=2, windows_per_epoch=2000)
    threads = torch.get_num_threads()
    logits, times = {}, {}
    for name, placement, n_threads in [
        ("in_process_1_thread", Placement(workers=1), 1),
        ("in_process", Placement(workers=1), threads),
        ("local_pool_2", Placement(workers=2), threads),
        ("ray_2", Placement(ray_address="auto"), threads),
    ]:
        torch.set_num_threads(n_threads)
        try:
            times[name], rc = runs(
                lambda p=placement: retrain_cpcv(ds, preset("demo"), cfg, placement=p), reps
            )
        finally:
            torch.set_num_threads(threads)
        logits[name] = rc.path_logits
    # one torch thread per split in the pool, on Ray and in the 1-thread run: the same arithmetic
    identical = bool(
        np.array_equal(logits["local_pool_2"], logits["ray_2"])
        and np.array_equal(logits["local_pool_2"], logits["in_process_1_thread"])
    )
    return {
        "retrain": times,
        "retrain_identical": identical,
        "retrain_max_diff_2_threads": float(np.abs(logits["in_process"] - logits["local_pool_2"]).max()),
    }


def _inference_jobs(quick_root: Path) -> list[tuple]:
    """(kind, path, model id, settings) of the quick demo's 3 FLAG-TRADER checkpoints and its CGDT."""
    from flagcore.models.checkpoint import load_checkpoint
    from flagcore.pipeline.inference_cache import INFERENCE_SETTINGS, cgdt_id, flag_trader_settings

    jobs = []
    for m in ("ce", "weighted", "focal"):
        info = load_checkpoint(quick_root / "models" / m).checkpoint_info
        jobs.append(("flag-trader", str(info.path), info.sha256, flag_trader_settings(info)))
    cg = quick_root / "models" / "cgdt" / "cgdt.safetensors"
    jobs.append(("cgdt", str(cg), cgdt_id(cg), INFERENCE_SETTINGS))
    return jobs


def _batch_inference_placements(quick_root: Path, ds, reps: int) -> dict:
    """The quick demo's checkpoints on its test and training sets, nothing cached: in process, in a local
    pool of 2 and on the running Ray."""
    from flagcore.data.dataset import load_dataset
    from flagcore.pipeline.inference_cache import InferenceStats, prefetch_inference
    from flagcore.pipeline.run import recent
    from flagcore.store.store import Store
    from flagcore.training.tasks import Placement
    from flagcore.vocab import LOGIT_COLUMNS

    test = load_dataset(quick_root / "test.parquet")
    train = recent(ds, 8766, history=63)
    jobs = _inference_jobs(quick_root)
    tmp = Path(tempfile.mkdtemp(prefix="flagcore-scale-"))
    counter = iter(range(10_000))

    def infer(placement):
        store = Store(tmp / f"s{next(counter)}.duckdb")
        prefetch_inference(store, jobs, [test, train], InferenceStats(), placement)
        return [
            store.cached_logits(j[2], d.content_hash, f"{j[3]};bars={d.attrs.get('slice', 'all')}")
            for j in jobs
            for d in (test, train)
        ]

    inf, got = {}, {}
    inf["in_process"], got["in_process"] = runs(lambda: _infer_in_process(jobs, test, train), reps)
    for name, placement in [("local_pool_2", Placement(workers=2)), ("ray_2", Placement(ray_address="auto"))]:
        inf[name], got[name] = runs(lambda p=placement: infer(p), reps)
    shutil.rmtree(tmp, ignore_errors=True)
    max_diff = float(
        max(
            np.abs(np.asarray(a[list(LOGIT_COLUMNS)]) - np.asarray(b)).max()
            for name in ("local_pool_2", "ray_2")
            for a, b in zip(got[name], got["in_process"], strict=True)
        )
    )
    return {"inference": inf, "inference_tasks": len(jobs) * 2, "inference_max_diff": max_diff}


def _infer_in_process(jobs, test, train) -> list:
    from flagcore.pipeline.inference_cache import inference_task

    return [
        inference_task(None, (kind, path, d, None, mid))[0]
        for kind, path, mid, _ in jobs
        for d in (test, train)
    ]
