"""The measures of one ``flagcore explain``, taken on the model or, without one, on stored logits.

``pipeline.explain`` gathers the run's checked checkpoint and datasets and calls
:func:`measure_model` (every measure, store-free: the same code explains a run and a model handed
over directly, as the controls in tests/test_root_cause_controls.py do) or
:func:`measures_without_model` (the measures a run's stored logits allow). Each measure is what
``analysis.root_cause.Evidence`` holds; what cannot be measured goes into
``MeasureContext.missing`` with the reason.

The sample: every k-th evaluated bar from a seeded offset (``explain_inputs.sample_bars``); a
backtest of the sample holds each position for k bars, so it is annualised with
periods_per_year / k.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flagcore.analysis.root_cause_measures import attribution_summary, outcome, prior_check, sensitivity
from flagcore.errors import FlagcoreError
from flagcore.models.attribution import Fill
from flagcore.pipeline.explain_inputs import (
    SHIFT_PSI_MIN,
    median_fill,
    quantile_fill,
    resample_fill,
    sample_bars,
    shuffle_time,
    stored_logits,
)
from flagcore.pipeline.settings import Progress
from flagcore.store.store import Store

MIN_BARS = 20  # fewer sampled bars give no backtest worth the name
IN_SAMPLE_YEARS = 1.0  # the training period's last year


def check_settings(bars: int, seed: int, ig_windows: int, ig_steps: int) -> None:
    """Refuse a bad explain setting in one line naming it."""
    if isinstance(bars, bool) or not isinstance(bars, int) or bars < MIN_BARS:
        raise FlagcoreError(f"bars must be a whole number >= {MIN_BARS}, got {bars!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FlagcoreError(f"seed must be a whole number >= 0, got {seed!r}")
    if isinstance(ig_windows, bool) or not isinstance(ig_windows, int) or ig_windows < 0:
        raise FlagcoreError(f"ig_windows must be a whole number >= 0, got {ig_windows!r}")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 2:
        raise FlagcoreError(f"ig_steps must be a whole number >= 2, got {ig_steps!r}")


@dataclass
class MeasureContext:
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
    test_rows: np.ndarray | None = None  # the sampled evaluated bars, once inferred
    test_logits: np.ndarray | None = None  # (m, 3) their logits

    def outcome(self, logits: np.ndarray, close: np.ndarray, stride: int):
        return outcome(logits, close, self.ppy / stride, payoff=self.payoff, cfg=self.bt_cfg)

    def prior_check(self, logits: np.ndarray):
        return None if self.prior is None else prior_check(logits, self.prior)


def measures_without_model(store: Store, ctx: MeasureContext, why: str, has_padding: bool) -> dict[str, Any]:
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
class SampledWindows:
    """The sampled test windows, the network that infers them, and their bars' close."""

    net: Any
    windows: np.ndarray  # (m, W, D)
    close: np.ndarray  # (m,)
    stride: int  # the sample's k
    device: str | None

    def fill_outcome(self, ctx: MeasureContext, fill: Fill):
        """The outcome of the windows inferred after ``fill``."""
        from flagcore.models.attribution import counterfactual_logits

        logits = counterfactual_logits(self.net, self.windows, fill, device=self.device)
        return ctx.outcome(logits, self.close, self.stride)


def _padding_measures(
    ctx: MeasureContext, sw: SampledWindows, ev: dict, padded: list, medians: np.ndarray, train
) -> None:
    """The padded inputs filled with the training medians, and from resampled training rows."""
    if train is None:
        ctx.missing["padding_median"] = ctx.missing["padding_resample"] = "the run has no training data"
    elif not padded:
        ctx.missing["padding_median"] = ctx.missing["padding_resample"] = "the test data has no padded inputs"
    else:
        ev["padding_median"] = sw.fill_outcome(ctx, median_fill(padded, medians))
        ev["padding_resample"] = sw.fill_outcome(ctx, resample_fill(padded, train.features, ctx.seed))


def _shift_measures(
    ctx: MeasureContext, sw: SampledWindows, ev: dict, test, train, shifted: list[dict]
) -> None:
    """The most shifted real inputs (``shifted``, from ``explain_inputs.shifted_inputs``) quantile-mapped
    onto their training distribution."""
    if train is None:
        ctx.missing["shift"] = "the run has no training data"
        ev["shifted_inputs"] = []
        return
    ctx.checks["shifted_inputs"] = shifted
    ev["shifted_inputs"] = [r["name"] for r in shifted]
    if shifted:
        fill = quantile_fill([r["input"] for r in shifted], test.features[test.eval_index :], train.features)
        ev["shift"] = sw.fill_outcome(ctx, fill)
    else:  # nothing to map: the counterfactual is the test period itself ("no input shifted")
        ev["shift"] = ev["test"]
        ctx.checks["shift_note"] = f"no real input shifted by PSI > {SHIFT_PSI_MIN}: nothing was mapped"


def _attribution_measure(
    ctx: MeasureContext,
    sw: SampledWindows,
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


def _in_sample_measures(ctx: MeasureContext, sw: SampledWindows, ev: dict, train) -> None:
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


def measure_model(
    ctx: MeasureContext,
    model,
    test,
    train,
    shifted: list[dict],
    *,
    ig_windows: int,
    ig_steps: int,
    device,
    progress: Progress,
) -> dict[str, Any]:
    """Every measure of ``model`` on its evaluated data ``test`` and training data ``train`` (None:
    none), as Evidence fields; no store needed. ``shifted`` are the inputs the shift counterfactual
    maps (``explain_inputs.shifted_inputs``). Sets ``ctx.test_rows`` and ``ctx.test_logits``, and
    records in ``ctx.missing`` each measure it could not take and why."""
    from flagcore.models.attribution import bar_windows, inference_network, window_logits

    net = inference_network(model)
    W = net.config.window
    e = test.eval_index
    s = sample_bars(max(e, W - 1), test.n_bars, ctx.bars, ctx.seed)
    ctx.settings["test_sample"] = s.to_dict()
    sw = SampledWindows(net, bar_windows(test.features, s.rows, W), test.close[s.rows], s.stride, device)

    progress("explain: the test period", 0.1)
    logits = window_logits(net, sw.windows, device=device)
    ev: dict[str, Any] = {"test": ctx.outcome(logits, sw.close, s.stride), "prior": ctx.prior_check(logits)}
    ctx.test_rows, ctx.test_logits = s.rows, logits
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
    _shift_measures(ctx, sw, ev, test, train, shifted)

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
