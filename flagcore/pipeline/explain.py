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
  shift, at most ``explain_inputs.MAX_SHIFTED``) quantile-mapped onto their training distribution;
- **sensitivity**: logits for time-shuffled windows and for the constant training-median window
  against the real ones;
- **attribution**: integrated gradients of the logit gap (``models.attribution``) over
  ``ig_windows`` of the sampled windows, against the training-median window;
- **in sample**: the outcome and the prior check on the training period's last year.

``root_cause_verdicts`` turns them into one verdict per ``vocab.ROOT_CAUSES`` key; the result is
appended to the run (``Store.add_root_cause``) with the time it was computed and its settings.

The sample: every k-th evaluated bar from a seeded offset, k = (evaluated bars) // ``bars``
(every bar when ``bars`` is at least their number). A backtest of the sample holds each position
for k bars, so it is annualised with periods_per_year / k. What an explain reads (the checked
checkpoint and datasets, the run's stored figures) and the sampling and fills it measures with
live in ``pipeline.explain_inputs``; the measuring, store-free, in ``pipeline.explain_measures``;
this module holds the run's side, the verdicts and the result. :func:`explain_model` explains a
model handed over with its datasets, outside any run (nothing stored): the controls whose cause is
known (tests/test_root_cause_controls.py) go through it.

A run whose baseline is not a FLAG-TRADER checkpoint (a predictions file, a CGDT) gets the
measures that need no model, from its stored logits: the test outcome and prior check, and the
in-sample ones when the training period's logits were stored; ``missing`` says which are absent
and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flagcore.analysis.root_cause import Evidence, root_cause_verdicts
from flagcore.errors import FlagcoreError
from flagcore.models.attribution import IG_STEPS
from flagcore.pipeline.explain_inputs import (
    baseline_record,
    load_baseline,
    load_run_dataset,
    run_trading,
    shifted_inputs,
    stored_logits,
    training_prior,
)
from flagcore.pipeline.explain_measures import (
    MIN_BARS,
    MeasureContext,
    check_settings,
    measure_model,
    measures_without_model,
)
from flagcore.pipeline.settings import Progress, no_progress
from flagcore.store.codec import utc_now
from flagcore.store.store import Store

DEFAULT_BARS = 500
IG_WINDOWS = 64  # windows integrated gradients attribute (the costliest measure)
__all__ = [
    "DEFAULT_BARS",
    "IG_WINDOWS",
    "MEASURES",
    "MIN_BARS",
    "ExplainResult",
    "explain_model",
    "explain_run",
]

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


# ----------------------------------------------------------------------------- the result


@dataclass
class ExplainResult:
    """One ``flagcore explain``: the verdicts, the measures they read, what is missing and why."""

    run_id: int | None  # None: a model explained outside a run (explain_model)
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


# ----------------------------------------------------------------------------- with a store


def _with_model(
    store: Store,
    ctx: MeasureContext,
    model,
    test,
    train,
    *,
    ig_windows: int,
    ig_steps: int,
    device,
    progress: Progress,
) -> dict[str, Any]:
    """Every measure, inferring the sampled windows again with the checked checkpoint; the run's
    stored feature shift picks the inputs to map, and its stored logits are compared with these."""
    run_id = int(ctx.run["run_id"])
    shifted = [] if train is None else shifted_inputs(store, run_id, test, train)
    ev = measure_model(
        ctx,
        model,
        test,
        train,
        shifted,
        ig_windows=ig_windows,
        ig_steps=ig_steps,
        device=device,
        progress=progress,
    )
    stored = stored_logits(store, run_id, "test")
    e = test.eval_index
    if stored is not None and ctx.test_logits is not None and len(stored[0]) == test.n_bars - e:
        diff = np.abs(stored[0][ctx.test_rows - e] - ctx.test_logits).max()
        ctx.checks["stored_logits_max_diff"] = float(diff)
    return ev


def _gather(
    store: Store,
    run_id: int,
    rec: dict,
    ctx: MeasureContext,
    model_info: dict,
    *,
    ig_windows: int,
    ig_steps: int,
    device,
    progress: Progress,
) -> dict[str, Any]:
    """The measures: from the checked model when the baseline is a FLAG-TRADER checkpoint, else
    from the stored logits. Sets ``ctx.prior``, and ``model_info["checked"]`` once the checkpoint
    is loaded."""
    run = ctx.run
    if rec["kind"] != "flag-trader":
        ds_rec = store.dataset(run["dataset_id"]) or {}
        ctx.prior = training_prior(run, None)
        why = f"the baseline is a {rec['kind']} model, not a FLAG-TRADER checkpoint to infer again"
        return measures_without_model(store, ctx, why, bool(ds_rec.get("padded_inputs")))
    model = load_baseline(rec, run_id)
    model_info["checked"] = True
    state_dim = model.checkpoint_info.config.state_dim
    test = load_run_dataset(store, run, "dataset_id", "evaluated", state_dim)
    if test is None or test.close is None:
        raise FlagcoreError(f"{store.path}: run {run_id}'s evaluated dataset has no close prices")
    train = load_run_dataset(store, run, "train_dataset_id", "training", state_dim)
    ctx.prior = training_prior(run, train)
    return _with_model(
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


# ----------------------------------------------------------------------------- the commands


def _result(
    run_id: int | None, ctx: MeasureContext, found: dict, model_info: dict, t0: float
) -> ExplainResult:
    ev = Evidence(**found)
    return ExplainResult(
        run_id,
        utc_now().isoformat(),
        ctx.settings,
        root_cause_verdicts(ev),
        ev,
        {k: ctx.missing[k] for k in MEASURES if k in ctx.missing},
        model_info,
        ctx.checks,
        round(time.perf_counter() - t0, 2),
    )


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
    explain_inputs.CheckpointUnavailable : one line naming the checkpoint when it is gone or changed (the
        results stored earlier are untouched and still read back with ``Store.root_cause``).
    FlagcoreError : a bad setting, an unknown run, or a dataset that is gone or changed.
    """
    check_settings(bars, seed, ig_windows, ig_steps)
    t0 = time.perf_counter()
    run = store.run(run_id)
    rec = baseline_record(store, run_id)
    progress("explain: loading", 0.0)
    ppy, payoff, bt_cfg = run_trading(store, run)
    settings: dict[str, Any] = {"bars": bars, "seed": seed, "ig_windows": ig_windows, "ig_steps": ig_steps}
    model_info = {"model_id": rec["model_id"], "kind": rec["kind"], "source": rec["source"], "checked": False}
    ctx = MeasureContext(run, ppy, payoff, bt_cfg, None, seed, bars, settings=settings)
    found = _gather(
        store,
        run_id,
        rec,
        ctx,
        model_info,
        ig_windows=ig_windows,
        ig_steps=ig_steps,
        device=device,
        progress=progress,
    )
    progress("explain: verdicts", 0.95)
    result = _result(int(run_id), ctx, found, model_info, t0)
    if save:
        store.add_root_cause(run_id, result.to_dict())
    progress("explain: done", 1.0)
    return result


def explain_model(
    model,
    test,
    train=None,
    *,
    prior=None,
    periods_per_year: float | None = None,
    payoff: float = 1.0,
    bars: int = DEFAULT_BARS,
    seed: int = 0,
    ig_windows: int = IG_WINDOWS,
    ig_steps: int = IG_STEPS,
    device: str | None = None,
    progress: Progress = no_progress,
) -> ExplainResult:
    """Explain a model on its datasets directly, outside a run: the measures and verdicts of
    :func:`explain_run`, stored nowhere (``run_id`` None).

    For models whose cause is known (the controls of tests/test_root_cause_controls.py) and for a
    model not evaluated yet. The shifted inputs are computed from the two datasets (PSI > 0.25).

    Parameters
    ----------
    model : a FLAG-TRADER (a checkpoint's model, a trained ``PeftModel`` or a plain network).
    test : data.dataset.Dataset
        The evaluated data, with close prices; bars before its ``eval_index`` are history only.
    train : data.dataset.Dataset, optional
        The training data: the fills, the shift and the in-sample measures need it.
    prior : array_like, shape (3,), optional
        The training label prior (default: counted from ``train``'s labels).
    periods_per_year : float, optional
        Default: ``test``'s calendar.
    payoff : float
        Kelly payoff ratio of the backtests (1: a fair bet).
    bars, seed, ig_windows, ig_steps, device, progress
        As for :func:`explain_run`.
    """
    from flagcore.analysis.backtest import BacktestConfig
    from flagcore.models.flag_trader import base_network

    check_settings(bars, seed, ig_windows, ig_steps)
    if test.close is None:
        raise FlagcoreError(f"{test.source}: the evaluated data has no close prices")
    width = base_network(model).config.state_dim
    for ds in (test, train):
        if ds is not None and ds.state_dim != width:
            raise FlagcoreError(f"{ds.source}: {ds.state_dim} inputs per bar, the model takes {width}")
    t0 = time.perf_counter()
    ppy = float(periods_per_year if periods_per_year is not None else test.periods_per_year)
    p = training_prior({"summary": {"label_prior": prior}}, train)
    settings: dict[str, Any] = {"bars": bars, "seed": seed, "ig_windows": ig_windows, "ig_steps": ig_steps}
    ctx = MeasureContext({"run_id": None}, ppy, payoff, BacktestConfig(), p, seed, bars, settings=settings)
    shifted = [] if train is None else shifted_inputs(None, None, test, train)
    found = measure_model(
        ctx,
        model,
        test,
        train,
        shifted,
        ig_windows=ig_windows,
        ig_steps=ig_steps,
        device=device,
        progress=progress,
    )
    return _result(None, ctx, found, {"kind": "flag-trader", "source": test.source, "checked": False}, t0)
