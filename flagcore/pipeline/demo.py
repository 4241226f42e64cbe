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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from flagcore.errors import FlagcoreError
from flagcore.vocab import LOSSES

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


FULL = DemoPlan(
    "demo",
    "2020-01-01",
    9073,
    LOSSES,
    windows_per_epoch=8000,
    epochs=5,
    cgdt_epochs=3,
    cgdt_windows=6144,
    cgdt_critic_epochs=2,
    walk_forward=True,
)
QUICK = DemoPlan(
    "demo-quick",
    "2024-01-01",
    1500,
    ("ce", "weighted", "focal"),
    windows_per_epoch=3000,
    epochs=3,
    cgdt_epochs=2,
    cgdt_windows=1024,
    cgdt_critic_epochs=1,
    walk_forward=False,
)

Progress = Callable[[str, float], None]


def _noop(stage: str, frac: float) -> None:
    pass


def build_demo(
    store,
    *,
    quick: bool = False,
    root: str | Path | None = None,
    progress: Progress = _noop,
    device: str | None = None,
    workers: int | None = None,
) -> dict:
    """Build (or reuse) every artifact of the demo and its evaluated run; returns what was done."""
    from flagcore.pipeline.evaluate import evaluate
    from flagcore.pipeline.settings import EvaluateSettings

    plan = QUICK if quick else FULL
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    base = Path(root) if root is not None else DEFAULT_ROOT
    d = base / ("quick" if quick else "full")
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = DemoPaths(d, plan)
    steps: dict[str, str] = {"data": _build_data(paths, plan, progress)}
    steps.update(_train_models(paths, plan, device, workers, progress))

    retrained = [str(paths.models[loss]) for loss in plan.losses if loss != "ce"]
    if plan.walk_forward:
        retrained.append(f"walk_forward={paths.walk_forward}")
    progress("evaluating", 0.0)
    res = evaluate(
        paths.models["ce"],
        paths.test,
        store=store,
        train_data=paths.train,
        partner=paths.cgdt,
        retrained=retrained,
        name=plan.name,
        settings=EvaluateSettings(device=device),
        progress=progress,
        reuse=True,
    )
    steps["evaluate"] = "reused" if res["reused"] else "evaluated"
    return {
        "run_id": res["run_id"],
        "steps": steps,
        "root": str(d),
        "seconds": round(time.perf_counter() - t0, 1),
        "inference": res["inference"],
    }


class DemoPaths:
    """Where the demo's artifacts lie under its folder ``d``."""

    def __init__(self, d: Path, plan: DemoPlan):
        self.market, self.train, self.test = d / "market.parquet", d / "train.parquet", d / "test.parquet"
        self.models = {loss: d / "models" / loss for loss in plan.losses}
        self.walk_forward = d / "models" / "walk_forward" / "predictions.parquet"
        self.cgdt = d / "models" / "cgdt" / "cgdt.safetensors"


def _build_data(paths: DemoPaths, plan: DemoPlan, progress: Progress) -> str:
    """The market and its training and test datasets: "built", or "reused" when all three exist."""
    from flagcore.data.dataset import write_dataset
    from flagcore.data.features import build_datasets
    from flagcore.data.market import TEST_START, demo_market

    if paths.market.exists() and paths.train.exists() and paths.test.exists():
        return "reused"
    progress("market and features", 0.0)
    bars = demo_market(train_start=pd.Timestamp(plan.train_start, tz="UTC"), test_bars=plan.test_bars)
    sets = build_datasets(bars, test_start=TEST_START, source=str(paths.market))
    for k, (df, meta) in sets.items():
        write_dataset(df, paths.market.parent / f"{k}.parquet", **meta)
    write_dataset(bars, paths.market)  # last: its presence marks the step done
    return "built"


def _train_models(
    paths: DemoPaths, plan: DemoPlan, device: str | None, workers: int, progress: Progress
) -> dict[str, str]:
    """Train the models that are missing, as tasks; returns each one's step ("trained" or "reused").

    Training runs as tasks in worker processes: the demo models are small, and two one-thread
    processes get more from two cores than one process with two threads. The walk-forward task
    starts once the class-weighted model it starts from is trained.
    """
    from flagcore.training.tasks import Placement, run_tasks

    tasks: dict[str, tuple] = {}
    if not paths.cgdt.exists():
        tasks["cgdt"] = ("cgdt", str(paths.train), str(paths.cgdt), plan, device)
    for loss in plan.losses:
        if not (paths.models[loss] / "model.safetensors").exists():
            tasks[f"train {loss}"] = ("train", str(paths.train), str(paths.models[loss]), plan, device, loss)
    names = [f"train {loss}" for loss in plan.losses]
    steps = {name: "trained" if name in tasks else "reused" for name in names}
    steps["cgdt"] = "trained" if "cgdt" in tasks else "reused"
    if plan.walk_forward:
        wanted_wf = not paths.walk_forward.exists()
        steps["walk-forward"] = "trained" if wanted_wf else "reused"
        if wanted_wf:
            tasks["walk-forward"] = (
                "walk_forward",
                str(paths.models["weighted"]),
                str(paths.test),
                str(paths.walk_forward),
                device,
            )
    keys = list(tasks)
    after = None  # walk-forward waits for the class-weighted model when that is trained too
    if "walk-forward" in tasks and "train weighted" in tasks:
        after = {keys.index("walk-forward"): keys.index("train weighted")}
    total = len(tasks)
    if total:
        progress(f"training {total} models", 0.0)
        run_tasks(
            _task,
            list(tasks.values()),
            placement=Placement(workers=workers),
            after=after,
            progress=lambda done, n: progress(f"training {total} models", done / total),
        )
    return steps


def _task(shared: None, task: tuple) -> str:
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


def _train(train_p: Path, out: Path, loss: str, plan: DemoPlan, device) -> None:
    from flagcore.data.dataset import load_dataset
    from flagcore.models.checkpoint import save_checkpoint
    from flagcore.models.flag_trader import preset
    from flagcore.training.loop import TrainConfig, train_model

    mcfg = preset("demo")
    ds = load_dataset(train_p, state_dim=mcfg.state_dim)
    cfg = TrainConfig(loss=loss, epochs=plan.epochs, windows_per_epoch=plan.windows_per_epoch, patience=2)
    res = train_model(ds, mcfg, cfg, device=device)
    save_checkpoint(
        res.model,
        out,
        feature_names=ds.feature_names,
        padded_inputs=ds.padded_inputs,
        provenance={**res.provenance, "demo": plan.name},
    )


def _walk_forward(start: Path, test_p: Path, out: Path) -> None:
    from flagcore.data.dataset import load_dataset
    from flagcore.models.checkpoint import load_checkpoint
    from flagcore.training.walk_forward import walk_forward, write_predictions

    model = load_checkpoint(start)
    ds = load_dataset(test_p, state_dim=model.checkpoint_info.config.state_dim)
    logits, _, _ = walk_forward(model, ds)
    window = model.checkpoint_info.config.window
    write_predictions(ds, logits, window, out, walk_forward={"start": str(start)})


def _train_cgdt(train_p: Path, out: Path, plan: DemoPlan) -> None:
    from flagcore.data.dataset import load_dataset
    from flagcore.models.cgdt import CGDTConfig
    from flagcore.models.cgdt_file import save_cgdt
    from flagcore.training.cgdt import train_cgdt

    cfg = CGDTConfig(
        epochs=plan.cgdt_epochs, windows_per_epoch=plan.cgdt_windows, critic_epochs=plan.cgdt_critic_epochs
    )
    ds = load_dataset(train_p, state_dim=cfg.state_dim)
    model = train_cgdt(ds, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_cgdt(model, out)


def require_demo_store(store) -> None:
    if not store.exists():
        raise FlagcoreError(f"{store.path}: empty; build the demo with `flagcore demo`")
