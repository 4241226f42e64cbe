"""What ``flagcore explain`` reads: the run's checked model and data, its sampled bars, the fills.

Loading, each refused in one line when it no longer matches the run: :func:`baseline_record` and
:func:`load_baseline` (the baseline checkpoint; :class:`CheckpointUnavailable` when the file is
gone or its sha256 no longer matches the stored model id), :func:`load_run_dataset` (the evaluated
and training datasets, content hashes checked); and from the store, :func:`run_trading` (periods
per year, Kelly payoff, backtest config), :func:`training_prior` (the training label prior),
:func:`stored_logits` (the baseline's stored logits) and :func:`shifted_inputs` (the most shifted
real inputs, PSI > ``SHIFT_PSI_MIN``).

The sample: every k-th evaluated bar from a seeded offset, k = (evaluated bars) // ``bars``
(every bar when ``bars`` is at least their number): :func:`sample_bars`. The fills and the time
shuffle are plain functions (:func:`median_fill`, :func:`resample_fill`, :func:`quantile_fill`,
:func:`shuffle_time`) that ``models.attribution.counterfactual_logits`` takes, for ``pipeline.explain``
and for the live ablation on the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flagcore.analysis.root_cause import SHIFT_PSI_MIN  # PSI above which an input counts as shifted
from flagcore.errors import FlagcoreError
from flagcore.models.attribution import Fill
from flagcore.store.store import Store
from flagcore.vocab import LOGIT_COLUMNS

MAX_SHIFTED = 10  # the most shifted inputs mapped onto their training distribution
QUANTILE_POINTS = 1001  # probability grid of the quantile mapping


class CheckpointUnavailable(FlagcoreError):
    """The run's baseline checkpoint is gone or has changed since the run was evaluated."""


# ----------------------------------------------------------------------------- samples and fills


@dataclass(frozen=True)
class Sample:
    """Sampled bars of one dataset: their rows, and how they were drawn."""

    rows: np.ndarray  # (m,) row indices into the dataset
    stride: int  # k: every k-th bar
    offset: int  # the seeded first bar, in [0, k)
    candidates: int  # bars the sample was drawn from

    def to_dict(self) -> dict:
        return {
            "bars": int(len(self.rows)),
            "stride": self.stride,
            "offset": self.offset,
            "candidates": self.candidates,
        }


def sample_bars(first: int, stop: int, bars: int, seed: int) -> Sample:
    """Every k-th row of ``first .. stop-1`` from a seeded offset, ``bars`` rows (all when fewer).

    Examples
    --------
    >>> s = sample_bars(10, 110, 25, seed=0)
    >>> len(s.rows), s.stride, int(s.rows[1] - s.rows[0])
    (25, 4, 4)
    """
    if bars < 1:
        raise FlagcoreError(f"bars must be >= 1, got {bars}")
    m = stop - first
    if m < 1:
        raise FlagcoreError(f"no bars to sample between row {first} and row {stop}")
    k = max(1, m // bars)
    offset = int(np.random.default_rng(seed).integers(k))
    rows = first + offset + k * np.arange(min(bars, (m - offset + k - 1) // k))
    return Sample(rows.astype(np.int64), k, offset, m)


def _inputs(inputs: Sequence[int], width: int) -> np.ndarray:
    idx = np.asarray(list(inputs), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= width):
        raise FlagcoreError(f"inputs {idx.tolist()} do not all lie in [0, {width})")
    return idx


def median_fill(inputs: Sequence[int], values: np.ndarray) -> Fill:
    """A fill that sets ``inputs`` at every bar of every window to ``values[inputs]`` (e.g. the
    training medians, shape (D,))."""
    v = np.asarray(values, dtype=np.float32)
    idx = _inputs(inputs, len(v))

    def fill(windows: np.ndarray) -> np.ndarray:
        out = np.array(windows, dtype=np.float32, copy=True)
        out[:, :, idx] = v[idx]
        return out

    return fill


def resample_fill(inputs: Sequence[int], train_features: np.ndarray, seed: int) -> Fill:
    """A fill that copies ``inputs`` from a random stretch of W consecutive training rows into each
    window: whole rows, so the filled inputs keep their joint structure and their order in time."""
    tr = np.asarray(train_features, dtype=np.float32)
    idx = _inputs(inputs, tr.shape[1])

    def fill(windows: np.ndarray) -> np.ndarray:
        out = np.array(windows, dtype=np.float32, copy=True)
        B, W, _ = out.shape
        if len(tr) < W:
            raise FlagcoreError(f"{len(tr)} training bars, fewer than a window of {W}")
        starts = np.random.default_rng(seed).integers(0, len(tr) - W + 1, size=B)
        stretch = tr[starts[:, None] + np.arange(W)[None, :]]  # (B, W, D)
        out[:, :, idx] = stretch[:, :, idx]
        return out

    return fill


def quantile_fill(
    inputs: Sequence[int],
    test_features: np.ndarray,
    train_features: np.ndarray,
    points: int = QUANTILE_POINTS,
) -> Fill:
    """A fill that maps each of ``inputs`` onto its training distribution by quantiles.

    A test value at the empirical quantile p of the test period becomes the training value at
    quantile p (piecewise linear between ``points`` quantiles): the marginal shift goes, the
    order of the bars stays.

    Examples
    --------
    >>> te = np.arange(100, dtype=float)[:, None] + 50.0
    >>> tr = np.arange(100, dtype=float)[:, None]
    >>> float(quantile_fill([0], te, tr)(np.full((1, 1, 1), 99.0))[0, 0, 0])
    49.0
    """
    te = np.asarray(test_features, dtype=np.float64)
    tr = np.asarray(train_features, dtype=np.float64)
    if te.ndim != 2 or tr.ndim != 2 or te.shape[1] != tr.shape[1]:
        raise FlagcoreError(f"feature matrices differ in width: {te.shape} vs {tr.shape}")
    idx = _inputs(inputs, te.shape[1])
    grid = np.linspace(0.0, 1.0, points)
    te_q = np.quantile(te[:, idx], grid, axis=0)  # (points, k)
    tr_q = np.quantile(tr[:, idx], grid, axis=0)

    def fill(windows: np.ndarray) -> np.ndarray:
        out = np.array(windows, dtype=np.float32, copy=True)
        for i, j in enumerate(idx):
            # np.interp needs increasing x: ties in the test quantiles keep their first training value
            xq, keep = np.unique(te_q[:, i], return_index=True)
            out[:, :, j] = np.interp(out[:, :, j], xq, tr_q[keep, i]) if len(xq) > 1 else tr_q[points // 2, i]
        return out

    return fill


def shuffle_time(windows: np.ndarray, seed: int) -> np.ndarray:
    """Each window with its bars in a random order (one permutation per window)."""
    x = np.asarray(windows)
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random(x.shape[:2]), axis=1)  # (B, W)
    return np.take_along_axis(x, order[:, :, None], axis=1)


# ----------------------------------------------------------------------------- loading, checked


def baseline_record(store: Store, run_id: int) -> dict:
    """The run's baseline model row (``run_models`` joined with ``models``)."""
    models = store.run_models(run_id)
    rows = models[models["role"] == "baseline"]
    if rows.empty:
        raise FlagcoreError(f"{store.path}: run {run_id} records no baseline model")
    return rows.iloc[0].to_dict()


def load_baseline(rec: dict, run_id: int):
    """The baseline checkpoint, refused in one line when it is gone or its sha256 changed."""
    from flagcore.models.checkpoint import file_sha256, load_checkpoint
    from flagcore.store.codec import from_json

    path = Path(str(rec["source"]))
    if not path.is_file():
        raise CheckpointUnavailable(f"{path}: run {run_id}'s checkpoint is gone; explain needs it")
    if file_sha256(path) != rec["model_id"]:
        raise CheckpointUnavailable(
            f"{path}: changed since run {run_id} was evaluated (sha256 differs from the stored model id)"
        )
    cfg = from_json(rec["config"]) if isinstance(rec["config"], str) else (rec["config"] or {})
    return load_checkpoint(path, num_heads=cfg.get("num_heads"), window=cfg.get("window"))


def load_run_dataset(store: Store, run: dict, key: str, what: str, state_dim: int):
    """The run's evaluated (``key`` "dataset_id") or training ("train_dataset_id") dataset, loaded
    again and checked to be the one the run used; None when the run has none."""
    from flagcore.data.dataset import load_dataset

    dataset_id = run.get(key)
    if not dataset_id:
        return None
    rec = store.dataset(dataset_id)
    if rec is None:
        raise FlagcoreError(f"{store.path}: run {run['run_id']}'s {what} dataset is not in the store")
    ds = load_dataset(rec["source"], state_dim=state_dim)
    if ds.content_hash != rec["dataset_id"]:
        raise FlagcoreError(
            f"{rec['source']}: changed since run {run['run_id']} was evaluated (content hash differs)"
        )
    return ds


def run_trading(store: Store, run: dict) -> tuple[float, float, Any]:
    """periods per year, the baseline's Kelly payoff ratio and the backtest config of the run."""
    from flagcore.analysis.backtest import BacktestConfig

    ppy = float(run["summary"]["periods_per_year"])
    opts = store.option_results(int(run["run_id"]))
    base = opts[opts["option"] == "baseline"]
    payoff = 1.0
    if not base.empty:
        b = (base["metrics"].iloc[0] or {}).get("payoff_ratio")
        if b is not None and np.isfinite(b) and b > 0:
            payoff = float(b)
    cfg = BacktestConfig(**run["settings"].get("backtest", {}))
    return ppy, payoff, cfg


def training_prior(run: dict, train) -> np.ndarray | None:
    """The training label prior the run stored, else counted from ``train``'s labels; None without either."""
    from flagcore.pipeline.run import label_prior

    stored = run["summary"].get("label_prior")
    if stored is not None:
        return np.asarray(stored, dtype=np.float64)
    if train is not None and train.labels is not None:
        return label_prior(train.labels)
    return None


def shifted_inputs(store: Store | None, run_id: int | None, test, train) -> list[dict]:
    """The most shifted real inputs: PSI > ``SHIFT_PSI_MIN``, not padding, not all zero in training,
    largest PSI first, at most ``MAX_SHIFTED``; from the run's stored feature shift (recomputed
    when the run stored none, or without a store)."""
    rows = None if store is None or run_id is None else store.diagnostics(run_id).get("feature_shift")
    if rows is None and train is not None:
        from flagcore.analysis.diagnostics import feature_shift
        from flagcore.pipeline.run import input_names

        e = test.eval_index
        rows = feature_shift(
            train.features, test.features[e:], names=input_names(test), padded_inputs=test.padded_inputs
        )
    found = [
        {"input": int(r["input"]), "name": r["name"], "psi": float(r["psi"]), "ks": float(r["ks"])}
        for r in rows or []
        if not r["padding"] and not r["train_all_zero"] and (r["psi"] or 0.0) > SHIFT_PSI_MIN
    ]
    return sorted(found, key=lambda r: -r["psi"])[:MAX_SHIFTED]


def stored_logits(store: Store, run_id: int, period: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The baseline's stored logits and the bars' close over ``period``; None when not stored."""
    df = store.predictions(run_id, "baseline", period)
    if df.empty or df[list(LOGIT_COLUMNS)].isna().any().any():
        return None
    return df[list(LOGIT_COLUMNS)].to_numpy(np.float64), df["close"].to_numpy(np.float64)
