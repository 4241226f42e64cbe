"""All the numbers of one run, from logits already computed: pure computation, no store.

:func:`compute_run` takes every model's logits (``inference_cache.ModelLogits``) and computes each
option on the test period, the HOLD-threshold and tau sweeps, the trials the deflated Sharpe
counts, each option's validation (post-hoc CPCV, the permutation test, the HIFA verdict), the
diagnostics and the bars: a :class:`RunResult`, ready to be turned into the store's rows
(``pipeline.records``).

Trials for the deflated Sharpe: every option evaluated (the perfect-foresight labels excepted:
they are an upper bound, not a candidate) plus every other value of the HOLD threshold and of the
logit-adjustment tau in the stored sweeps. Each counts once in ``n_trials``, and their Sharpe
ratios give the trial variance.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flagcore.analysis.backtest import BacktestConfig, simple_returns
from flagcore.analysis.pbo import PBOResult
from flagcore.analysis.remedies import PeriodInputs
from flagcore.analysis.sharpe import sharpe_ratio
from flagcore.errors import FlagcoreError
from flagcore.pipeline.inference_cache import ModelLogits
from flagcore.pipeline.payoff_sample import PayoffSample, payoff_period, period_bars
from flagcore.pipeline.payoff_sample import recent as recent  # where evaluate and benchmarks find it
from flagcore.pipeline.settings import EvaluateSettings, Progress, no_progress
from flagcore.store.codec import to_json
from flagcore.vocab import LABELS_OPTION, N_CLASSES, NOT_A_TRIAL, TAU_OPTION, THRESHOLD_OPTION


@dataclass
class RunResult:
    """Everything one run computed, ready for the store."""

    name: str
    settings: dict
    summary: dict
    models: dict[str, ModelLogits]
    test_bars: pd.DataFrame
    train_bars: pd.DataFrame | None
    options: dict  # option -> compare_options result with "hifa", "cpcv", "permutation"
    diagnostics: dict  # option -> section -> value
    sweeps: pd.DataFrame
    dataset_records: list[dict]
    request_key: str
    baseline_train_logits: np.ndarray | None
    author: str | None = None  # who asked for the run (EvaluateSettings.author; not in the request key)


@dataclass
class Sweeps:
    """The HOLD-threshold and tau sweeps: their stored rows and each value's per-bar returns."""

    rows: list[dict]
    threshold_returns: np.ndarray  # (len(thresholds), T)
    threshold_positions: np.ndarray  # (len(thresholds), T): the position held over each period
    tau_returns: np.ndarray | None  # (len(taus), T); None without the logit-adjustment option
    tau_positions: np.ndarray | None


@dataclass
class Trials:
    """The trials the deflated Sharpe counts, and the probability of backtest overfitting over them."""

    tried: int  # every candidate, repeats included
    n_trials: int  # distinct return series
    sharpes: np.ndarray  # (n_trials,) per-period Sharpe ratios
    pbo: PBOResult


def label_prior(labels) -> np.ndarray | None:
    """Class shares of the resolved labels (floored at 1e-6): the prior that logit adjustment divides out."""
    y = np.asarray(labels)
    known = y[y >= 0]
    if known.size == 0:
        return None
    return np.maximum(np.bincount(known, minlength=N_CLASSES) / known.size, 1e-6)


def request_key(models: dict[str, ModelLogits], test, train, partner, settings: EvaluateSettings) -> str:
    """What a run was asked to compute, hashed: the same models, data, settings and flagcore version
    give the same key, so a repeated request can reuse the stored run."""
    from flagcore import __version__

    parts = {
        "models": {r: m.model_id for r, m in sorted(models.items())},
        "test": test.content_hash,
        "train": None if train is None else train.content_hash,
        "partner": None if partner is None else partner.model_id,
        "settings": settings.to_dict(),
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def input_names(ds) -> list[str]:
    """The model's input names: the dataset's features, then its padding inputs."""
    return list(ds.feature_names) + [f"padding_{j}" for j in ds.padded_inputs]


def dataset_record(ds) -> dict:
    """A row of the store's ``datasets`` table (``created_at`` is added when it is written)."""
    e = ds.eval_index
    return {
        "dataset_id": ds.content_hash,
        "source": ds.source,
        "bars": ds.n_bars,
        "evaluated_bars": ds.n_bars - e,
        "features": ds.n_features,
        "state_dim": ds.state_dim,
        "feature_names": to_json(ds.feature_names),
        "padded_inputs": to_json(ds.padded_inputs),
        "label_horizon": ds.label_horizon,
        "label_shares": to_json(ds.label_shares()),
        "first_timestamp": ds.timestamps[0],
        "last_timestamp": ds.timestamps[-1],
        "evaluation_start": ds.timestamps[e] if e < ds.n_bars else None,
    }


# ----------------------------------------------------------------------------- the pieces of a run


def period_inputs(
    models: dict[str, ModelLogits],
    ds,
    period: str,
    partner: ModelLogits | None,
    periods_per_year: float,
    sample: PayoffSample | None = None,
) -> PeriodInputs | None:
    """What every option is computed from over ``period`` ("test" or "train") of dataset ``ds``;
    None for the training period when the baseline has no logits there. ``periods_per_year`` is the
    market's calendar (the evaluated dataset's, or the user's override), the same for both periods.
    With a payoff ``sample`` (``ds`` its dataset) the training period is the sampled bars, in blocks."""
    if period == "test":
        logits = {r: m.test for r, m in models.items()}
    else:
        if any(m.train is None for r, m in models.items() if r == "baseline"):
            return None
        logits = {r: m.train for r, m in models.items() if m.train is not None}
    # the training stretch starts after its lead-in of history too; a sample keeps its blocks' bars
    sl = slice(ds.eval_index, None) if sample is None else ds.eval_index + sample.rows
    if ds.close is None:
        raise FlagcoreError(f"{ds.source}: needs a 'close' column to backtest")
    out = PeriodInputs(
        logits, None if ds.labels is None else ds.labels[sl], ds.close[sl], float(periods_per_year)
    )
    if sample is not None:
        out.block_starts, out.sample = sample.block_starts, sample.source
    if partner is not None:
        x = partner.test if period == "test" else partner.train
        if x is not None:
            out.partner_actions = x.argmax(1).astype(np.int8)
            if partner.probs_given:
                from flagcore.analysis.diagnostics import softmax

                out.partner_probs = softmax(x)
    return out


def sweep(
    test: PeriodInputs,
    train: PeriodInputs | None,
    cfg: BacktestConfig,
    option: str,
    param: str,
    grid,
    base_kw,
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """One option computed at every value of ``param`` in ``grid``: the sweep's rows, and the
    per-period returns and held positions of each value, one row per value."""
    from flagcore.analysis.remedies import compare_options

    rows, returns, held = [], [], []
    for v in grid:
        kw = dict(base_kw)
        kw[param] = v
        r = compare_options(test, train, cfg=cfg, options=[option], **kw)[option]
        bt = r["backtest"]
        rows.append(
            {
                "parameter": param,
                "value": float(v),
                "trades": int(bt["trades"]),
                "sharpe": float(bt["sharpe"]),
                "total_return": float(bt["total_return"]),
                "share_hold": float(r["action_shares"]["HOLD"]),
            }
        )
        returns.append(bt["returns"])
        held.append(bt["positions"][:-1])
    return rows, np.vstack(returns), np.vstack(held)


def run_sweeps(
    te: PeriodInputs, tr: PeriodInputs | None, s: EvaluateSettings, options: dict, base_kw: dict
) -> Sweeps:
    """The HOLD-threshold sweep, and the tau sweep where the logit-adjustment option was computed."""
    thr_rows, thr_R, thr_P = sweep(
        te, tr, s.backtest, THRESHOLD_OPTION, "hold_threshold", s.thresholds, base_kw
    )
    rows = list(thr_rows)
    tau_R = tau_P = None
    if TAU_OPTION in options:
        tau_rows, tau_R, tau_P = sweep(te, tr, s.backtest, TAU_OPTION, "tau", s.taus, base_kw)
        rows += tau_rows
    return Sweeps(rows, thr_R, thr_P, tau_R, tau_P)


def count_trials(options: dict, sweeps: Sweeps, s: EvaluateSettings) -> Trials:
    """The trials the deflated Sharpe counts: every candidate option, plus every other swept value."""
    from flagcore.analysis.pbo import probability_of_backtest_overfitting

    trial_returns = [o["backtest"]["returns"] for k, o in options.items() if k not in NOT_A_TRIAL]
    trial_returns += [
        row for row, v in zip(sweeps.threshold_returns, s.thresholds, strict=True) if v != s.hold_threshold
    ]
    if sweeps.tau_returns is not None:
        trial_returns += [row for row, v in zip(sweeps.tau_returns, s.taus, strict=True) if v != s.tau]
    # a swept value that changes nothing repeats a strategy already counted: one trial, not two
    trial_matrix = np.unique(np.vstack(trial_returns), axis=0)  # (n_trials, T)
    sharpes = np.asarray(sharpe_ratio(trial_matrix, axis=1))
    pbo = probability_of_backtest_overfitting(trial_matrix.T, s.pbo_blocks)
    return Trials(len(trial_returns), int(trial_matrix.shape[0]), sharpes, pbo)


def _option_cpcv(option: str, returns: np.ndarray, sweeps: Sweeps, s: EvaluateSettings, crit: dict, h: int):
    from flagcore.analysis.cpcv import posthoc_cpcv

    split = {
        "n_groups": int(crit["cpcv_groups"]),
        "n_test_groups": int(crit["cpcv_test_groups"]),
        "purge": h,
        "embargo": h,
    }
    # a path that switches value at a group boundary pays for the switch
    cost = s.backtest.cost_rate
    if option == THRESHOLD_OPTION:
        return posthoc_cpcv(
            sweeps.threshold_returns,
            s.thresholds,
            **split,
            parameter="hold_threshold",
            positions=sweeps.threshold_positions,
            cost_rate=cost,
        )
    if option == TAU_OPTION and sweeps.tau_returns is not None:
        return posthoc_cpcv(
            sweeps.tau_returns,
            s.taus,
            **split,
            parameter="tau",
            positions=sweeps.tau_positions,
            cost_rate=cost,
        )
    return posthoc_cpcv(returns[None], [None], **split, parameter="none")


def validate_option(
    option: str, o: dict, te: PeriodInputs, sweeps: Sweeps, trials: Trials, s: EvaluateSettings, h: int
) -> None:
    """One option's validation: the permutation test, post-hoc CPCV and the HIFA verdict, stored
    in ``o`` as ``"hifa"``, ``"cpcv"``, ``"permutation"`` and ``"is_trial"``."""
    from flagcore.analysis.gate import hifa_verdict
    from flagcore.analysis.permutation import permutation_test

    crit = s.resolved_criteria()
    r = simple_returns(te.close)
    bt = o["backtest"]
    held = bt["positions"][:-1]
    costs = held * r - bt["returns"]
    perm = permutation_test(
        held,
        r,
        crit["n_permutations"],
        block=int(crit["permutation_block"]),
        seed=s.permutation_seed,
        costs=costs,
    )
    cp = _option_cpcv(option, bt["returns"], sweeps, s, crit, h)
    verdict = hifa_verdict(
        cpcv_path_sharpes=cp.path_sharpes,
        returns=bt["returns"],
        trades=int(bt["trades"]),
        n_trials=trials.n_trials,
        trial_sharpes=trials.sharpes,
        permutation_p=perm.p_value,
        periods_per_year=te.periods_per_year,
        criteria=crit,
    )
    verdict["cpcv_mean_sharpe"].inputs.update(
        {
            "mode": cp.mode,
            "parameter": cp.parameter,
            "fitted": cp.fitted,
            "purge": h,
            "embargo": h,
            "groups": cp.n_groups,
            "test_groups": cp.n_test_groups,
        }
    )
    verdict["permutation_p"].inputs.update(
        {
            "n_permutations": perm.n_permutations,
            "block": perm.block,
            "observed_sharpe_annual": perm.observed_sharpe * np.sqrt(te.periods_per_year),
        }
    )
    o["hifa"], o["cpcv"], o["permutation"] = verdict, cp, perm
    o["is_trial"] = option not in NOT_A_TRIAL


def run_diagnostics(
    models: dict[str, ModelLogits], options: dict, te: PeriodInputs, test, full_train
) -> dict[str, dict]:
    """Per option, its diagnostics sections: each model's collapse diagnosis, the baseline's feature
    shift, the labels' analysis and the ensemble partner's agreement."""
    from flagcore.analysis.diagnostics import diagnose, feature_shift
    from flagcore.analysis.remedies import agreement, label_analysis

    diags: dict[str, dict] = {}
    for role, m in models.items():
        if role in options:
            diags[role] = diagnose(m.test, te.labels)
    if full_train is not None:
        e = test.eval_index
        diags.setdefault("baseline", {})["feature_shift"] = feature_shift(
            full_train.features, test.features[e:], names=input_names(test), padded_inputs=test.padded_inputs
        )
    if LABELS_OPTION in options and test.labels is not None:
        train_labels = (
            full_train.labels
            if full_train is not None and full_train.labels is not None
            else np.array([], np.int8)
        )
        diags[LABELS_OPTION] = label_analysis(train_labels, te.labels)
    if "opt4_ensemble" in options:
        diags["opt4_ensemble"] = {
            "agreement": agreement(models["baseline"].test.argmax(1), te.partner_actions)
        }
    return diags


def run_summary(
    options: dict,
    trials: Trials,
    sweeps: Sweeps,
    diags: dict,
    s: EvaluateSettings,
    te: PeriodInputs,
    test,
    train,
    prior: np.ndarray | None,
    sample: PayoffSample | None = None,
    models: dict[str, ModelLogits] | None = None,
) -> dict:
    """The run's summary: trials, overfitting, the baseline's collapse, periods and payoff sources,
    and each FLAG-TRADER's inference precision (with its agreement with fp32 where measured)."""
    base = options.get("baseline")
    passing = [k for k, o in options.items() if o["hifa"].passed_all and k not in NOT_A_TRIAL]
    n_thresholds = len(s.thresholds) - (s.hold_threshold in s.thresholds)
    n_taus = (len(s.taus) - (s.tau in s.taus)) if sweeps.tau_returns is not None else 0
    return {
        "n_trials": trials.n_trials,
        "trials_tried": trials.tried,
        "label_prior": None if prior is None else prior.tolist(),
        "trial_sharpe_variance": float(trials.sharpes.var(ddof=1)) if trials.n_trials > 1 else 0.0,
        "trials": {
            "options": [k for k in options if k not in NOT_A_TRIAL],
            "hold_thresholds": n_thresholds,
            "taus": n_taus,
        },
        "pbo": trials.pbo.pbo,
        "pbo_combinations": trials.pbo.n_combinations,
        "pbo_blocks": trials.pbo.n_blocks,
        "collapse": diags.get("baseline", {}).get("collapse"),
        "baseline_hold_share": None if base is None else base["action_shares"]["HOLD"],
        "periods_per_year": te.periods_per_year,
        # where the periods per year came from: the market's calendar, or the user's override
        "calendar": "override" if s.periods_per_year else test.calendar.name,
        "evaluated_bars": int(test.n_bars - test.eval_index),
        "label_horizon": int(test.label_horizon or 0),
        "options_passing_hifa": passing,
        "payoff_sources": {k: o["payoff_source"] for k, o in options.items()},
        "payoff_se": {k: o.get("payoff_se") for k, o in options.items()},
        "payoff_period": payoff_period(train, sample, s.payoff_sample),
        "inference": {
            r: {"precision": getattr(m, "precision", "fp32"), "agreement": getattr(m, "agreement", None)}
            for r, m in (models or {}).items()
            if m.kind == "flag-trader"
        },
    }


# ----------------------------------------------------------------------------- the run


def compute_run(
    models: dict[str, ModelLogits],
    test,
    train=None,
    *,
    partner: ModelLogits | None = None,
    settings: EvaluateSettings | None = None,
    name: str | None = None,
    progress: Progress = no_progress,
    full_train=None,
    sample: PayoffSample | None = None,
) -> RunResult:
    """All the numbers of one run, from logits already computed: pure computation, no store.

    ``train`` is the stretch of the training period the models were run on (payoff ratios,
    training-period signals): with a payoff ``sample``, its dataset, whose sampled bars alone are
    read (``pipeline.payoff_sample``). ``full_train`` (default ``train``) gives the label prior and
    the feature-shift reference.
    """
    from flagcore.analysis.remedies import compare_options

    full_train = full_train if full_train is not None else train
    s = settings or EvaluateSettings()
    if "baseline" not in models:
        raise FlagcoreError("a run needs the baseline model's logits")
    if sample is not None:  # the training-period logits of the sampled bars only
        models = {r: sample.restrict(m) for r, m in models.items()}
        partner = None if partner is None else sample.restrict(partner)
    ppy = s.periods_per_year or test.periods_per_year  # the market's calendar, not the sample's span
    te = period_inputs(models, test, "test", partner, ppy)
    assert te is not None  # the test period always has the baseline's logits
    tr = period_inputs(models, train, "train", partner, ppy, sample) if train is not None else None
    prior = None if full_train is None or full_train.labels is None else label_prior(full_train.labels)
    if tr is not None and prior is not None:
        tr.prior = prior
    # each stage reports its own fraction done, so that its time left can be estimated
    progress("options", 0.0)
    base_kw: dict[str, Any] = {"hold_threshold": s.hold_threshold, "tau": s.tau, "calibration": s.calibration}
    options = compare_options(te, tr, cfg=s.backtest, **base_kw)
    progress("sweeps", 0.0)
    sweeps = run_sweeps(te, tr, s, options, base_kw)
    trials = count_trials(options, sweeps, s)
    h = int(test.label_horizon or 0)
    for i, (k, o) in enumerate(options.items()):
        progress("validation", i / len(options))
        validate_option(k, o, te, sweeps, trials, s, h)
    progress("diagnostics", 0.0)
    diags = run_diagnostics(models, options, te, test, full_train)
    test_bars = period_bars(test, "test")
    rows = None if sample is None else sample.rows
    train_bars = period_bars(train, "train", rows) if tr is not None else None
    summary = run_summary(options, trials, sweeps, diags, s, te, test, train, prior, sample, models)
    records = [dataset_record(test)] + ([dataset_record(full_train)] if full_train is not None else [])
    key = request_key(models, test, full_train, partner, s)
    return RunResult(
        name or Path(test.source).stem,
        s.to_dict(),
        summary,
        models,
        test_bars,
        train_bars,
        options,
        diags,
        pd.DataFrame(sweeps.rows),
        records,
        key,
        models["baseline"].train,
        s.author,
    )
