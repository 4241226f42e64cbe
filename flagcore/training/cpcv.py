"""Retraining CPCV: the model retrained on every split of combinatorial purged cross-validation.

Each split trains on its purged, embargoed training groups and predicts its test groups; the
CPCV paths (``analysis.hifa.cpcv_paths``) then give every bar a prediction from a model that never
trained on it. The splits are tasks of ``training.tasks.run_tasks``, so they can run in worker
processes or on Ray with the same results.

Sizing a path follows the same rule: Kelly's payoff ratio is estimated per split, from the split's
own model's signals on its own purged, embargoed training observations
(:func:`split_payoff_ratio`), and the bars a split supplies to a path are sized with that split's
ratio (:func:`path_positions`). Nothing a path is scored on enters its sizing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from flagcore.analysis.backtest import BacktestConfig, kelly_probability, payoff_ratio, positions
from flagcore.analysis.cpcv import cpcv_paths, cpcv_splits, group_indices
from flagcore.analysis.diagnostics import softmax
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
    # per split: its purged, embargoed training indices and its model's logits on them (the signals
    # its payoff ratio is estimated from), and its test indices
    split_train: list[np.ndarray] = field(default_factory=list)
    split_train_logits: list[np.ndarray] = field(default_factory=list)
    split_test: list[np.ndarray] = field(default_factory=list)


def _cpcv_split_task(shared: tuple, task: tuple) -> tuple:
    """One split, wherever ``tasks.run_tasks`` puts it: train on its training index, predict its test
    bars and its own training bars (the signals its payoff ratio comes from)."""
    ds, model_config, cfg = shared
    s, train_idx, test_idx = task
    res = train_model(ds, model_config, cfg, train_index=train_idx, device="cpu")
    logits = predict(res.model, ds.features, device="cpu").logits
    return s, logits[test_idx], logits[train_idx], res.provenance


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
    results = {s: (logits, train_logits, prov) for s, logits, train_logits, prov in done}
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
        [results[s][2] for s in range(len(splits))],
        time.perf_counter() - t0,
        placement.describe(),
        [sp.train for sp in splits],
        [results[s][1] for s in range(len(splits))],
        [sp.test for sp in splits],
    )


def _blocks(index: np.ndarray) -> list[np.ndarray]:
    """``index`` (sorted) cut into runs of consecutive integers."""
    if index.size == 0:
        return []
    return np.split(index, np.flatnonzero(np.diff(index) != 1) + 1)


def split_payoff_ratio(train_logits, train_index, close, test_index=None, hold: str = "flat") -> float:
    """Kelly's payoff ratio b for one CPCV split, from that split's training observations alone.

    The split's model's signals on its own purged, embargoed training bars, at unit size under the
    backtest's HOLD rule (``hold``: "flat", or "keep" carrying the last direction within each
    contiguous stretch of training bars), earn the bar's simple return close_{i+1} / close_i - 1;
    b = mean winning bar / mean losing bar in the market (``backtest.payoff_ratio``, 1 when there
    are no wins or no losses). A bar whose return would reach a test bar's close (i + 1 in
    ``test_index``) is left out, so no price of the test groups enters b (AFML ch. 12: nothing
    fitted on a split may see its test groups).

    Parameters
    ----------
    train_logits : array_like, (m, 3)
        The split's model's logits on its training bars, in the order of ``train_index``.
    train_index : array_like of int, (m,)
        The split's training bars (sorted).
    close : array_like, (n,)
        Closes of the whole timeline.
    test_index : array_like of int, optional
        The split's test bars.
    hold : str, default "flat"
        The backtest's HOLD rule (``BacktestConfig.hold``).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> close = np.array([100.0, 102.0, 101.0, 104.0, 103.0, 500.0, 1.0])
    >>> buy = np.tile([0.0, 0.0, 1.0], (5, 1))  # BUY on bars 0-4
    >>> # wins +2% and +2.97%, losses -0.98% and -0.96%; bar 4's return reaches test bar 5: left out
    >>> round(split_payoff_ratio(buy, np.arange(5), close, test_index=[5, 6]), 3)
    2.559
    """
    lg = np.asarray(train_logits, dtype=np.float64)
    idx = np.asarray(train_index, dtype=np.int64)
    c = np.asarray(close, dtype=np.float64)
    if lg.ndim != 2 or lg.shape != (idx.size, N_CLASSES):
        raise FlagcoreError(
            f"train_logits must be (training bars, {N_CLASSES}) = ({idx.size}, {N_CLASSES}), got {lg.shape}"
        )
    if idx.size and (idx.min() < 0 or idx.max() >= c.size or np.any(np.diff(idx) <= 0)):
        raise FlagcoreError(f"train_index must be sorted bars of the {c.size} closes")
    test = np.zeros(c.size + 1, dtype=bool)
    if test_index is not None:
        test[np.asarray(test_index, dtype=np.int64)] = True
    unit = BacktestConfig(sizing="unit", hold=hold)
    pos = np.empty(idx.size)
    offset = 0
    for block in _blocks(idx):
        pos[offset : offset + block.size] = positions(lg[offset : offset + block.size].argmax(1), cfg=unit)
        offset += block.size
    # bar i earns close[i+1] / close[i] - 1: keep the bars whose next close exists and is not a test bar's
    ok = (idx + 1 < c.size) & ~test[idx + 1]
    nxt = np.minimum(idx + 1, c.size - 1)
    r = c[nxt] / c[idx] - 1.0
    return payoff_ratio(pos[ok], r[ok])


def split_payoff_ratios(res: RetrainCPCV, close, hold: str = "flat") -> np.ndarray:
    """(n_splits,) :func:`split_payoff_ratio` of every split of ``res``."""
    if len(res.split_train_logits) != len(res.test_groups):
        raise FlagcoreError(
            f"{len(res.split_train_logits)} splits carry training logits, {len(res.test_groups)} were run: "
            "the payoff ratios need every split's training-bar signals"
        )
    return np.array(
        [
            split_payoff_ratio(lg, tr, close, te, hold)
            for lg, tr, te in zip(res.split_train_logits, res.split_train, res.split_test, strict=True)
        ]
    )


def path_positions(path_logits, paths, groups, payoffs, cfg: BacktestConfig) -> np.ndarray:
    """(phi, n) positions of every retraining path, each group sized with the payoff ratio of the
    split that predicted it.

    A path's actions are the argmax of its logits and Kelly's q = p_a / (p_SELL + p_BUY), as for
    any option (``analysis.backtest.kelly_probability``; the model's own probabilities: a run's
    calibration setting is not applied to retraining paths); the bars of group g on path p come
    from split ``paths[p, g]`` and are sized
    with ``payoffs[paths[p, g]]``. The HOLD rule runs over the whole path (a "keep" carries across
    group boundaries, as the path is traded in one piece).
    """
    lg = np.asarray(path_logits, dtype=np.float64)
    paths = np.asarray(paths)
    payoffs = np.asarray(payoffs, dtype=np.float64)
    if lg.ndim != 3 or lg.shape[0] != paths.shape[0] or lg.shape[2] != N_CLASSES:
        raise FlagcoreError(
            f"path_logits must be (paths, bars, {N_CLASSES}) with {paths.shape[0]} paths, got {lg.shape}"
        )
    if paths.max(initial=-1) >= payoffs.size:
        raise FlagcoreError(f"{payoffs.size} payoff ratios for splits up to {paths.max()}")
    out = np.empty(lg.shape[:2])
    for p in range(lg.shape[0]):
        probs = softmax(lg[p])
        actions = probs.argmax(1)
        conf = kelly_probability(probs, actions)  # the one convention: q = p_a / (p_SELL + p_BUY)
        for s in np.unique(paths[p]):
            full = positions(actions, conf, cfg, float(payoffs[s]))
            for g in np.flatnonzero(paths[p] == s):
                out[p, groups[g]] = full[groups[g]]
    return out
