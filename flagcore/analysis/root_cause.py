"""Why a model collapsed: each suspected cause judged from measures taken on the model itself.

The seed (FINDINGS_MODEL_COLLAPSE.md) suspects class imbalance under plain cross-entropy, and the
zero-padded order-flow inputs; its model was 99% confident with a HOLD gap of about 10.6 nats, far
beyond the log prior ratio of about 1.1 that a 61% HOLD prior explains. Each cause leaves its own
fingerprint (root-cause.md); this module turns the measures into one verdict per cause of
``vocab.ROOT_CAUSES``: "supported", "not supported" or "inconclusive" (a measure the rule needs is
missing, and the verdict says which).

The measures (computed elsewhere from the model, passed in as arrays):

- :func:`prior_check`: the label prior against the predicted shares and the mean logit gaps
  logit_HOLD - logit_c against log(pi_HOLD / pi_c), the gaps of a cross-entropy model that learned
  nothing but the prior (Menon et al. 2021).
- :func:`outcome`: action shares, confidence, trades, Sharpe and the collapse verdict of one set of
  logits: the test period, the padding and shift counterfactuals, the training period's last year.
- :func:`sensitivity`: how far the HOLD gap moves across bars and under two probes (time-shuffled
  windows, constant windows): the cheap test of an input-blind model.
- :func:`attribution_summary`: per-input attribution (integrated gradients; Sundararajan, Taly, Yan
  2017) summed over bars and time, ranked, with the padded inputs' share.

The rules of :func:`root_cause_verdicts` (thresholds are the module constants; each verdict carries
its rule in words with the numbers it read):

- prior: supported when the model collapses on the test period and, when measured, in sample; its
  mean gaps lie within ``PRIOR_GAP_TOLERANCE`` nats of the log prior ratios; the gaps vary little
  across bars (std <= ``PRIOR_GAP_STD_MAX`` nats); and no fill removes the collapse.
- padding / shift: supported when the model collapses and a counterfactual fill removes it (the
  dominant class's share falls by ``FILL_SHARE_DROP`` or more and the collapse verdict goes away, or
  the trades rise from at most ``TRADES_BEFORE_MAX`` to at least ``TRADES_AFTER_MIN``).
  Padding needs both fills (medians, resampled training rows): either one removing the collapse
  suffices for "supported", both must fail for "not supported"; a period without padded inputs
  gets "not supported". The shift counterfactual should map the shifted inputs that are not padding
  (PSI > 0.25, Siddiqi 2006), so that it tells shift apart from padding.
- input_blind: supported when the model collapses, the logits barely move (:func:`sensitivity`), no
  fill removes the collapse, and the prior rule does not hold (a prior-only model also ignores its
  inputs, but its root cause is the prior, and it is named there).
- overconfidence: supported when the mean confidence exceeds the label prior share of the predicted
  majority class by ``OVERCONFIDENCE_MARGIN`` (for a collapsed model that share is about its
  accuracy: confidence above accuracy is overconfidence in the sense of Guo et al. 2017) and the
  majority class's logit margin exceeds its log prior ratio by ``OVERCONFIDENCE_GAP_EXCESS`` nats;
  not when a fill that removes the collapse also lowers the confidence by ``CONFIDENCE_CHANGE``
  (then the filled inputs drive the confidence, and padding or shift is the cause).

A model that does not collapse gets "not supported" for prior, padding, shift and input_blind
(an input-blind model predicts one class everywhere, so it always collapses); overconfidence is
judged for every model.

References
----------
Menon, A. K., Jayasumana, S., Rawat, A. S., Jain, H., Veit, A., Kumar, S. (2021). Long-tail
learning via logit adjustment. ICLR.
Sundararajan, M., Taly, A., Yan, Q. (2017). Axiomatic attribution for deep networks. ICML.
Guo, C., Pleiss, G., Sun, Y., Weinberger, K. Q. (2017). On calibration of modern neural networks. ICML.
Siddiqi, N. (2006). Credit Risk Scorecards. Wiley (PSI: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major;
the thresholds ``diagnostics.feature_shift`` uses to pick the inputs the shift counterfactual maps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flagcore.analysis.backtest import BacktestConfig, backtest, kelly_probability
from flagcore.analysis.diagnostics import collapse_verdict, softmax
from flagcore.errors import FlagcoreError
from flagcore.vocab import BUY, CAUSE_VERDICTS, CLASS_NAMES, HOLD, ROOT_CAUSES, SELL

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = CAUSE_VERDICTS
OTHERS = (SELL, BUY)  # the classes a HOLD gap is measured against

# prior: a prior-only model's gaps sit at log(pi_HOLD / pi_c) for every bar
PRIOR_GAP_TOLERANCE = 0.5  # nats between a mean gap and its log prior ratio
PRIOR_GAP_STD_MAX = 0.5  # nats: the spread of a gap across bars that still counts as constant
# padding and shift: a fill removes the collapse
FILL_SHARE_DROP = 0.20  # the dominant class's share falls by at least 20 points ...
TRADES_BEFORE_MAX = 1  # ... or the trades rise from at most 1 ...
TRADES_AFTER_MIN = 10  # ... to at least 10
CONFIDENCE_CHANGE = 0.10  # a fill that moves the mean confidence by 10 points or more changes it
# input sensitivity: the logits barely move
BLIND_RATIO = 0.05  # a movement at most 5% of the gap's size ...
BLIND_NATS = 0.01  # ... or at most 0.01 nats
# overconfidence
OVERCONFIDENCE_MARGIN = 0.20  # mean confidence above the majority class's prior share by 20 points
OVERCONFIDENCE_GAP_EXCESS = 2.0  # nats of the majority class's margin beyond its log prior ratio

TOP_INPUTS = 10  # inputs ranked in an attribution summary

# Evidence fields -> what the measure is, for "inconclusive: needs ..."
MEASURE_TITLES = {
    "prior": "the training label prior",
    "padding_median": "the padding counterfactual with per-feature training medians",
    "padding_resample": "the padding counterfactual with resampled training rows",
    "shift": "the shift counterfactual (quantile-mapped inputs)",
    "sensitivity": "the input-sensitivity probes (shuffled and constant windows)",
    "attribution": "the per-input attribution",
    "in_sample": "the outcome on the training period's last year",
    "in_sample_prior": "the prior check on the training period's last year",
}


# ----------------------------------------------------------------------------- helpers


def _json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, tuples as lists and NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    return value


def _logits(name: str, logits) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise FlagcoreError(f"{name} must have shape (n, 3), got {x.shape}")
    if x.shape[0] == 0:
        raise FlagcoreError(f"{name} are empty: no bars")
    if not np.isfinite(x).all():
        raise FlagcoreError(f"{name} hold NaN or infinite values")
    return x


def _prior(prior) -> np.ndarray:
    p = np.asarray(prior, dtype=np.float64)
    if p.shape != (3,) or not np.isfinite(p).all() or (p <= 0).any():
        raise FlagcoreError(f"prior must be three positive class shares, got {np.asarray(prior).tolist()}")
    return p / p.sum()


def _ratio(num: float, den: float) -> float:
    """num / den for a non-negative num and den: 0 when both are 0, inf when only den is."""
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.inf


def _hold_gap(x: np.ndarray) -> np.ndarray:
    """(n,) logit_HOLD - max(logit_SELL, logit_BUY): HOLD's margin over the best other class."""
    return x[:, HOLD] - x[:, list(OTHERS)].max(axis=1)


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, spec)


# ----------------------------------------------------------------------------- measures


@dataclass
class PriorCheck:
    """The label prior against what the model predicts (see :func:`prior_check`)."""

    prior: list[float]  # SELL, HOLD, BUY shares of the training labels, normalised
    predicted_shares: list[float]  # argmax shares, SELL, HOLD, BUY
    mean_probs: list[float]  # mean softmax: equals the prior for a prior-only model
    mean_gaps: dict[str, float]  # "SELL"/"BUY" -> mean over bars of logit_HOLD - logit_c
    log_prior_ratios: dict[str, float]  # "SELL"/"BUY" -> log(pi_HOLD / pi_c)
    gap_std: dict[str, float]  # "SELL"/"BUY" -> std over bars of logit_HOLD - logit_c
    gap_deviation: dict[str, float]  # "SELL"/"BUY" -> mean gap - log prior ratio (nats)
    hold_margin: float  # mean over bars of logit_HOLD - max(logit_SELL, logit_BUY)
    prior_hold_margin: float  # log(pi_HOLD / max(pi_SELL, pi_BUY)): the margin the prior explains
    margin_explained: float  # prior_hold_margin / hold_margin clipped to [0, 1]
    margin_explained_raw: float | None  # unclipped; None when the mean HOLD margin is <= 0
    mean_confidence: float  # mean probability of the chosen action
    dominant_class: str  # the most predicted class
    dominant_margin: float  # mean over bars of logit_dom - max(other logits)
    dominant_log_ratio: float  # log(pi_dom / max(other pi))
    n_bars: int

    def to_dict(self) -> dict:
        return _json_safe(self.__dict__)


def prior_check(logits, prior) -> PriorCheck:
    """How much of the model's preference for HOLD the training label prior accounts for.

    A network trained with plain cross-entropy that learned nothing beyond the label prior pi
    outputs softmax(logits) = pi for every input, so its logit gaps are logit_HOLD - logit_c =
    log(pi_HOLD / pi_c) on every bar; post-hoc logit adjustment subtracts exactly these log priors
    (Menon et al. 2021). Gaps far beyond the log prior ratios (the seed's ~10.6 nats against
    log(0.61 / 0.2) ~ 1.1) are not explained by the prior.

    Parameters
    ----------
    logits : array_like, shape (n, 3)
        The model's logits over the evaluated bars, SELL, HOLD, BUY.
    prior : array_like, shape (3,)
        The training labels' class shares (counts are fine: normalised here).

    Returns
    -------
    PriorCheck
        ``margin_explained`` is the share of the mean HOLD margin (HOLD against the best other class)
        that the prior's margin log(pi_HOLD / max(pi_SELL, pi_BUY)) accounts for, clipped to [0, 1];
        1 for a prior-only model, about 0.1 for the seed.

    References
    ----------
    Menon, A. K. et al. (2021). Long-tail learning via logit adjustment. ICLR.

    Examples
    --------
    >>> pi = np.array([0.2, 0.61, 0.19])
    >>> pc = prior_check(np.tile(np.log(pi), (4, 1)), pi)
    >>> round(pc.mean_gaps["SELL"], 3), round(pc.log_prior_ratios["SELL"], 3), pc.margin_explained
    (1.115, 1.115, 1.0)
    >>> seed = prior_check(np.tile([-5.6, 5.0, -5.6], (4, 1)), pi)
    >>> round(seed.mean_gaps["SELL"], 1), round(seed.margin_explained, 2)
    (10.6, 0.11)
    """
    x = _logits("logits", logits)
    p = _prior(prior)
    probs = softmax(x)
    actions = x.argmax(axis=1)
    shares = np.bincount(actions, minlength=3) / len(actions)
    gaps = x[:, [HOLD]] - x[:, list(OTHERS)]  # (n, 2)
    log_ratio = np.log(p[HOLD] / p[list(OTHERS)])  # (2,)
    mean_gap, std_gap = gaps.mean(axis=0), gaps.std(axis=0)
    hold_margin = float(_hold_gap(x).mean())
    prior_hold_margin = float(np.log(p[HOLD] / p[list(OTHERS)].max()))
    raw = prior_hold_margin / hold_margin if hold_margin > 0 else None
    dom = int(shares.argmax())
    rest = [k for k in range(3) if k != dom]
    names = [CLASS_NAMES[k] for k in OTHERS]
    return PriorCheck(
        prior=p.tolist(),
        predicted_shares=shares.tolist(),
        mean_probs=probs.mean(axis=0).tolist(),
        mean_gaps=dict(zip(names, mean_gap.tolist(), strict=True)),
        log_prior_ratios=dict(zip(names, log_ratio.tolist(), strict=True)),
        gap_std=dict(zip(names, std_gap.tolist(), strict=True)),
        gap_deviation=dict(zip(names, (mean_gap - log_ratio).tolist(), strict=True)),
        hold_margin=hold_margin,
        prior_hold_margin=prior_hold_margin,
        margin_explained=float(np.clip(raw, 0.0, 1.0)) if raw is not None else 0.0,
        margin_explained_raw=raw,
        mean_confidence=float(probs.max(axis=1).mean()),
        dominant_class=CLASS_NAMES[dom],
        dominant_margin=float((x[:, dom] - x[:, rest].max(axis=1)).mean()),
        dominant_log_ratio=float(np.log(p[dom] / p[rest].max())),
        n_bars=int(x.shape[0]),
    )


@dataclass
class Outcome:
    """What one set of logits does: action shares, confidence, trades, Sharpe, collapse."""

    action_shares: dict[str, float]  # "SELL"/"HOLD"/"BUY" -> share of argmax actions
    mean_confidence: float  # mean softmax probability of the chosen action
    trades: int  # runs in the market on one side (backtest.metrics)
    sharpe: float  # annualised; 0 when undefined
    sharpe_defined: bool  # False when the returns never vary (no trades)
    collapsed: bool  # diagnostics.collapse_verdict
    n_bars: int
    collapse_reason: str = ""

    @property
    def dominant_class(self) -> str:
        return max(CLASS_NAMES, key=lambda c: self.action_shares.get(c, 0.0))

    @property
    def dominant_share(self) -> float:
        return float(self.action_shares.get(self.dominant_class, 0.0))

    def to_dict(self) -> dict:
        return _json_safe(
            {**self.__dict__, "dominant_class": self.dominant_class, "dominant_share": self.dominant_share}
        )


def outcome(
    logits,
    close,
    periods_per_year: float,
    *,
    payoff: float = 1.0,
    cfg: BacktestConfig | None = None,
) -> Outcome:
    """The argmax actions of ``logits`` backtested on ``close``, with the collapse verdict.

    Sizing follows the package's one convention: Kelly's q = p_a / (p_SELL + p_BUY) from the
    softmax (``backtest.kelly_probability``) with payoff ratio ``payoff`` (estimated on the
    training period by the caller; 1 is a fair bet), under ``cfg`` (default ``BacktestConfig()``).
    ``collapsed`` is ``diagnostics.collapse_verdict``: one class on >= 95% of bars or the action
    entropy below 0.1 of its maximum.

    Parameters
    ----------
    logits : array_like, shape (n, 3)
    close : array_like, shape (n,)
        Close prices of the same bars.
    periods_per_year : float
    payoff : float, default 1.0
    cfg : BacktestConfig, optional

    Returns
    -------
    Outcome

    Examples
    --------
    >>> o = outcome(np.tile([0.0, 3.0, 0.0], (50, 1)), np.linspace(100, 110, 50), 8760)
    >>> o.collapsed, o.trades, o.action_shares["HOLD"], o.sharpe_defined
    (True, 0, 1.0, False)
    """
    x = _logits("logits", logits)
    c = np.asarray(close, dtype=np.float64)
    if c.shape != (x.shape[0],):
        raise FlagcoreError(f"close must have one price per bar ({x.shape[0]}), got shape {c.shape}")
    if x.shape[0] < 2:
        raise FlagcoreError(f"an outcome needs at least 2 bars, got {x.shape[0]}")
    if not (isinstance(payoff, (int, float)) and math.isfinite(payoff) and payoff > 0):
        raise FlagcoreError(f"payoff must be a positive number, got {payoff!r}")
    probs = softmax(x)
    actions = x.argmax(axis=1)
    q = kelly_probability(probs, actions)
    bt = backtest(actions, c, periods_per_year, confidence=q, cfg=cfg, payoff=float(payoff))
    verdict = collapse_verdict(x)
    shares = np.bincount(actions, minlength=3) / len(actions)
    return Outcome(
        action_shares={name: float(shares[k]) for k, name in enumerate(CLASS_NAMES)},
        mean_confidence=float(probs.max(axis=1).mean()),
        trades=int(bt["trades"]),
        sharpe=float(bt["sharpe"]),
        sharpe_defined=bool(bt["sharpe_defined"]),
        collapsed=bool(verdict["collapsed"]),
        n_bars=int(x.shape[0]),
        collapse_reason=str(verdict["reason"]),
    )


@dataclass
class Sensitivity:
    """How far the logits move across bars and under the probes (see :func:`sensitivity`)."""

    gap_mean: float  # mean over bars of logit_HOLD - max(logit_SELL, logit_BUY)
    gap_std: float  # its std over bars
    variation_ratio: float  # gap_std / |gap_mean| (inf when the mean is 0 and the std is not)
    shuffled_change: float | None  # mean |change of the HOLD margins| / gap size; None: not probed
    constant_change: float | None  # the same for constant windows; None: not probed
    shuffled_change_nats: float | None  # the same changes in nats, before dividing by the gap size
    constant_change_nats: float | None
    input_blind: bool
    n_bars: int

    def to_dict(self) -> dict:
        return _json_safe(self.__dict__)


def _probe_change(x: np.ndarray, probe, name: str) -> tuple[float, float] | None:
    """Mean |change| of the margins logit_HOLD - logit_c (c = SELL, BUY) from ``x`` to ``probe``, in nats."""
    if probe is None:
        return None
    y = np.asarray(probe, dtype=np.float64)
    if y.shape == (3,):
        y = y[None, :]
    if y.ndim != 2 or y.shape[1] != 3 or y.shape[0] not in (1, x.shape[0]):
        raise FlagcoreError(f"{name} must have shape (3,), (1, 3) or ({x.shape[0]}, 3), got {y.shape}")
    if not np.isfinite(y).all():
        raise FlagcoreError(f"{name} hold NaN or infinite values")
    m_x = x[:, [HOLD]] - x[:, list(OTHERS)]
    m_y = y[:, [HOLD]] - y[:, list(OTHERS)]
    nats = float(np.abs(m_y - m_x).mean())
    scale = max(abs(float(_hold_gap(x).mean())), float(_hold_gap(x).std()))
    return _ratio(nats, scale), nats


def sensitivity(logits, shuffled_logits=None, constant_logits=None) -> Sensitivity:
    """Does the model look at its inputs at all? The HOLD gap's spread across bars and two probes.

    The gap is g = logit_HOLD - max(logit_SELL, logit_BUY) per bar; ``variation_ratio`` = std(g) /
    |mean(g)|. A probe's change is the mean over bars (and over c = SELL, BUY) of
    |(logit_HOLD - logit_c)(probe) - (logit_HOLD - logit_c)(real)|, in nats (``*_nats``) and relative
    to the gap's size max(|mean(g)|, std(g)) (the unsuffixed field). The probes are the logits of the
    same bars' windows shuffled in time, and of constant windows (the training median window); a
    softmax is unchanged by a shift common to all three logits, so only the margins count.

    ``input_blind`` is True when the gap barely moves across bars (variation ratio <= ``BLIND_RATIO``
    or std <= ``BLIND_NATS`` nats) and so does every probe given (relative change <= ``BLIND_RATIO``
    or <= ``BLIND_NATS`` nats). Attribution (integrated gradients, Sundararajan et al. 2017) is the
    finer test: see :func:`attribution_summary`.

    Parameters
    ----------
    logits : array_like, shape (n, 3)
        The real windows' logits.
    shuffled_logits : array_like, shape (n, 3), optional
        The logits of the same windows with their bars shuffled in time.
    constant_logits : array_like, shape (3,), (1, 3) or (n, 3), optional
        The logits of constant windows.

    Returns
    -------
    Sensitivity

    References
    ----------
    Sundararajan, M., Taly, A., Yan, Q. (2017). Axiomatic attribution for deep networks. ICML.

    Examples
    --------
    >>> blind = np.tile([0.0, 2.0, -0.5], (20, 1))
    >>> s = sensitivity(blind, blind, [0.0, 2.0, -0.5])
    >>> s.variation_ratio, s.shuffled_change, s.input_blind
    (0.0, 0.0, True)
    """
    x = _logits("logits", logits)
    if shuffled_logits is not None and np.shape(shuffled_logits) != x.shape:
        raise FlagcoreError(
            f"shuffled_logits must have the logits' shape {x.shape}, got {np.shape(shuffled_logits)}"
        )
    g = _hold_gap(x)
    mean, std = float(g.mean()), float(g.std())
    variation = _ratio(std, abs(mean))
    shuffled = _probe_change(x, shuffled_logits, "shuffled_logits")
    constant = _probe_change(x, constant_logits, "constant_logits")
    still = variation <= BLIND_RATIO or std <= BLIND_NATS
    for probe in (shuffled, constant):
        if probe is not None:
            still = still and (probe[0] <= BLIND_RATIO or probe[1] <= BLIND_NATS)
    return Sensitivity(
        gap_mean=mean,
        gap_std=std,
        variation_ratio=variation,
        shuffled_change=None if shuffled is None else shuffled[0],
        constant_change=None if constant is None else constant[0],
        shuffled_change_nats=None if shuffled is None else shuffled[1],
        constant_change_nats=None if constant is None else constant[1],
        input_blind=bool(still),
        n_bars=int(x.shape[0]),
    )


@dataclass
class AttributionSummary:
    """Per-input attribution ranked, with the padded inputs' share (see :func:`attribution_summary`)."""

    top: list[tuple[str, float]]  # the largest inputs, (name, share of the total), largest first
    padded_share: float  # share of the total on the padded inputs
    completeness_error: float | None  # |sum of attributions - (f(x) - f(baseline))|; None: not checked
    total: float  # sum of |attribution| over inputs, bars and time (0: the output never moved)
    n_inputs: int
    padded_inputs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return _json_safe(self.__dict__)


def attribution_summary(
    per_input,
    input_names: list[str],
    padded_inputs: list[int],
    completeness_error: float | None,
    *,
    top: int = TOP_INPUTS,
) -> AttributionSummary:
    """Rank the model's inputs by their share of the total |attribution|.

    Integrated gradients attributes f(x) - f(baseline) to the inputs and, by completeness, the
    attributions of one window sum to that difference (Sundararajan, Taly, Yan 2017); captum returns
    the gap as the convergence delta, passed here as ``completeness_error``. Attribute the logit gap,
    not a saturated probability, whose gradients vanish.

    Parameters
    ----------
    per_input : array_like, shape (F,)
        Sum over bars and time of |attribution| of each input (non-negative).
    input_names : list of str, length F
    padded_inputs : list of int
        Indices of the inputs that are zero padding in the evaluated period.
    completeness_error : float or None
        The largest (or mean) |convergence delta|; None when not checked.
    top : int, default 10
        How many inputs ``top`` lists.

    Returns
    -------
    AttributionSummary
        Shares are of the total; all 0 when the total is 0 (no attribution at all).

    References
    ----------
    Sundararajan, M., Taly, A., Yan, Q. (2017). Axiomatic attribution for deep networks. ICML.

    Examples
    --------
    >>> a = attribution_summary([6.0, 3.0, 1.0], ["ret_1", "vol", "flow"], [2], 1e-4, top=2)
    >>> a.top, a.padded_share
    ([('ret_1', 0.6), ('vol', 0.3)], 0.1)
    """
    v = np.asarray(per_input, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise FlagcoreError(f"per_input must be a non-empty 1-d array, got shape {v.shape}")
    if not np.isfinite(v).all() or (v < 0).any():
        raise FlagcoreError("per_input must hold finite non-negative sums of |attribution|")
    if len(input_names) != v.size:
        raise FlagcoreError(f"{len(input_names)} input names for {v.size} inputs")
    bad = [j for j in padded_inputs if not 0 <= int(j) < v.size]
    if bad:
        raise FlagcoreError(f"padded input index {bad[0]} outside 0..{v.size - 1}")
    if completeness_error is not None and not (math.isfinite(completeness_error) and completeness_error >= 0):
        raise FlagcoreError(f"completeness_error must be a finite number >= 0, got {completeness_error!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise FlagcoreError(f"top must be an integer >= 1, got {top!r}")
    total = float(v.sum())
    share = v / total if total > 0 else np.zeros_like(v)
    order = np.argsort(-share, kind="stable")[:top]
    padded = sorted({int(j) for j in padded_inputs})
    return AttributionSummary(
        top=[(str(input_names[j]), float(share[j])) for j in order],
        padded_share=float(share[padded].sum()) if padded else 0.0,
        completeness_error=None if completeness_error is None else float(completeness_error),
        total=total,
        n_inputs=int(v.size),
        padded_inputs=[str(input_names[j]) for j in padded],
    )


# ----------------------------------------------------------------------------- verdicts


@dataclass
class Evidence:
    """Every measure one explain gathered; all but ``test`` may be missing (None)."""

    test: Outcome  # the model on the evaluated bars
    prior: PriorCheck | None = None
    padding_median: Outcome | None = None  # padded inputs filled with per-feature training medians
    padding_resample: Outcome | None = None  # padded inputs filled from resampled training rows
    shift: Outcome | None = None  # the shifted inputs quantile-mapped onto their training distribution
    shifted_inputs: list[str] = field(default_factory=list)  # the inputs the shift counterfactual mapped
    sensitivity: Sensitivity | None = None
    attribution: AttributionSummary | None = None
    in_sample: Outcome | None = None  # the training period's last year
    in_sample_prior: PriorCheck | None = None
    has_padding: bool = False  # some input is zero padding in the evaluated period

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            out[k] = v.to_dict() if hasattr(v, "to_dict") else _json_safe(v)
        return out


@dataclass
class CauseVerdict:
    """One suspected cause judged: the verdict, the rule in words, the numbers it read."""

    cause: str  # a key of vocab.ROOT_CAUSES
    title: str
    verdict: str  # one of vocab.CAUSE_VERDICTS
    rule: str  # the rule applied, in words, with its thresholds and the values it found
    numbers: dict[str, Any] = field(default_factory=dict)  # the figures the rule read
    missing: list[str] = field(default_factory=list)  # Evidence fields needed but absent: "inconclusive"

    def to_dict(self) -> dict:
        return _json_safe(self.__dict__)


def _verdict(cause: str, verdict: str, rule: str, numbers: dict, missing: list[str] | None = None):
    return CauseVerdict(cause, ROOT_CAUSES[cause], verdict, rule, _json_safe(numbers), list(missing or []))


def _needs(missing: list[str]) -> str:
    return "inconclusive: needs " + "; ".join(MEASURE_TITLES.get(m, m) for m in missing)


def fill_removes_collapse(before: Outcome, after: Outcome) -> bool:
    """Whether a counterfactual fill removes ``before``'s collapse.

    True when the share of ``before``'s dominant class falls by at least ``FILL_SHARE_DROP`` and
    ``after`` is not collapsed, or when the trades rise from at most ``TRADES_BEFORE_MAX`` to at
    least ``TRADES_AFTER_MIN``.

    Examples
    --------
    >>> b = Outcome({"SELL": 0.0, "HOLD": 1.0, "BUY": 0.0}, 0.9, 0, 0.0, False, True, 500)
    >>> a = Outcome({"SELL": 0.3, "HOLD": 0.4, "BUY": 0.3}, 0.6, 40, 0.5, True, False, 500)
    >>> fill_removes_collapse(b, a), fill_removes_collapse(b, b)
    (True, False)
    """
    dom = before.dominant_class
    drop = before.dominant_share - float(after.action_shares.get(dom, 0.0))
    shares = drop >= FILL_SHARE_DROP - 1e-12 and not after.collapsed
    trades = before.trades <= TRADES_BEFORE_MAX and after.trades >= TRADES_AFTER_MIN
    return bool(shares or trades)


def _fill_numbers(prefix: str, before: Outcome, after: Outcome) -> dict:
    dom = before.dominant_class
    return {
        f"{prefix}_{dom.lower()}_share": after.action_shares.get(dom, 0.0),
        f"{prefix}_share_drop": before.dominant_share - after.action_shares.get(dom, 0.0),
        f"{prefix}_collapsed": after.collapsed,
        f"{prefix}_trades": after.trades,
        f"{prefix}_sharpe": after.sharpe,
        f"{prefix}_mean_confidence": after.mean_confidence,
    }


def _fill_text(key: str, before: Outcome, after: Outcome) -> str:
    dom = before.dominant_class
    return (
        f"{key}: {dom} {before.dominant_share:.0%} -> {after.action_shares.get(dom, 0.0):.0%}, "
        f"{'still collapsed' if after.collapsed else 'not collapsed'}, "
        f"trades {before.trades} -> {after.trades}"
    )


FILL_RULE = (
    f"the share of the dominant class falls by >= {FILL_SHARE_DROP * 100:.0f} points and the collapse "
    f"verdict goes away, or the trades rise from <= {TRADES_BEFORE_MAX} to >= {TRADES_AFTER_MIN}"
)


def _fills(ev: Evidence) -> dict[str, Outcome | None]:
    return {"padding_median": ev.padding_median, "padding_resample": ev.padding_resample, "shift": ev.shift}


def _removed_by(ev: Evidence) -> list[str]:
    """The counterfactuals (Evidence field names) that remove the test period's collapse."""
    return [k for k, o in _fills(ev).items() if o is not None and fill_removes_collapse(ev.test, o)]


def _base_numbers(ev: Evidence) -> dict:
    t = ev.test
    return {
        "collapsed": t.collapsed,
        "dominant_class": t.dominant_class,
        "dominant_share": t.dominant_share,
        "trades": t.trades,
    }


def _prior_verdict(ev: Evidence) -> CauseVerdict:
    t, pc = ev.test, ev.prior
    rule = (
        "supported when the model collapses on the test period and in sample (when measured), its mean "
        f"gaps logit_HOLD - logit_c lie within {PRIOR_GAP_TOLERANCE} nats of log(pi_HOLD / pi_c) with a "
        f"std across bars <= {PRIOR_GAP_STD_MAX} nats, and no fill removes the collapse"
    )
    numbers = _base_numbers(ev)
    if ev.in_sample is not None:
        numbers["in_sample_collapsed"] = ev.in_sample.collapsed
    if not t.collapsed:
        return _verdict(
            "prior", NOT_SUPPORTED, f"{rule}; the model does not collapse on the test period", numbers
        )
    if pc is None:
        return _verdict("prior", INCONCLUSIVE, f"{rule}; {_needs(['prior'])}", numbers, ["prior"])
    for name in ("SELL", "BUY"):
        numbers[f"gap_{name.lower()}"] = pc.mean_gaps[name]
        numbers[f"log_prior_ratio_{name.lower()}"] = pc.log_prior_ratios[name]
        numbers[f"gap_std_{name.lower()}"] = pc.gap_std[name]
    numbers["margin_explained"] = pc.margin_explained
    numbers["mean_confidence"] = pc.mean_confidence
    numbers["prior_hold"] = pc.prior[HOLD]
    if ev.in_sample_prior is not None:
        for name in ("SELL", "BUY"):
            numbers[f"in_sample_gap_{name.lower()}"] = ev.in_sample_prior.mean_gaps[name]
    dev = max(abs(v) for v in pc.gap_deviation.values())
    spread = max(pc.gap_std.values())
    removed = _removed_by(ev)
    gaps = ", ".join(
        f"{n} {pc.mean_gaps[n]:.2f} vs {pc.log_prior_ratios[n]:.2f} (std {pc.gap_std[n]:.2f})"
        for n in ("SELL", "BUY")
    )
    if dev > PRIOR_GAP_TOLERANCE:
        why = f"the gaps ({gaps}) lie up to {dev:.2f} nats from the log prior ratios: not the prior's"
    elif spread > PRIOR_GAP_STD_MAX:
        why = f"the gaps ({gaps}) vary across bars by up to {spread:.2f} nats: the model reads its inputs"
    elif ev.in_sample is not None and not ev.in_sample.collapsed:
        why = f"the gaps ({gaps}) sit at the prior, but the model does not collapse in sample"
    elif removed:
        why = f"the gaps ({gaps}) sit at the prior, but {', '.join(removed)} removes the collapse"
    else:
        sample = "" if ev.in_sample is not None else " (in sample not measured)"
        why = (
            f"the gaps ({gaps}) sit at the log prior ratios and barely vary; the prior accounts for "
            f"{pc.margin_explained:.0%} of the HOLD margin; collapsed on the test period{sample}"
            + ("" if ev.in_sample is None else " and in sample")
        )
        return _verdict("prior", SUPPORTED, f"{rule}; {why}", numbers)
    return _verdict("prior", NOT_SUPPORTED, f"{rule}; {why}", numbers)


def _fill_verdict(cause: str, ev: Evidence, keys: list[str], rule: str) -> CauseVerdict:
    t = ev.test
    numbers = _base_numbers(ev)
    if ev.in_sample is not None:
        numbers["in_sample_collapsed"] = ev.in_sample.collapsed
    if cause == "shift":
        numbers["shifted_inputs"] = ", ".join(ev.shifted_inputs)
    if not t.collapsed:
        return _verdict(
            cause, NOT_SUPPORTED, f"{rule}; the model does not collapse on the test period", numbers
        )
    if cause == "padding" and not ev.has_padding:
        return _verdict(cause, NOT_SUPPORTED, f"{rule}; no input is padded in the evaluated period", numbers)
    fills = _fills(ev)
    missing = [k for k in keys if fills[k] is None]
    numbers["mean_confidence"] = t.mean_confidence
    removed = []
    for k in keys:
        o = fills[k]
        if o is not None:
            numbers.update(_fill_numbers(k, t, o))
            if fill_removes_collapse(t, o):
                removed.append(k)
    moves = {k: _fill_text(k, t, o) for k in keys if (o := fills[k]) is not None}
    if removed:
        return _verdict(cause, SUPPORTED, f"{rule}; " + "; ".join(moves[k] for k in removed), numbers)
    if missing:
        return _verdict(cause, INCONCLUSIVE, f"{rule}; {_needs(missing)}", numbers, missing)
    return _verdict(
        cause, NOT_SUPPORTED, f"{rule}; nothing moves enough (" + "; ".join(moves.values()) + ")", numbers
    )


def _blind_verdict(ev: Evidence, prior_supported: bool) -> CauseVerdict:
    t, s, pc = ev.test, ev.sensitivity, ev.prior
    rule = (
        "supported when the model collapses and its logits barely move: the HOLD gap's std across bars "
        f"<= {BLIND_RATIO:.0%} of its mean (or <= {BLIND_NATS} nats), and the shuffled and constant "
        f"windows change the HOLD margins by <= {BLIND_RATIO:.0%} of the gap (or <= {BLIND_NATS} nats); "
        "not when a fill removes the collapse, nor when the prior rule holds (a prior-only model "
        "ignores its inputs too, but its cause is the prior)"
    )
    numbers = _base_numbers(ev)
    if s is not None:
        numbers.update(
            {
                "gap_mean": s.gap_mean,
                "gap_std": s.gap_std,
                "variation_ratio": s.variation_ratio,
                "shuffled_change": s.shuffled_change,
                "constant_change": s.constant_change,
            }
        )
    a = ev.attribution
    note = ""
    if a is not None:
        numbers["padded_attribution_share"] = a.padded_share
        numbers["completeness_error"] = a.completeness_error
        note = f"; the padded inputs carry {a.padded_share:.1%} of the attribution"
        if a.padded_share < 0.01:
            note += " (near 0: the model does not read them)"
    if not t.collapsed:
        return _verdict(
            "input_blind",
            NOT_SUPPORTED,
            f"{rule}; the model does not collapse on the test period{note}",
            numbers,
        )
    removed = _removed_by(ev)
    if removed:
        return _verdict(
            "input_blind",
            NOT_SUPPORTED,
            f"{rule}; {', '.join(removed)} removes the collapse: the model responds to its inputs{note}",
            numbers,
        )
    if s is None:
        return _verdict(
            "input_blind", INCONCLUSIVE, f"{rule}; {_needs(['sensitivity'])}{note}", numbers, ["sensitivity"]
        )
    if s.shuffled_change is None and s.constant_change is None:
        return _verdict(
            "input_blind",
            INCONCLUSIVE,
            f"{rule}; the gap's variation ratio is {_fmt(s.variation_ratio, '.3f')}, but "
            f"{_needs(['sensitivity'])}{note}",
            numbers,
            ["sensitivity"],
        )
    moved = (
        f"gap {s.gap_mean:.2f} +- {s.gap_std:.3f} nats (ratio {_fmt(s.variation_ratio, '.3f')}), "
        f"shuffled change {_fmt(s.shuffled_change, '.3f')}, constant change {_fmt(s.constant_change, '.3f')}"
    )
    if not s.input_blind:
        return _verdict("input_blind", NOT_SUPPORTED, f"{rule}; the logits move: {moved}{note}", numbers)
    if prior_supported:
        return _verdict(
            "input_blind",
            NOT_SUPPORTED,
            f"{rule}; the logits barely move ({moved}), but their gaps sit within {PRIOR_GAP_TOLERANCE} "
            f"nats of the log prior ratios: a prior-only model, named under the prior{note}",
            numbers,
        )
    caveat = " (without the prior a prior-only model cannot be told apart)" if pc is None else ""
    return _verdict(
        "input_blind", SUPPORTED, f"{rule}; the logits barely move: {moved}{caveat}{note}", numbers
    )


def _overconfidence_verdict(ev: Evidence) -> CauseVerdict:
    t, pc = ev.test, ev.prior
    rule = (
        f"supported when the mean confidence exceeds the label prior share of the predicted majority class "
        f"by > {OVERCONFIDENCE_MARGIN * 100:.0f} points and that class's mean logit margin exceeds its log "
        f"prior ratio by > {OVERCONFIDENCE_GAP_EXCESS} nats (Guo et al. 2017: confidence above accuracy); "
        f"not when a fill that removes the collapse also lowers the confidence by >= "
        f"{CONFIDENCE_CHANGE * 100:.0f} points (the filled inputs drive it)"
    )
    numbers: dict[str, Any] = {"mean_confidence": t.mean_confidence, "dominant_class": t.dominant_class}
    fills = {k: o for k, o in _fills(ev).items() if o is not None}
    for k, o in fills.items():
        numbers[f"{k}_mean_confidence"] = o.mean_confidence
    if ev.in_sample is not None:
        numbers["in_sample_mean_confidence"] = ev.in_sample.mean_confidence
    changed = [k for k, o in fills.items() if abs(o.mean_confidence - t.mean_confidence) >= CONFIDENCE_CHANGE]
    fill_note = ""
    if changed:
        moves = ", ".join(f"{k} {fills[k].mean_confidence:.0%}" for k in changed)
        fill_note = f"; the fills change the confidence ({t.mean_confidence:.0%} -> {moves})"
    elif fills:
        fill_note = f"; the fills leave the confidence within {CONFIDENCE_CHANGE * 100:.0f} points"
    if pc is None:
        return _verdict(
            "overconfidence", INCONCLUSIVE, f"{rule}; {_needs(['prior'])}{fill_note}", numbers, ["prior"]
        )
    dom = CLASS_NAMES.index(pc.dominant_class)
    excess = pc.dominant_margin - pc.dominant_log_ratio
    numbers.update(
        {
            "prior_share": pc.prior[dom],
            "confidence_excess": pc.mean_confidence - pc.prior[dom],
            "dominant_margin": pc.dominant_margin,
            "dominant_log_ratio": pc.dominant_log_ratio,
            "margin_excess": excess,
        }
    )
    said = (
        f"confidence {pc.mean_confidence:.0%} against a {pc.dominant_class} prior of {pc.prior[dom]:.0%}; "
        f"{pc.dominant_class} margin {pc.dominant_margin:.2f} nats against log prior ratio "
        f"{pc.dominant_log_ratio:.2f}"
    )
    over = pc.mean_confidence > pc.prior[dom] + OVERCONFIDENCE_MARGIN and excess > OVERCONFIDENCE_GAP_EXCESS
    driven = [
        k
        for k in _removed_by(ev)
        if t.mean_confidence - fills[k].mean_confidence >= CONFIDENCE_CHANGE - 1e-12
    ]
    if over and driven:
        said += f"; but {', '.join(driven)} removes the collapse and lowers the confidence"
    verdict = SUPPORTED if over and not driven else NOT_SUPPORTED
    return _verdict("overconfidence", verdict, f"{rule}; {said}{fill_note}", numbers)


def root_cause_verdicts(ev: Evidence) -> list[CauseVerdict]:
    """One verdict per suspected cause of ``vocab.ROOT_CAUSES``, in its order.

    The rules and their thresholds are in the module docstring and in each verdict's ``rule``;
    a verdict is "inconclusive" only when a measure it needs is missing, and ``missing`` names it
    (an Evidence field; ``MEASURE_TITLES`` says it in words); ``missing`` is empty otherwise. A
    measure a rule can do without (the in-sample outcome for the prior, the prior for input_blind)
    is named in the rule's text when absent.

    Parameters
    ----------
    ev : Evidence

    Returns
    -------
    list of CauseVerdict
        Keys "prior", "padding", "shift", "input_blind", "overconfidence".

    References
    ----------
    Menon et al. (2021) for the prior's gaps; Sundararajan, Taly, Yan (2017) for attribution;
    Guo et al. (2017) for overconfidence.

    Examples
    --------
    >>> pi = np.array([0.2, 0.61, 0.19])
    >>> x = np.tile([-5.6, 5.0, -5.6], (50, 1))
    >>> ev = Evidence(test=outcome(x, np.linspace(100, 110, 50), 8760), prior=prior_check(x, pi))
    >>> [(v.cause, v.verdict) for v in root_cause_verdicts(ev)][::4]
    [('prior', 'not supported'), ('overconfidence', 'supported')]
    """
    if not isinstance(ev, Evidence):
        raise FlagcoreError(f"root_cause_verdicts needs an Evidence, got {type(ev).__name__}")
    fill = f"supported when the model collapses and the fill removes it: {FILL_RULE}"
    prior = _prior_verdict(ev)
    out = [
        prior,
        _fill_verdict(
            "padding",
            ev,
            ["padding_median", "padding_resample"],
            f"{fill} (the padded inputs filled with per-feature training medians, or from resampled training "
            "rows; either suffices, both must fail for not supported)",
        ),
        _fill_verdict(
            "shift",
            ev,
            ["shift"],
            f"{fill} (the shifted inputs quantile-mapped onto their training distribution)",
        ),
        _blind_verdict(ev, prior.verdict == SUPPORTED),
        _overconfidence_verdict(ev),
    ]
    assert [v.cause for v in out] == list(ROOT_CAUSES)
    return out
