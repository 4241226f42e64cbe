"""Why a model collapsed: each suspected cause judged from measures taken on the model itself.

The seed (FINDINGS_MODEL_COLLAPSE.md) suspects class imbalance under plain cross-entropy, and the
zero-padded order-flow inputs; its model was 99% confident with a HOLD gap of about 10.6 nats, far
beyond the log prior ratio of about 1.1 that a 61% HOLD prior explains. Each cause leaves its own
fingerprint (root-cause.md); this module turns the measures into one verdict per cause of
``vocab.ROOT_CAUSES``: "supported", "not supported" or "inconclusive" (a measure the rule needs is
missing, and the verdict says which).

The measures it reads (:func:`prior_check`, :func:`outcome`, :func:`sensitivity`,
:func:`attribution_summary`) live in ``analysis.root_cause_measures``; they are computed elsewhere
from the model, passed in as arrays, and gathered in one :class:`Evidence`.

The rules of :func:`root_cause_verdicts` (thresholds are the module constants, and
``BLIND_RATIO`` / ``BLIND_NATS`` of ``root_cause_measures``; each verdict carries its rule in words
with the numbers it read):

- prior: supported when the model collapses on the test period and, when measured, in sample; its
  mean gaps lie within ``PRIOR_GAP_TOLERANCE`` nats of the log prior ratios; the gaps vary little
  across bars (std <= ``PRIOR_GAP_STD_MAX`` nats); and no fill removes the collapse.
- padding / shift: supported when the model collapses and a counterfactual fill removes it (the
  dominant class's share falls by ``FILL_SHARE_DROP`` or more and the collapse verdict goes away, or
  the trades rise from at most ``TRADES_BEFORE_MAX`` to at least ``TRADES_AFTER_MIN``).
  Padding needs both fills (medians, resampled training rows): either one removing the collapse
  suffices for "supported", both must fail for "not supported"; a period without padded inputs
  gets "not supported". The shift counterfactual should map the shifted inputs that are not padding
  (PSI > ``SHIFT_PSI_MIN`` = 0.25, Siddiqi 2006), so that it tells shift apart from padding; when no
  real input shifted (``shifted_inputs`` empty), shift is "not supported" and says "no input shifted".
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

from flagcore.analysis.root_cause_measures import (
    BLIND_NATS,
    BLIND_RATIO,
    AttributionSummary,
    Outcome,
    PriorCheck,
    Sensitivity,
    json_safe,
)
from flagcore.errors import FlagcoreError
from flagcore.vocab import CAUSE_VERDICTS, CLASS_NAMES, HOLD, ROOT_CAUSES

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = CAUSE_VERDICTS

# prior: a prior-only model's gaps sit at log(pi_HOLD / pi_c) for every bar
PRIOR_GAP_TOLERANCE = 0.5  # nats between a mean gap and its log prior ratio
PRIOR_GAP_STD_MAX = 0.5  # nats: the spread of a gap across bars that still counts as constant
# padding and shift: a fill removes the collapse
FILL_SHARE_DROP = 0.20  # the dominant class's share falls by at least 20 points ...
TRADES_BEFORE_MAX = 1  # ... or the trades rise from at most 1 ...
TRADES_AFTER_MIN = 10  # ... to at least 10
CONFIDENCE_CHANGE = 0.10  # a fill that moves the mean confidence by 10 points or more changes it
SHIFT_PSI_MIN = 0.25  # PSI above which an input counts as shifted (Siddiqi's "major" band)
# overconfidence
OVERCONFIDENCE_MARGIN = 0.20  # mean confidence above the majority class's prior share by 20 points
OVERCONFIDENCE_GAP_EXCESS = 2.0  # nats of the majority class's margin beyond its log prior ratio

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


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, spec)


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
            out[k] = v.to_dict() if hasattr(v, "to_dict") else json_safe(v)
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
        return json_safe(self.__dict__)


def _verdict(cause: str, verdict: str, rule: str, numbers: dict, missing: list[str] | None = None):
    return CauseVerdict(cause, ROOT_CAUSES[cause], verdict, rule, json_safe(numbers), list(missing or []))


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
    # measured with nothing to map: no real input moved by PSI > SHIFT_PSI_MIN, and the
    # counterfactual is the evaluated period itself; say so rather than "nothing moves enough"
    unshifted = cause == "shift" and ev.shift is not None and not ev.shifted_inputs
    none_shifted = f"no input shifted: no real input has PSI > {SHIFT_PSI_MIN}, nothing to map"
    if cause == "shift":
        numbers["shifted_inputs"] = ", ".join(ev.shifted_inputs)
        numbers["no_input_shifted"] = unshifted
    if not t.collapsed:
        why = "the model does not collapse on the test period" + (f"; {none_shifted}" if unshifted else "")
        return _verdict(cause, NOT_SUPPORTED, f"{rule}; {why}", numbers)
    if unshifted:
        return _verdict(cause, NOT_SUPPORTED, f"{rule}; {none_shifted}", numbers)
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
    >>> import numpy as np
    >>> from flagcore.analysis.root_cause_measures import outcome, prior_check
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
