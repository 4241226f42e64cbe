"""The embedded default: build the demo end to end, reproducing the seed's collapse.

Market -> features and labels -> the baseline (plain cross-entropy, the seed's setting) and
every training remedy -> walk-forward -> CGDT -> ``pipeline.evaluate`` with every option and
HIFA. Each step writes its artifact under ``root`` and is skipped when the artifact is there, so
a second call only re-reads; the run itself is reused when an identical one is stored.

``quick`` is a smaller market (a year of training bars, 1,500 test bars) and shorter training,
for tests and a first look; the full demo has the seed's 9,073 test bars.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from flagcore.errors import FlagcoreError

DEFAULT_ROOT = Path("data") / "demo"


@dataclass(frozen=True)
class DemoPlan:
    name: str
    train_start: str
    test_bars: int
    losses: tuple[str, ...]  # "ce" is the baseline
    windows_per_epoch: int
    epochs: int
    cgdt_epochs: int
    cgdt_windows: int
    cgdt_critic_epochs: int
    walk_forward: bool
    settings: dict = field(default_factory=dict)


FULL = DemoPlan("demo", "2020-01-01", 9073, ("ce", "weighted", "focal", "logit_adjusted", "oversample", "multitask"),
                windows_per_epoch=8000, epochs=5, cgdt_epochs=3, cgdt_windows=6144, cgdt_critic_epochs=2,
                walk_forward=True)
QUICK = DemoPlan("demo-quick", "2024-01-01", 1500, ("ce", "weighted", "focal"), windows_per_epoch=3000, epochs=3,
                 cgdt_epochs=2, cgdt_windows=1024, cgdt_critic_epochs=1, walk_forward=False)

Progress = Callable[[str, float], None]


def _noop(stage: str, frac: float) -> None:
    pass


def build_demo(store, *, quick: bool = False, root: str | Path | None = None, progress: Progress = _noop,
               device: str | None = None, workers: int | None = None) -> dict:
    """Build (or reuse) every artifact of the demo and its evaluated run; returns what was done."""
    from flagcore.data.dataset import write_dataset
    from flagcore.data.features import build_datasets
    from flagcore.data.market import TEST_START, demo_market
    from flagcore.pipeline.evaluate import EvaluateSettings, evaluate

    plan = QUICK if quick else FULL
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    base = Path(root) if root is not None else DEFAULT_ROOT
    d = base / ("quick" if quick else "full")
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    steps: dict[str, str] = {}

    market, train_p, test_p = d / "market.parquet", d / "train.parquet", d / "test.parquet"
    if not (market.exists() and train_p.exists() and test_p.exists()):
        progress("market and features", 0.0)
        bars = demo_market(train_start=pd.Timestamp(plan.train_start, tz="UTC"), test_bars=plan.test_bars)
        sets = build_datasets(bars, test_start=TEST_START, source=str(market))
        for k, (df, meta) in sets.items():
            write_dataset(df, d / f"{k}.parquet", **meta)
        write_dataset(bars, market)  # last: its presence marks the step done
        steps["data"] = "built"
    else:
        steps["data"] = "reused"

    # training runs as tasks in worker processes: the demo models are small, and two one-thread
    # processes get more from two cores than one process with two threads
    models = {loss: d / "models" / loss for loss in plan.losses}
    wf_path = d / "models" / "walk_forward" / "predictions.parquet"
    cgdt_path = d / "models" / "cgdt" / "cgdt.safetensors"
    tasks: dict[str, tuple] = {}
    if not cgdt_path.exists():
        tasks["cgdt"] = ("cgdt", str(train_p), str(cgdt_path), plan, device)
    for loss in plan.losses:
        if not (models[loss] / "model.safetensors").exists():
            tasks[f"train {loss}"] = ("train", str(train_p), str(models[loss]), plan, device, loss)
    wf_task = ("walk_forward", str(models["weighted"]), str(test_p), str(wf_path), device)
    wanted_wf = plan.walk_forward and not wf_path.exists()
    total = len(tasks) + int(wanted_wf)
    for name in [f"train {loss}" for loss in plan.losses] + ["cgdt"]:
        steps[name] = "trained" if name in tasks else "reused"
    if plan.walk_forward:
        steps["walk-forward"] = "trained" if wanted_wf else "reused"
    if total:
        progress(f"training {total} models", 0.0)
        _run_tasks(tasks, wf_task if wanted_wf else None, workers,
                   lambda done: progress(f"training {total} models", done / total))

    retrained = [str(models[loss]) for loss in plan.losses if loss != "ce"]
    if plan.walk_forward:
        retrained.append(f"walk_forward={wf_path}")
    progress("evaluating", 0.0)
    res = evaluate(models["ce"], test_p, store=store, train_data=train_p, partner=cgdt_path, retrained=retrained,
                   name=plan.name, settings=EvaluateSettings(device=device), progress=progress, reuse=True)
    steps["evaluate"] = "reused" if res["reused"] else "evaluated"
    return {"run_id": res["run_id"], "steps": steps, "root": str(d), "seconds": round(time.perf_counter() - t0, 1),
            "inference": res["inference"]}


def _task(task: tuple) -> str:
    """One training task, in a worker process (or in this one with a single worker)."""
    kind = task[0]
    if kind == "train":
        _, train_p, out, plan, device, loss = task
        _train(Path(train_p), Path(out), loss, plan, device)
    elif kind == "cgdt":
        _, train_p, out, plan, device = task
        _train_cgdt(Path(train_p), Path(out), plan)
    else:
        _, start, test_p, out, device = task
        _walk_forward(Path(start), Path(test_p), Path(out))
    return kind


def _run_tasks(tasks: dict[str, tuple], wf_task: tuple | None, workers: int, on_done: Callable[[int], None]) -> None:
    """Run the tasks, then walk-forward as soon as the class-weighted model it starts from exists."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    wf_start = None if wf_task is None else Path(wf_task[1]) / "model.safetensors"
    done = 0
    if workers == 1:
        for t in list(tasks.values()) + ([wf_task] if wf_task else []):
            _task(t)
            done += 1
            on_done(done)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    from flagcore.training.tasks import worker_context
    from flagcore.training.tasks import worker_init

    with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(), initializer=worker_init,
                             initargs=(threads, os.getpid())) as pool:
        pending = {pool.submit(_task, t) for t in tasks.values()}
        if wf_task is not None and wf_start.exists():
            pending.add(pool.submit(_task, wf_task))
            wf_task = None
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                f.result()  # re-raise a worker's error here
                done += 1
                on_done(done)
            if wf_task is not None and wf_start.exists():
                pending.add(pool.submit(_task, wf_task))
                wf_task = None


def _train(train_p: Path, out: Path, loss: str, plan: DemoPlan, device) -> None:
    from flagcore.models.checkpoint import save_checkpoint
    from flagcore.data.dataset import load_dataset
    from flagcore.models.flag_trader import preset
    from flagcore.training.train import TrainConfig, train_model

    mcfg = preset("demo")
    ds = load_dataset(train_p, state_dim=mcfg.state_dim)
    cfg = TrainConfig(loss=loss, epochs=plan.epochs, windows_per_epoch=plan.windows_per_epoch, patience=2)
    res = train_model(ds, mcfg, cfg, device=device)
    save_checkpoint(res.model, out, feature_names=ds.feature_names, padded_inputs=ds.padded_inputs,
                    provenance={**res.provenance, "demo": plan.name})


def _walk_forward(start: Path, test_p: Path, out: Path) -> None:
    import numpy as np

    from flagcore.models.checkpoint import load_checkpoint
    from flagcore.data.dataset import load_dataset, write_dataset
    from flagcore.models.inference import from_logits, predictions_frame
    from flagcore.training.train import walk_forward

    model = load_checkpoint(start)
    ds = load_dataset(test_p, state_dim=model.checkpoint_info.config.state_dim)
    logits, _, _ = walk_forward(model, ds)
    pred = from_logits(logits, np.zeros(len(logits), bool), model.checkpoint_info.config.window)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.parquet")
    write_dataset(predictions_frame(ds.timestamps[ds.eval_index:], pred), tmp, walk_forward={"start": str(start)})
    tmp.replace(out)


def _train_cgdt(train_p: Path, out: Path, plan: DemoPlan) -> None:
    from flagcore.models.cgdt import CGDTConfig, save_cgdt, train_cgdt
    from flagcore.data.dataset import load_dataset

    cfg = CGDTConfig(epochs=plan.cgdt_epochs, windows_per_epoch=plan.cgdt_windows,
                     critic_epochs=plan.cgdt_critic_epochs)
    ds = load_dataset(train_p, state_dim=cfg.state_dim)
    model = train_cgdt(ds, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_cgdt(model, out)


def require_demo_store(store) -> None:
    if not store.exists():
        raise FlagcoreError(f"{store.path}: empty; build the demo with `flagcore demo`")
