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
live in ``pipeline.explain_inputs``; this module holds the measuring, the verdicts and the result.

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
from flagcore.analysis.root_cause_measures import attribution_summary, outcome, prior_check, sensitivity
from flagcore.errors import FlagcoreError
from flagcore.models.attribution import IG_STEPS, Fill
from flagcore.pipeline.explain_inputs import (
    SHIFT_PSI_MIN,
    baseline_record,
    load_baseline,
    load_run_dataset,
    median_fill,
    quantile_fill,
    resample_fill,
    run_trading,
    sample_bars,
    shifted_inputs,
    shuffle_time,
    stored_logits,
    training_prior,
)
from flagcore.pipeline.settings import Progress, no_progress
from flagcore.store.codec import utc_now
from flagcore.store.store import Store

DEFAULT_BARS = 500
MIN_BARS = 20  # fewer sampled bars give no backtest worth the name
IG_WINDOWS = 64  # windows integrated gradients attribute (the costliest measure)
IN_SAMPLE_YEARS = 1.0  # the training period's last year

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
    prior: np.ndarray | None  # the training label prior, set once the training data is loaded
    seed: int
    bars: int
    missing: dict[str, str] = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def outcome(self, logits: np.ndarray, close: np.ndarray, stride: int):
        return outcome(logits, close, self.ppy / stride, payoff=self.payoff, cfg=self.bt_cfg)

    def prior_check(self, logits: np.ndarray):
        return None if self.prior is None else prior_check(logits, self.prior)


def _without_model(store: Store, ctx: _Context, why: str, has_padding: bool) -> dict[str, Any]:
    """The measures that need no model, from the run's stored logits."""
    run_id = int(ctx.run["run_id"])
    test = stored_logits(store, run_id, "test")
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
    train = stored_logits(store, run_id, "train")
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


@dataclass
class _Sampled:
    """The sampled test windows, the network that infers them, and their bars' close."""

    net: Any
    windows: np.ndarray  # (m, W, D)
    close: np.ndarray  # (m,)
    stride: int  # the sample's k
    device: str | None

    def fill_outcome(self, ctx: _Context, fill: Fill):
        """The outcome of the windows inferred after ``fill``."""
        from flagcore.models.attribution import counterfactual_logits

        logits = counterfactual_logits(self.net, self.windows, fill, device=self.device)
        return ctx.outcome(logits, self.close, self.stride)


def _padding_measures(
    ctx: _Context, sw: _Sampled, ev: dict, padded: list, medians: np.ndarray, train
) -> None:
    """The padded inputs filled with the training medians, and from resampled training rows."""
    if train is None:
        ctx.missing["padding_median"] = ctx.missing["padding_resample"] = "the run has no training data"
    elif not padded:
        ctx.missing["padding_median"] = ctx.missing["padding_resample"] = "the test data has no padded inputs"
    else:
        ev["padding_median"] = sw.fill_outcome(ctx, median_fill(padded, medians))
        ev["padding_resample"] = sw.fill_outcome(ctx, resample_fill(padded, train.features, ctx.seed))


def _shift_measures(store: Store, ctx: _Context, sw: _Sampled, ev: dict, test, train) -> None:
    """The most shifted real inputs quantile-mapped onto their training distribution."""
    if train is None:
        ctx.missing["shift"] = "the run has no training data"
        ev["shifted_inputs"] = []
        return
    shifted = shifted_inputs(store, int(ctx.run["run_id"]), test, train)
    ctx.checks["shifted_inputs"] = shifted
    ev["shifted_inputs"] = [r["name"] for r in shifted]
    if shifted:
        fill = quantile_fill([r["input"] for r in shifted], test.features[test.eval_index :], train.features)
        ev["shift"] = sw.fill_outcome(ctx, fill)
    else:  # nothing to map: the counterfactual is the test period itself, and removes nothing
        ev["shift"] = ev["test"]
        ctx.checks["shift_note"] = f"no real input shifted by PSI > {SHIFT_PSI_MIN}: nothing was mapped"


def _attribution_measure(
    ctx: _Context,
    sw: _Sampled,
    ev: dict,
    base_window: np.ndarray,
    test,
    padded: list,
    *,
    ig_windows: int,
    ig_steps: int,
) -> None:
    """Integrated gradients of the logit gap over ``ig_windows`` of the sampled windows."""
    from flagcore.models.attribution import integrated_gradients
    from flagcore.pipeline.run import input_names

    if ig_windows == 0:
        ctx.missing["attribution"] = "switched off (ig_windows 0)"
        return
    windows = sw.windows
    pick = np.unique(np.linspace(0, len(windows) - 1, min(ig_windows, len(windows))).round().astype(int))
    ig = integrated_gradients(sw.net, windows[pick], base_window, n_steps=ig_steps, device=sw.device)
    ctx.checks["integrated_gradients"] = ig.to_dict()
    ev["attribution"] = attribution_summary(
        ig.abs_attributions.sum(axis=0), input_names(test), padded, ig.completeness_error()
    )


def _in_sample_measures(ctx: _Context, sw: _Sampled, ev: dict, train) -> None:
    """The outcome and the prior check on the training period's last year."""
    from flagcore.models.attribution import bar_windows, window_logits

    if train is None:
        ctx.missing["in_sample"] = ctx.missing["in_sample_prior"] = "the run has no training data"
        return
    if train.close is None:
        ctx.missing["in_sample"] = "the training data has no close prices"
        return
    W = sw.net.config.window
    year = max(1, round(ctx.ppy * IN_SAMPLE_YEARS))
    t = sample_bars(max(W - 1, train.n_bars - year), train.n_bars, ctx.bars, ctx.seed)
    ctx.settings["in_sample_sample"] = t.to_dict()
    tl = window_logits(sw.net, bar_windows(train.features, t.rows, W), device=sw.device)
    ev["in_sample"] = ctx.outcome(tl, train.close[t.rows], t.stride)
    ev["in_sample_prior"] = ctx.prior_check(tl)
    if ctx.prior is None:
        ctx.missing["in_sample_prior"] = "the run records no training label prior"


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
    from flagcore.models.attribution import bar_windows, inference_network, window_logits

    net = inference_network(model)
    W = net.config.window
    e = test.eval_index
    s = sample_bars(max(e, W - 1), test.n_bars, ctx.bars, ctx.seed)
    ctx.settings["test_sample"] = s.to_dict()
    sw = _Sampled(net, bar_windows(test.features, s.rows, W), test.close[s.rows], s.stride, device)

    progress("explain: the test period", 0.1)
    logits = window_logits(net, sw.windows, device=device)
    stored = stored_logits(store, int(ctx.run["run_id"]), "test")
    if stored is not None and len(stored[0]) == test.n_bars - e:
        ctx.checks["stored_logits_max_diff"] = float(np.abs(stored[0][s.rows - e] - logits).max())
    ev: dict[str, Any] = {"test": ctx.outcome(logits, sw.close, s.stride), "prior": ctx.prior_check(logits)}
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

    progress("explain: padding counterfactual", 0.25)
    _padding_measures(ctx, sw, ev, padded, medians, train)
    progress("explain: shift counterfactual", 0.4)
    _shift_measures(store, ctx, sw, ev, test, train)

    progress("explain: sensitivity", 0.5)
    base_window = np.tile(medians, (W, 1))  # (W, D): the constant input, the training medians
    shuffled = window_logits(net, shuffle_time(sw.windows, ctx.seed), device=device)
    constant = window_logits(net, base_window[None], device=device)  # (1, 3): one constant window
    ev["sensitivity"] = sensitivity(logits, shuffled, constant)

    progress("explain: integrated gradients", 0.6)
    _attribution_measure(ctx, sw, ev, base_window, test, padded, ig_windows=ig_windows, ig_steps=ig_steps)
    progress("explain: the training period's last year", 0.85)
    _in_sample_measures(ctx, sw, ev, train)
    return ev


def _gather(
    store: Store,
    run_id: int,
    rec: dict,
    ctx: _Context,
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
        return _without_model(store, ctx, why, bool(ds_rec.get("padded_inputs")))
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
    explain_inputs.CheckpointUnavailable : one line naming the checkpoint when it is gone or changed (the
        results stored earlier are untouched and still read back with ``Store.root_cause``).
    FlagcoreError : a bad setting, an unknown run, or a dataset that is gone or changed.
    """
    _check_settings(bars, seed, ig_windows, ig_steps)
    t0 = time.perf_counter()
    run = store.run(run_id)
    rec = baseline_record(store, run_id)
    progress("explain: loading", 0.0)
    ppy, payoff, bt_cfg = run_trading(store, run)
    settings: dict[str, Any] = {"bars": bars, "seed": seed, "ig_windows": ig_windows, "ig_steps": ig_steps}
    model_info = {"model_id": rec["model_id"], "kind": rec["kind"], "source": rec["source"], "checked": False}
    ctx = _Context(run, ppy, payoff, bt_cfg, None, seed, bars, settings=settings)
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
