"""The measures a root-cause verdict reads, each taken from one set of a model's logits.

``analysis.root_cause`` judges each suspected cause of a collapse from these (root-cause.md); they
are computed from the model by the caller (``pipeline.explain``) and passed in as arrays:

- :func:`prior_check`: the label prior against the predicted shares and the mean logit gaps
  logit_HOLD - logit_c against log(pi_HOLD / pi_c), the gaps of a cross-entropy model that learned
  nothing but the prior (Menon et al. 2021).
- :func:`outcome`: action shares, confidence, trades, Sharpe and the collapse verdict of one set of
  logits: the test period, the padding and shift counterfactuals, the training period's last year.
- :func:`sensitivity`: how far the HOLD gap moves across bars and under two probes (time-shuffled
  windows, constant windows): the cheap test of an input-blind model (thresholds ``BLIND_RATIO``
  and ``BLIND_NATS``).
- :func:`attribution_summary`: per-input attribution (integrated gradients; Sundararajan, Taly, Yan
  2017) summed over bars and time, ranked, with the padded inputs' share.

Each returns a dataclass (:class:`PriorCheck`, :class:`Outcome`, :class:`Sensitivity`,
:class:`AttributionSummary`) whose ``to_dict`` is JSON-safe (:func:`json_safe`).

References
----------
Menon, A. K., Jayasumana, S., Rawat, A. S., Jain, H., Veit, A., Kumar, S. (2021). Long-tail
learning via logit adjustment. ICLR.
Sundararajan, M., Taly, A., Yan, Q. (2017). Axiomatic attribution for deep networks. ICML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flagcore.analysis.backtest import BacktestConfig, backtest, kelly_probability
from flagcore.analysis.diagnostics import collapse_verdict, softmax
from flagcore.errors import FlagcoreError
from flagcore.vocab import BUY, CLASS_NAMES, HOLD, SELL

OTHERS = (SELL, BUY)  # the classes a HOLD gap is measured against
# input sensitivity: the logits barely move
BLIND_RATIO = 0.05  # a movement at most 5% of the gap's size ...
BLIND_NATS = 0.01  # ... or at most 0.01 nats
TOP_INPUTS = 10  # inputs ranked in an attribution summary


# ----------------------------------------------------------------------------- helpers


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, tuples as lists and NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
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
        return json_safe(self.__dict__)


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
        return json_safe(
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
        return json_safe(self.__dict__)


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
        return json_safe(self.__dict__)


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
