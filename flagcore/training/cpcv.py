"""Retraining CPCV: the model retrained on every split of combinatorial purged cross-validation.

Each split trains on its purged, embargoed training groups and predicts its test groups; the
CPCV paths (``analysis.hifa.cpcv_paths``) then give every bar a prediction from a model that never
trained on it. The splits are tasks of ``training.tasks.run_tasks``, so they can run in worker
processes or on Ray with the same results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flagcore.analysis.cpcv import cpcv_paths, cpcv_splits, group_indices
from flagcore.data.dataset import Dataset
from flagcore.errors import FlagcoreError
from flagcore.models.flag_trader import FlagTraderConfig
from flagcore.models.inference import predict
from flagcore.training.loop import TrainConfig, train_model
from flagcore.training.tasks import Placement, run_tasks
from flagcore.vocab import N_CLASSES


@dataclass
class RetrainCPCV:
    """Retraining CPCV: the model retrained on each split's purged training groups."""

    mode: str  # always "retraining"
    test_groups: list[list[int]]  # per split
    paths: np.ndarray  # (phi, N): the split whose test set supplies each group of each path
    path_logits: np.ndarray  # (phi, n, 3): every bar predicted by a model that never trained on it
    groups: list[np.ndarray]
    split_provenance: list[dict]
    seconds: float
    workers: str  # where the splits ran (tasks.Placement.describe)


def _cpcv_split_task(shared: tuple, task: tuple) -> tuple:
    """One split, wherever ``tasks.run_tasks`` puts it: train on its training index, predict its test bars."""
    ds, model_config, cfg = shared
    s, train_idx, test_idx = task
    res = train_model(ds, model_config, cfg, train_index=train_idx, device="cpu")
    logits = predict(res.model, ds.features, device="cpu").logits[test_idx]
    return s, logits, res.provenance


def retrain_cpcv(
    ds: Dataset,
    model_config: FlagTraderConfig,
    cfg: TrainConfig | None = None,
    *,
    n_groups: int = 6,
    n_test_groups: int = 2,
    embargo: int = 0,
    workers: int = 2,
    placement: Placement | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RetrainCPCV:
    """CPCV with the model retrained on every split (AFML ch. 12), splits run in worker processes.

    The whole timeline of ``ds`` is cut into ``n_groups`` groups; each of the C(N, k) splits trains
    on its training groups, purged by the dataset's label horizon and embargoed, and predicts its
    test groups. The paths of ``hifa.cpcv_paths`` then give every bar a prediction from a model
    that never saw it. The splits are tasks of ``tasks.run_tasks``: in this process, in ``workers``
    local processes (each with ``max(1, cores // workers)`` torch threads) or, with a ``placement``
    that names a Ray address, on a Ray cluster. Results do not depend on where the splits ran (each
    split has its own seed-fixed run). Local workers are not forked from the caller, so a script that
    calls this with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
    """
    cfg = cfg or TrainConfig()
    if ds.labels is None:
        raise FlagcoreError(f"{ds.source}: retraining CPCV needs labels")
    placement = placement or Placement(workers=workers)
    h = ds.label_horizon or 0
    splits = cpcv_splits(ds.n_bars, n_groups, n_test_groups, purge=h, embargo=embargo)
    t0 = time.perf_counter()
    done = run_tasks(
        _cpcv_split_task,
        [(s, sp.train, sp.test) for s, sp in enumerate(splits)],
        shared=(ds, model_config, cfg),
        placement=placement,
        progress=progress,
    )
    results = {s: (logits, prov) for s, logits, prov in done}
    groups = group_indices(ds.n_bars, n_groups)
    paths = cpcv_paths(n_groups, n_test_groups)
    path_logits = np.empty((paths.shape[0], ds.n_bars, N_CLASSES), dtype=np.float32)
    for s, sp in enumerate(splits):
        offset = 0  # sp.test is its groups' indices, concatenated in group order
        for g in sp.test_groups:
            seg = results[s][0][offset : offset + len(groups[g])]
            offset += len(groups[g])
            path_logits[np.flatnonzero(paths[:, g] == s)[:, None], groups[g]] = seg
    return RetrainCPCV(
        "retraining",
        [sp.test_groups for sp in splits],
        paths,
        path_logits,
        groups,
        [results[s][1] for s in range(len(splits))],
        time.perf_counter() - t0,
        placement.describe(),
    )
