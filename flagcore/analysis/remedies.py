"""The remedies: each option turns stored logits (and a partner's predictions) into actions.

Seed options (FINDINGS_MODEL_COLLAPSE.md):
1. class-weighted retraining, 2. focal-loss retraining: the logits of those checkpoints;
3. the threshold rule, exactly as the seed writes it: where the argmax is HOLD and its
   confidence is below ``hold_threshold``, take the second-best action;
4. the ensemble rule: where FLAG-TRADER says HOLD and the partner says BUY or SELL, take the
   partner's action (plus probability averaging and agreement statistics);
5. the labels themselves: their distribution, what relabelling would give, and the labels as a
   perfect-foresight signal (the upper bound a backtest can reach).
Beyond the seed: post-hoc logit adjustment, argmax(logit - tau log prior) (Menon et al. 2021),
the principled form of option 3 (tau = 1 is the Bayes rule for balanced error); and the logits of
the logit-adjusted, oversampled, multi-task, walk-forward and CGDT models.

Sizing is one convention for every option: Kelly reads q = p_a / (p_SELL + p_BUY) from the option's
own class-probability vector (``backtest.kelly_probability``; optionally calibrated on the training
period, ``calibration``), and the payoff ratio comes from the option's training-period actions held
under the backtest's hold rule. The same actions therefore give the same positions and metrics
whichever option produced them.

All functions are vectorised over bars, so the dashboard's sliders recompute them instantly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from flagcore.analysis.backtest import (
    BacktestConfig,
    backtest,
    block_payoff_ratio,
    kelly_probability,
    signal_payoff_ratio,
    simple_returns,
    unit_metrics,
)
from flagcore.analysis.calibration import Calibration, fit_calibration, identity
from flagcore.analysis.diagnostics import action_distribution, classification_metrics, softmax
from flagcore.errors import FlagcoreError
from flagcore.vocab import (
    BUY,
    CALIBRATIONS,
    HOLD,
    LABELS_OPTION,
    MODEL_ROLES,
    OPTIONS,
    SELL,
    TAU_OPTION,
    THRESHOLD_OPTION,
)


@dataclass
class PeriodInputs:
    """What every option is computed from over one period (the test period, or the training period's
    stretch that estimates Kelly's payoff ratios)."""

    logits: dict[str, np.ndarray]  # model role -> (n, 3) logits; the post-hoc options read "baseline"
    labels: np.ndarray | None  # (n,) class ids, -1 unresolved; None without labels
    close: np.ndarray  # (n,) close prices
    periods_per_year: float
    partner_actions: np.ndarray | None = None  # (n,) the ensemble partner's actions
    partner_probs: np.ndarray | None = None  # (n, 3) its probabilities, when it gave logits
    prior: np.ndarray | None = None  # (3,) the training labels' class shares (logit adjustment)
    # a sampled training stretch: where each block of the sample begins (positions restart flat there;
    # ``backtest.block_payoff_ratio``), and the sample in words; None: one contiguous stretch
    block_starts: np.ndarray | None = None
    sample: str | None = None


def _check_logits(logits) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise FlagcoreError(f"logits must have shape (n, 3), got {x.shape}")
    return x


def hold_confidence_log(logits) -> np.ndarray:
    """log P(HOLD) from logits, exact even where P(HOLD) rounds to 1.0 in floating point."""
    x = _check_logits(logits)
    return -np.log1p(np.exp(x[:, SELL] - x[:, HOLD]) + np.exp(x[:, BUY] - x[:, HOLD]))


def threshold_rule(logits, hold_threshold: float) -> np.ndarray:
    """The seed's option 3: ``if action == HOLD and confidence < hold_threshold: second-best``.

    At ``hold_threshold`` 0 nothing changes; at 1.0 every HOLD flips (its probability is below 1
    for any finite logits; compared in log space so that rounding cannot keep a HOLD).
    """
    if not 0.0 <= hold_threshold <= 1.0:
        raise FlagcoreError(f"hold_threshold must lie in [0, 1], got {hold_threshold!r}")
    x = _check_logits(logits)
    top = x.argmax(axis=1)
    second = np.argsort(x, axis=1, kind="stable")[:, -2]
    if hold_threshold == 0.0:
        return top.astype(np.int8)
    flip = (top == HOLD) & (hold_confidence_log(x) < np.log(hold_threshold))
    return np.where(flip, second, top).astype(np.int8)


def hold_flip_thresholds(logits) -> np.ndarray:
    """For each bar, the HOLD threshold above which option 3 changes its action (P(HOLD) where
    the argmax is HOLD, else +inf). Sorting these gives the action counts at every threshold at once."""
    x = _check_logits(logits)
    out = np.full(x.shape[0], np.inf)
    is_hold = x.argmax(axis=1) == HOLD
    out[is_hold] = np.exp(hold_confidence_log(x[is_hold]))
    return out


def logit_adjustment(logits, prior, tau: float) -> np.ndarray:
    """argmax(logit_c - tau * log prior_c) (Menon et al. 2021); tau = 0 is the plain argmax."""
    x = _check_logits(logits)
    p = np.asarray(prior, dtype=np.float64)
    if p.shape != (3,) or (p <= 0).any():
        raise FlagcoreError(f"prior must be three positive class shares, got {p.tolist()}")
    if tau < 0:
        raise FlagcoreError(f"tau must be >= 0, got {tau!r}")
    return (x - tau * np.log(p / p.sum())).argmax(axis=1).astype(np.int8)


def adjusted_probs(logits, prior, tau: float) -> np.ndarray:
    """Softmax of the adjusted logits: the class probabilities Kelly's q is read from for logit
    adjustment (at tau 0 exactly the plain softmax)."""
    x = _check_logits(logits)
    p = np.asarray(prior, dtype=np.float64)
    return softmax(x - tau * np.log(p / p.sum()))


def ensemble_rule(flag_actions, partner_actions) -> np.ndarray:
    """The seed's option 4: where FLAG-TRADER says HOLD and the partner BUY or SELL, the partner's."""
    a, b = np.asarray(flag_actions), np.asarray(partner_actions)
    if a.shape != b.shape:
        raise FlagcoreError(f"FLAG-TRADER and partner actions differ in length: {a.shape} vs {b.shape}")
    return np.where((a == HOLD) & (b != HOLD), b, a).astype(np.int8)


def probability_average(flag_probs, partner_probs, weight: float = 0.5) -> np.ndarray:
    """(n, 3) weight x FLAG-TRADER's probabilities + (1 - weight) x the partner's."""
    p, q = np.asarray(flag_probs, dtype=np.float64), np.asarray(partner_probs, dtype=np.float64)
    if p.shape != q.shape:
        raise FlagcoreError(f"probability arrays differ in shape: {p.shape} vs {q.shape}")
    if not 0.0 <= weight <= 1.0:
        raise FlagcoreError(f"weight must lie in [0, 1], got {weight!r}")
    return weight * p + (1 - weight) * q


def one_hot(actions) -> np.ndarray:
    return np.eye(3)[np.asarray(actions)]


def agreement(flag_actions, partner_actions) -> dict:
    """How often the two models agree, Cohen's kappa between them, and how often the rule overrides."""
    a, b = np.asarray(flag_actions), np.asarray(partner_actions)
    m = classification_metrics(b, a)  # the partner scored against FLAG-TRADER: a symmetric kappa
    overrides = (a == HOLD) & (b != HOLD)
    return {
        "agreement": float((a == b).mean()),
        "cohen_kappa": m["cohen_kappa"],
        "overrides": int(overrides.sum()),
        "override_share": float(overrides.mean()),
        "table": m["confusion_matrix"],
    }  # rows FLAG-TRADER, columns partner


def evaluate_actions(
    actions,
    labels,
    close,
    periods_per_year: float,
    *,
    confidence=None,
    payoff: float | None = None,
    cfg: BacktestConfig | None = None,
) -> dict:
    """The same metrics for every option: action shares, classification metrics, the backtest."""
    a = np.asarray(actions)
    dist = action_distribution(a)
    out = {"action_shares": dist["shares"], "action_counts": dist["counts"]}
    y = None if labels is None else np.asarray(labels)
    if y is not None and (y >= 0).any():
        m = classification_metrics(a, y)
        out.update(
            {
                k: m[k]
                for k in (
                    "accuracy",
                    "majority_baseline",
                    "balanced_accuracy",
                    "macro_f1",
                    "mcc",
                    "cohen_kappa",
                )
            }
        )
    bt = backtest(a, close, periods_per_year, confidence=confidence, cfg=cfg, payoff=payoff)
    out["backtest"] = bt
    return out


def label_analysis(
    train_labels,
    test_labels,
    *,
    close=None,
    sigma=None,
    horizon: int | None = None,
    widths=None,
    eval_mask=None,
    method: str = "triple-barrier",
) -> dict:
    """Option 5: label distributions and, with prices, the HOLD share against the barrier width."""
    from flagcore.data.labels import hold_share_curve, shares

    out = {"train": shares(np.asarray(train_labels)), "test": shares(np.asarray(test_labels))}
    if close is not None and sigma is not None and horizon:
        w = np.asarray(widths if widths is not None else np.round(np.arange(0.25, 3.01, 0.125), 4))
        out["hold_share_by_width"] = {
            "widths": w.tolist(),
            "hold_share": hold_share_curve(close, sigma, horizon, w, method, eval_mask).tolist(),
        }
    return out


def perfect_foresight_actions(labels) -> np.ndarray:
    """The labels as actions (HOLD where unresolved): what a model that knew the future would do."""
    y = np.asarray(labels)
    return np.where(y >= 0, y, HOLD).astype(np.int8)


# ----------------------------------------------------------------------------- every option at once


class OptionSignals(NamedTuple):
    """One option's actions over one period and the class-probability vector behind each."""

    actions: np.ndarray  # (n,) int8 class ids
    probs: np.ndarray  # (n, 3) the vector Kelly's q is read from (``backtest.kelly_probability``)


def option_signals(
    option: str,
    logits: dict,
    *,
    partner_actions=None,
    partner_probs=None,
    labels=None,
    prior=None,
    hold_threshold: float = 0.95,
    tau: float = 1.0,
    partner_weight: float = 0.5,
) -> OptionSignals | None:
    """(actions, probs) of one option over one period, or None when its inputs are missing.

    ``logits`` maps a model name (``baseline``, ``opt1_class_weights``, ...) to its (n, 3) logits;
    the post-hoc options read ``baseline``. ``probs`` is the option's own class-probability vector:
    the softmax of the model's logits (the threshold rule: the baseline's, whichever action it
    takes); the softmax of the adjusted logits for logit adjustment; for the ensemble rule the
    vector of the model whose action is taken (a partner without probabilities: its one-hot); the
    averaged vector for probability averaging; the labels' one-hot for perfect foresight (q = 1).
    """
    base = logits.get("baseline")
    if option in MODEL_ROLES:  # a model's own logits
        x = logits.get(option)
        if x is None:
            return None
        p = softmax(_check_logits(x))
        return OptionSignals(p.argmax(1).astype(np.int8), p)
    if base is None:
        return None
    p = softmax(_check_logits(base))
    if option == THRESHOLD_OPTION:
        # a flipped bar trades on the second-best class; Kelly's q reads it from the same vector
        return OptionSignals(threshold_rule(base, hold_threshold), p)
    if option == TAU_OPTION:
        if prior is None:
            return None
        q = adjusted_probs(base, prior, tau)
        return OptionSignals(q.argmax(1).astype(np.int8), q)
    if option in ("opt4_ensemble", "opt4_prob_average"):
        if partner_actions is None:
            return None
        partner_p = one_hot(partner_actions) if partner_probs is None else np.asarray(partner_probs)
        if option == "opt4_ensemble":
            own = p.argmax(1)
            a = ensemble_rule(own, partner_actions)
            return OptionSignals(a, np.where((a == own)[:, None], p, partner_p))
        q = probability_average(p, partner_p, partner_weight)
        return OptionSignals(q.argmax(1).astype(np.int8), q)
    if option == LABELS_OPTION:
        if labels is None:
            return None
        a = perfect_foresight_actions(labels)
        return OptionSignals(a, one_hot(a))  # foresight is certain: Kelly's q = 1
    raise FlagcoreError(f"unknown option {option!r}; choose one of {', '.join(OPTIONS)}")


def _option_calibration(
    name: str, method: str, train_signals: OptionSignals | None, train: PeriodInputs | None
) -> Calibration:
    """The map of Kelly's q for one option, fitted on its training-period signals and labels."""
    if method == "none":
        return identity()
    if name == LABELS_OPTION:
        return identity(method, "the labels are certain (q = 1): not calibrated")
    if train_signals is None or train is None or train.labels is None:
        return identity(method, f"{method} calibration not fitted: no training-period signals for {name}")
    q = kelly_probability(train_signals.probs, train_signals.actions)
    return fit_calibration(method, q, train_signals.actions, train.labels)


def _payoff(
    actions, train: PeriodInputs, train_returns, cfg: BacktestConfig
) -> tuple[float, float | None, str]:
    """Kelly's b from one option's training-period actions: (ratio, standard error, source)."""
    if train.block_starts is None:  # the whole stretch: no sampling error
        return signal_payoff_ratio(actions, train_returns, cfg), None, "training period"
    est = block_payoff_ratio(actions, train.close, train.block_starts, cfg)
    return est.ratio, est.se, train.sample or f"training period sample: {est.blocks} blocks"


def sizing_summary(actions, pos, calibration: Calibration) -> dict:
    """How the configured sizing treated the signals: how many SELL/BUY actions it set to size 0."""
    a = np.asarray(actions)
    signals = a != HOLD
    n = int(signals.sum())
    zero = int((signals & (np.asarray(pos) == 0)).sum())
    return {
        "signals": n,
        "sized_zero": zero,
        "sized_zero_share": float(zero / n) if n else 0.0,
        "probability": calibration.probability,
        "calibration_trades": calibration.n_trades,
        "calibration_note": calibration.note,
    }


def compare_options(
    test: PeriodInputs,
    train: PeriodInputs | None = None,
    *,
    cfg: BacktestConfig | None = None,
    hold_threshold: float = 0.95,
    tau: float = 1.0,
    options=None,
    calibration: str = "none",
) -> dict:
    """Every option's metrics on the test period, side by side, all sized by one convention.

    ``train``'s ``prior`` (its label shares) feeds logit adjustment. Kelly's q is
    ``kelly_probability`` of the option's class probabilities; with ``calibration`` ``"isotonic"`` or
    ``"platt"`` it is first mapped by a calibration fitted on the option's training-period trades and
    labels (``analysis.calibration``; the identity, with a note, below its minimum of trades). Kelly's
    payoff ratio for each option is estimated from that option's unit-size positions on the training
    period under ``cfg``'s hold rule; without a training period it is 1 (a fair bet) and flagged. A
    sampled stretch's blocks (``train.block_starts``) are held apart, with a standard error.

    Returns
    -------
    dict
        option -> ``evaluate_actions``'s dict plus ``payoff_source``, ``payoff_se`` (the payoff
        ratio's standard error on a sampled stretch, else None), ``title``, ``description``,
        ``actions`` (n,), ``confidence`` (n,: the probability of the chosen action), ``kelly_p`` (n,:
        the q sizing read, 0 on HOLD bars), ``unit`` (``backtest.metrics`` of the same actions at unit
        size, same hold rule and costs; scalars only) and ``sizing`` (``signals``, ``sized_zero``,
        ``sized_zero_share``, ``probability`` ``"model" | "isotonic" | "platt"``,
        ``calibration_trades``, ``calibration_note``).
    """
    cfg = cfg or BacktestConfig()
    if calibration not in CALIBRATIONS:
        raise FlagcoreError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}")
    if calibration != "none" and (
        train is None or train.labels is None or not (np.asarray(train.labels) >= 0).any()
    ):
        raise FlagcoreError(f"{calibration} calibration needs a training period with labels; there is none")
    prior = None if train is None else train.prior
    train_returns = None if train is None else simple_returns(train.close)
    test_returns = simple_returns(test.close)

    def signals(name: str, period: PeriodInputs) -> OptionSignals | None:
        return option_signals(
            name,
            period.logits,
            partner_actions=period.partner_actions,
            partner_probs=period.partner_probs,
            labels=period.labels,
            prior=prior,
            hold_threshold=hold_threshold,
            tau=tau,
        )

    out = {}
    for name in options or OPTIONS:
        sig = signals(name, test)
        if sig is None:
            continue
        actions = sig.actions
        payoff, payoff_se, payoff_source = 1.0, None, "default (no training-period signals)"
        tsig = signals(name, train) if train is not None and name != LABELS_OPTION else None
        if tsig is not None and train is not None:
            payoff, payoff_se, payoff_source = _payoff(tsig.actions, train, train_returns, cfg)
        cal = _option_calibration(name, calibration, tsig, train)
        q = kelly_probability(sig.probs, actions)
        if cal.fitted:
            q = np.where(actions != HOLD, cal(q), 0.0)
        res = evaluate_actions(
            actions, test.labels, test.close, test.periods_per_year, confidence=q, payoff=payoff, cfg=cfg
        )
        res["payoff_source"] = payoff_source
        res["payoff_se"] = payoff_se
        res["title"], res["description"] = OPTIONS[name]
        res["actions"] = actions
        res["confidence"] = sig.probs[np.arange(actions.size), actions]
        res["kelly_p"] = q
        res["unit"] = unit_metrics(actions, test_returns, test.periods_per_year, cfg)
        res["sizing"] = sizing_summary(actions, res["backtest"]["positions"], cal)
        out[name] = res
    return out
