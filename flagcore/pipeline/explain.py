"""``flagcore explain``: why a run's baseline collapsed, each suspected cause tested on the model.

:func:`explain_run` reloads the run's baseline checkpoint (refused in one line when the file is
gone or its sha256 no longer matches the stored model id), its evaluated and training datasets
(content hashes checked), samples evaluated bars, and measures what ``analysis.root_cause``
judges (../shared/reference/root-cause.md):

- **test**: the outcome on the sample (action shares, confidence, trades, Sharpe, collapse) and
  the prior check (mean logit gaps against the training label prior's log ratios);
- **padding**: the padded inputs (zero at test time) filled from the training period, with the
  per-feature medians and with whole training rows (a random stretch of W consecutive training
  bars per window, so the filled inputs keep their joint structure and their structure in time);
- **shift**: the most shifted real inputs (PSI > ``SHIFT_PSI_MIN`` in the run's stored feature
  shift, at most ``MAX_SHIFTED``) quantile-mapped onto their training distribution;
- **sensitivity**: logits for time-shuffled windows and for the constant training-median window
  against the real ones;
- **attribution**: integrated gradients of the logit gap (``models.attribution``) over
  ``ig_windows`` of the sampled windows, against the training-median window;
- **in sample**: the outcome and the prior check on the training period's last year.

``root_cause_verdicts`` turns them into one verdict per ``vocab.ROOT_CAUSES`` key; the result is
appended to the run (``Store.add_root_cause``) with the time it was computed and its settings.

The sample: every k-th evaluated bar from a seeded offset, k = (evaluated bars) // ``bars``
(every bar when ``bars`` is at least their number). A backtest of the sample holds each position
for k bars, so it is annualised with periods_per_year / k. The fills and the sampling are plain
functions (:func:`sample_bars`, :func:`median_fill`, :func:`resample_fill`, :func:`quantile_fill`,
:func:`shuffle_time`) that ``models.attribution.counterfactual_logits`` takes, for the live
ablation on the page.

A run whose baseline is not a FLAG-TRADER checkpoint (a predictions file, a CGDT) gets the
measures that need no model, from its stored logits: the test outcome and prior check, and the
in-sample ones when the training period's logits were stored; ``missing`` says which are absent
and why.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flagcore.analysis.root_cause import (
    Evidence,
    attribution_summary,
    outcome,
    prior_check,
    root_cause_verdicts,
    sensitivity,
)
from flagcore.errors import FlagcoreError
from flagcore.models.attribution import IG_STEPS, Fill
from flagcore.pipeline.settings import Progress, no_progress
from flagcore.store.codec import utc_now
from flagcore.store.store import Store
from flagcore.vocab import LOGIT_COLUMNS

DEFAULT_BARS = 500
MIN_BARS = 20  # fewer sampled bars give no backtest worth the name
IG_WINDOWS = 64  # windows integrated gradients attribute (the costliest measure)
SHIFT_PSI_MIN = 0.25  # PSI above which an input counts as shifted (the "major" band)
MAX_SHIFTED = 10  # the most shifted inputs mapped onto their training distribution
IN_SAMPLE_YEARS = 1.0  # the training period's last year
QUANTILE_POINTS = 1001  # probability grid of the quantile mapping

# the measures an explain computes, in the order the CLI prints them
MEASURES = (
    "test",
    "prior",
    "padding_median",
    "padding_resample",
    "shift",
    "sensitivity",
    "attribution",
    "in_sample",
    "in_sample_prior",
)


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


# ----------------------------------------------------------------------------- the result


@dataclass
class ExplainResult:
    """One ``flagcore explain``: the verdicts, the measures they read, what is missing and why."""

    run_id: int
    computed_at: str  # ISO 8601, UTC
    settings: dict  # bars, seed, ig_windows, ig_steps, the samples, the reference period
    verdicts: list  # analysis.root_cause.CauseVerdict, one per vocab.ROOT_CAUSES key
    evidence: Evidence
    missing: dict[str, str] = field(default_factory=dict)  # measure -> why it is absent
    model: dict = field(default_factory=dict)  # model_id, kind, source, checked
    checks: dict = field(default_factory=dict)  # consistency and extra figures
    seconds: float = 0.0

    def measures(self) -> dict[str, Any]:
        """Each measure of ``MEASURES`` as a dict (None when missing), and the shifted inputs."""
        ev = self.evidence
        out: dict[str, Any] = {}
        for k in MEASURES:
            v = getattr(ev, k, None)
            out[k] = None if v is None else v.to_dict()
        out["shifted_inputs"] = list(ev.shifted_inputs or [])
        out["has_padding"] = bool(ev.has_padding)
        return out

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "computed_at": self.computed_at,
            "settings": self.settings,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "measures": self.measures(),
            "missing": dict(self.missing),
            "model": self.model,
            "checks": self.checks,
            "seconds": self.seconds,
        }


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


def _run_trading(store: Store, run: dict) -> tuple[float, float, Any]:
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


def _prior(run: dict, train) -> np.ndarray | None:
    from flagcore.pipeline.run import label_prior

    stored = run["summary"].get("label_prior")
    if stored is not None:
        return np.asarray(stored, dtype=np.float64)
    if train is not None and train.labels is not None:
        return label_prior(train.labels)
    return None


def shifted_inputs(store: Store, run_id: int, test, train) -> list[dict]:
    """The most shifted real inputs: PSI > ``SHIFT_PSI_MIN``, not padding, not all zero in training,
    largest PSI first, at most ``MAX_SHIFTED``; from the run's stored feature shift (recomputed
    when the run stored none)."""
    rows = store.diagnostics(run_id).get("feature_shift")
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


# ----------------------------------------------------------------------------- the measures


def _check_settings(bars: int, seed: int, ig_windows: int, ig_steps: int) -> None:
    if isinstance(bars, bool) or not isinstance(bars, int) or bars < MIN_BARS:
        raise FlagcoreError(f"bars must be a whole number >= {MIN_BARS}, got {bars!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FlagcoreError(f"seed must be a whole number >= 0, got {seed!r}")
    if isinstance(ig_windows, bool) or not isinstance(ig_windows, int) or ig_windows < 0:
        raise FlagcoreError(f"ig_windows must be a whole number >= 0, got {ig_windows!r}")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 2:
        raise FlagcoreError(f"ig_steps must be a whole number >= 2, got {ig_steps!r}")


@dataclass
class _Context:
    """What every measure of one explain reads."""

    run: dict
    ppy: float
    payoff: float
    bt_cfg: Any
    prior: np.ndarray | None
    seed: int
    bars: int
    missing: dict[str, str] = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def outcome(self, logits: np.ndarray, close: np.ndarray, stride: int):
        return outcome(logits, close, self.ppy / stride, payoff=self.payoff, cfg=self.bt_cfg)

    def prior_check(self, logits: np.ndarray):
        return None if self.prior is None else prior_check(logits, self.prior)


def _stored_logits(store: Store, run_id: int, period: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The baseline's stored logits and the bars' close over ``period``; None when not stored."""
    df = store.predictions(run_id, "baseline", period)
    if df.empty or df[list(LOGIT_COLUMNS)].isna().any().any():
        return None
    return df[list(LOGIT_COLUMNS)].to_numpy(np.float64), df["close"].to_numpy(np.float64)


def _without_model(store: Store, ctx: _Context, why: str, has_padding: bool) -> dict[str, Any]:
    """The measures that need no model, from the run's stored logits."""
    run_id = int(ctx.run["run_id"])
    test = _stored_logits(store, run_id, "test")
    if test is None:
        raise FlagcoreError(f"{store.path}: run {run_id} stored no baseline logits over the test period")
    s = sample_bars(0, len(test[0]), ctx.bars, ctx.seed)
    ctx.settings["test_sample"] = s.to_dict()
    lg = test[0][s.rows]
    ev: dict[str, Any] = {
        "test": ctx.outcome(lg, test[1][s.rows], s.stride),
        "prior": ctx.prior_check(lg),
        "has_padding": has_padding,
    }
    for k in ("padding_median", "padding_resample", "shift", "sensitivity", "attribution"):
        ctx.missing[k] = why
    train = _stored_logits(store, run_id, "train")
    if train is None:
        ctx.missing["in_sample"] = ctx.missing["in_sample_prior"] = "the run stored no training-period logits"
    else:
        t = sample_bars(0, len(train[0]), ctx.bars, ctx.seed)
        ctx.settings["in_sample_sample"] = t.to_dict()
        ev["in_sample"] = ctx.outcome(train[0][t.rows], train[1][t.rows], t.stride)
        ev["in_sample_prior"] = ctx.prior_check(train[0][t.rows])
    if ctx.prior is None:
        ctx.missing["prior"] = ctx.missing["in_sample_prior"] = "the run records no training label prior"
    return ev


def _with_model(
    store: Store,
    ctx: _Context,
    model,
    test,
    train,
    *,
    ig_windows: int,
    ig_steps: int,
    device,
    progress: Progress,
) -> dict[str, Any]:
    """Every measure, inferring the sampled windows again with the checked checkpoint."""
    from flagcore.models.attribution import (
        bar_windows,
        counterfactual_logits,
        inference_network,
        integrated_gradients,
        window_logits,
    )
    from flagcore.pipeline.run import input_names

    run_id = int(ctx.run["run_id"])
    net = inference_network(model)
    W = net.config.window
    e = test.eval_index
    s = sample_bars(max(e, W - 1), test.n_bars, ctx.bars, ctx.seed)
    ctx.settings["test_sample"] = s.to_dict()
    windows = bar_windows(test.features, s.rows, W)  # (m, W, D)
    close = test.close[s.rows]

    progress("explain: the test period", 0.1)
    logits = window_logits(net, windows, device=device)
    stored = _stored_logits(store, run_id, "test")
    if stored is not None and len(stored[0]) == test.n_bars - e:
        ctx.checks["stored_logits_max_diff"] = float(np.abs(stored[0][s.rows - e] - logits).max())
    ev: dict[str, Any] = {"test": ctx.outcome(logits, close, s.stride), "prior": ctx.prior_check(logits)}
    if ctx.prior is None:
        ctx.missing["prior"] = "the run records no training label prior"

    padded = list(test.padded_inputs)
    ref = train if train is not None else test
    medians = np.median(ref.features, axis=0).astype(np.float32)  # (D,)
    ctx.settings["reference"] = "training period" if train is not None else "test period (no training data)"
    with_data = [j for j in padded if train is not None and bool(train.features[:, j].any())]
    ev["has_padding"] = bool(padded) if train is None else bool(with_data)
    ctx.checks["padded_inputs"] = padded
    ctx.checks["padded_with_training_data"] = with_data

    def fill_outcome(fill: Fill):
        return ctx.outcome(counterfactual_logits(net, windows, fill, device=device), close, s.stride)

    progress("explain: padding counterfactual", 0.25)
    if train is None:
        ctx.missing["padding_median"] = ctx.missing["padding_resample"] = "the run has no training data"
    elif not padded:
        ctx.missing["padding_median"] = ctx.missing["padding_resample"] = "the test data has no padded inputs"
    else:
        ev["padding_median"] = fill_outcome(median_fill(padded, medians))
        ev["padding_resample"] = fill_outcome(resample_fill(padded, train.features, ctx.seed))

    progress("explain: shift counterfactual", 0.4)
    if train is None:
        ctx.missing["shift"] = "the run has no training data"
        ev["shifted_inputs"] = []
    else:
        shifted = shifted_inputs(store, run_id, test, train)
        ctx.checks["shifted_inputs"] = shifted
        ev["shifted_inputs"] = [r["name"] for r in shifted]
        if shifted:
            fill = quantile_fill([r["input"] for r in shifted], test.features[e:], train.features)
            ev["shift"] = fill_outcome(fill)
        else:  # nothing to map: the counterfactual is the test period itself, and removes nothing
            ev["shift"] = ev["test"]
            ctx.checks["shift_note"] = f"no real input shifted by PSI > {SHIFT_PSI_MIN}: nothing was mapped"

    progress("explain: sensitivity", 0.5)
    base_window = np.tile(medians, (W, 1))  # (W, D): the constant input, the training medians
    shuffled = window_logits(net, shuffle_time(windows, ctx.seed), device=device)
    constant = window_logits(net, base_window[None], device=device)  # (1, 3): one constant window
    ev["sensitivity"] = sensitivity(logits, shuffled, constant)

    progress("explain: integrated gradients", 0.6)
    if ig_windows == 0:
        ctx.missing["attribution"] = "switched off (ig_windows 0)"
    else:
        pick = np.unique(np.linspace(0, len(windows) - 1, min(ig_windows, len(windows))).round().astype(int))
        ig = integrated_gradients(net, windows[pick], base_window, n_steps=ig_steps, device=device)
        ctx.checks["integrated_gradients"] = ig.to_dict()
        ev["attribution"] = attribution_summary(
            ig.abs_attributions.sum(axis=0), input_names(test), padded, ig.completeness_error()
        )

    progress("explain: the training period's last year", 0.85)
    if train is None:
        ctx.missing["in_sample"] = ctx.missing["in_sample_prior"] = "the run has no training data"
    elif train.close is None:
        ctx.missing["in_sample"] = "the training data has no close prices"
    else:
        year = max(1, round(ctx.ppy * IN_SAMPLE_YEARS))
        t = sample_bars(max(W - 1, train.n_bars - year), train.n_bars, ctx.bars, ctx.seed)
        ctx.settings["in_sample_sample"] = t.to_dict()
        tl = window_logits(net, bar_windows(train.features, t.rows, W), device=device)
        ev["in_sample"] = ctx.outcome(tl, train.close[t.rows], t.stride)
        ev["in_sample_prior"] = ctx.prior_check(tl)
        if ctx.prior is None:
            ctx.missing["in_sample_prior"] = "the run records no training label prior"
    return ev


# ----------------------------------------------------------------------------- the command


def explain_run(
    store: Store,
    run_id: int,
    *,
    bars: int = DEFAULT_BARS,
    seed: int = 0,
    ig_windows: int = IG_WINDOWS,
    ig_steps: int = IG_STEPS,
    device: str | None = None,
    save: bool = True,
    progress: Progress = no_progress,
) -> ExplainResult:
    """Test each suspected cause of the baseline's collapse on the model; append the result to the run.

    Parameters
    ----------
    store : Store
    run_id : int
    bars : int
        Evaluated bars sampled (module docstring); the training period's last year is sampled alike.
    seed : int
        Fixes the sample's offset, the resampled training rows and the time shuffles.
    ig_windows, ig_steps : int
        Windows that integrated gradients attributes (0: none), and its integration points.
    device : str, optional
        cpu or cuda (default: cuda when available).
    save : bool
        Append the result to the run (``Store.add_root_cause``).

    Raises
    ------
    CheckpointUnavailable : one line naming the checkpoint when it is gone or changed (the
        results stored earlier are untouched and still read back with ``Store.root_cause``).
    FlagcoreError : a bad setting, an unknown run, or a dataset that is gone or changed.
    """
    _check_settings(bars, seed, ig_windows, ig_steps)
    t0 = time.perf_counter()
    run = store.run(run_id)
    rec = baseline_record(store, run_id)
    progress("explain: loading", 0.0)
    ppy, payoff, bt_cfg = _run_trading(store, run)
    settings: dict[str, Any] = {"bars": bars, "seed": seed, "ig_windows": ig_windows, "ig_steps": ig_steps}
    model_info = {"model_id": rec["model_id"], "kind": rec["kind"], "source": rec["source"], "checked": False}
    if rec["kind"] != "flag-trader":
        ds_rec = store.dataset(run["dataset_id"]) or {}
        ctx = _Context(run, ppy, payoff, bt_cfg, _prior(run, None), seed, bars, settings=settings)
        why = f"the baseline is a {rec['kind']} model, not a FLAG-TRADER checkpoint to infer again"
        found = _without_model(store, ctx, why, bool(ds_rec.get("padded_inputs")))
    else:
        model = load_baseline(rec, run_id)
        model_info["checked"] = True
        state_dim = model.checkpoint_info.config.state_dim
        test = load_run_dataset(store, run, "dataset_id", "evaluated", state_dim)
        if test is None or test.close is None:
            raise FlagcoreError(f"{store.path}: run {run_id}'s evaluated dataset has no close prices")
        train = load_run_dataset(store, run, "train_dataset_id", "training", state_dim)
        ctx = _Context(run, ppy, payoff, bt_cfg, _prior(run, train), seed, bars, settings=settings)
        found = _with_model(
            store,
            ctx,
            model,
            test,
            train,
            ig_windows=ig_windows,
            ig_steps=ig_steps,
            device=device,
            progress=progress,
        )
    progress("explain: verdicts", 0.95)
    ev = Evidence(**found)
    result = ExplainResult(
        int(run_id),
        utc_now().isoformat(),
        settings,
        root_cause_verdicts(ev),
        ev,
        {k: ctx.missing[k] for k in MEASURES if k in ctx.missing},
        model_info,
        ctx.checks,
        round(time.perf_counter() - t0, 2),
    )
    if save:
        store.add_root_cause(run_id, result.to_dict())
    progress("explain: done", 1.0)
    return result
