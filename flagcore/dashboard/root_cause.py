"""What the "Root cause" page shows of the stored ``flagcore explain``, and running explain from the page.

The stored result (``Store.root_cause``, the newest explain of a run, a JSON dict of
``pipeline.explain.ExplainResult.to_dict``) becomes tables: :func:`verdict_table` (one row per
``vocab.ROOT_CAUSES`` key: the cause, its verdict, the rule applied with what it found, the key
numbers), :func:`computed_line`, :func:`prior_tables`, :func:`outcome_table` (the padding, shift
and in-sample counterfactuals before and after), :func:`sensitivity_table`,
:func:`attribution_table` and :func:`missing_table`. The report's "Root cause" section uses the
same verdict table. :func:`run_explain` runs ``flagcore explain`` from the page, with
:func:`explain_settings` (fewer bars and windows for a big model). The live ablation, which infers
a sample of evaluated bars again after a fill, is ``dashboard.ablation``.

The pipeline is imported lazily: the page's tables do not need it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from flagcore.analysis.root_cause_measures import Outcome
from flagcore.vocab import CAUSE_VERDICTS, CLASS_NAMES, ROOT_CAUSES

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = CAUSE_VERDICTS

DEFAULT_BARS = 500  # the sample on the page, as ``flagcore explain``'s default
BIG_MODEL_PARAMS = 10_000_000  # above this (the ``full`` preset) samples and explain are sized down
# ``flagcore explain`` from the page: its defaults, or the README's CPU settings for a big model
EXPLAIN_SMALL = {"bars": DEFAULT_BARS, "ig_windows": 64}
EXPLAIN_BIG = {"bars": 100, "ig_windows": 16}


BADGES = {SUPPORTED: "SUPPORTED", NOT_SUPPORTED: "not supported", INCONCLUSIVE: "inconclusive"}
BADGE_COLORS = {SUPPORTED: "red", NOT_SUPPORTED: "green", INCONCLUSIVE: "orange"}

# the numbers of each verdict shown in the table (all of them are in the stored result)
KEY_NUMBERS = {
    "prior": (
        "dominant_share",
        "gap_sell",
        "log_prior_ratio_sell",
        "gap_std_sell",
        "margin_explained",
        "in_sample_collapsed",
    ),
    "padding": (
        "trades",
        "padding_median_trades",
        "padding_resample_trades",
        "padding_median_share_drop",
        "padding_resample_share_drop",
    ),
    "shift": ("trades", "shift_trades", "shift_share_drop", "shifted_inputs"),
    "input_blind": ("variation_ratio", "shuffled_change", "constant_change", "padded_attribution_share"),
    "overconfidence": (
        "mean_confidence",
        "prior_share",
        "dominant_margin",
        "dominant_log_ratio",
        "margin_excess",
    ),
}
_PERCENT = ("share", "share_drop", "confidence", "margin_explained")

# the counterfactuals of an explain, in the order of the before/after table
OUTCOME_ROWS = {
    "test": "evaluated bars, as they are",
    "padding_median": "padded inputs = training medians",
    "padding_resample": "padded inputs = resampled training rows",
    "shift": "shifted inputs quantile-mapped",
    "in_sample": "training period's last year",
}


# ----------------------------------------------------------------------------- formatting


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def number_text(key: str, v: Any) -> str:
    """One stored number as text: shares and confidences in %, other floats to 3 digits, n/a for None.

    Examples
    --------
    >>> number_text("dominant_share", 0.987), number_text("gap_sell", 10.61), number_text("trades", 5)
    ('98.7%', '10.6', '5')
    """
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if _is_num(v):
        f = float(v)
        if not math.isfinite(f):
            return "n/a"
        if key.endswith(_PERCENT):
            return f"{f:.1%}"
        return f"{f:.3g}"
    return str(v) if v != "" else "none"


def numbers_text(cause: str, numbers: dict) -> str:
    """The key numbers of one verdict (``KEY_NUMBERS``; the first five when none of them is there)."""
    keys = [k for k in KEY_NUMBERS.get(cause, ()) if k in numbers] or list(numbers)[:5]
    return "; ".join(f"{k} {number_text(k, numbers[k])}" for k in keys)


def computed_when(result: dict) -> str:
    """When the explain was computed, as "YYYY-MM-DD HH:MM UTC"."""
    raw = str(result.get("computed_at") or "")
    try:
        return f"{datetime.fromisoformat(raw):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return raw or "at an unknown time"


def sampled_bars(result: dict) -> int:
    """The evaluated bars the explain sampled (fewer than asked when the period is shorter)."""
    s = result.get("settings") or {}
    return int((s.get("test_sample") or {}).get("bars") or s.get("bars") or 0)


def computed_line(result: dict) -> str:
    """ "computed <when> on <bars> bars (seed S)", for the page and the report.

    Examples
    --------
    >>> computed_line({"computed_at": "2025-01-02T03:04:05+00:00", "settings": {"bars": 500, "seed": 1}})
    'computed 2025-01-02 03:04 UTC on 500 bars (seed 1)'
    """
    seed = (result.get("settings") or {}).get("seed", 0)
    return f"computed {computed_when(result)} on {sampled_bars(result):,} bars (seed {seed})"


# ----------------------------------------------------------------------------- the stored result


def verdict_table(result: dict) -> pd.DataFrame:
    """One row per suspected cause of ``vocab.ROOT_CAUSES``, in its order: cause, verdict (a badge),
    the rule applied with what it found, and the key numbers it read."""
    by_cause = {v["cause"]: v for v in result.get("verdicts") or []}
    rows = []
    for cause, title in ROOT_CAUSES.items():
        v = by_cause.get(cause)
        if v is None:
            rows.append(
                {"cause": title, "verdict": BADGES[INCONCLUSIVE], "rule": "not judged", "numbers": ""}
            )
            continue
        rows.append(
            {
                "cause": v.get("title") or title,
                "verdict": BADGES.get(v["verdict"], v["verdict"]),
                "rule": v.get("rule", ""),
                "numbers": numbers_text(cause, v.get("numbers") or {}),
            }
        )
    return pd.DataFrame(rows, columns=["cause", "verdict", "rule", "numbers"])


def verdict_badges(result: dict) -> list[tuple[str, str]]:
    """(label, color) per cause for ``st.badge``, the verdict at a glance: "padding: supported"."""
    return [
        (f"{v['cause'].replace('_', ' ')}: {v['verdict']}", BADGE_COLORS.get(v["verdict"], "gray"))
        for v in result.get("verdicts") or []
    ]


def supported_causes(result: dict) -> list[str]:
    """The titles of the causes whose verdict is "supported"."""
    return [
        ROOT_CAUSES.get(v["cause"], v["cause"])
        for v in result.get("verdicts") or []
        if v["verdict"] == SUPPORTED
    ]


def model_line(result: dict) -> str:
    """Which model the explain measured, and how."""
    m = result.get("model") or {}
    how = "checked (sha256) and inferred again" if m.get("checked") else "not inferred again (stored logits)"
    ig = (result.get("settings") or {}).get("ig_windows")
    took = result.get("seconds")
    tail = f"; integrated gradients over {ig} windows" if ig else ""
    tail += f"; took {took:.1f} s" if isinstance(took, (int, float)) else ""
    return f"Baseline {m.get('kind', '?')} model {m.get('source', '?')}: {how}{tail}."


def missing_table(result: dict) -> pd.DataFrame:
    """The measures this explain could not compute, and why."""
    miss = result.get("missing") or {}
    return pd.DataFrame({"measure": list(miss), "why it is missing": list(miss.values())})


def _outcome_row(label: str, o: dict) -> dict:
    shares = o.get("action_shares") or {}
    sharpe = o.get("sharpe")
    return {
        "": label,
        **{c: shares.get(c) for c in CLASS_NAMES},
        "confidence": o.get("mean_confidence"),
        "trades": o.get("trades"),
        "Sharpe": sharpe if o.get("sharpe_defined", True) else None,
        "collapsed": "COLLAPSED" if o.get("collapsed") else "no",
        "bars": o.get("n_bars"),
    }


def outcome_table(outcomes: dict[str, Any]) -> pd.DataFrame:
    """label -> outcome (an ``Outcome`` or its dict) as rows: action shares, mean confidence,
    trades, Sharpe (blank when undefined: no trades), collapsed, bars."""
    rows = []
    for label, o in outcomes.items():
        if o is not None:
            rows.append(_outcome_row(label, o.to_dict() if isinstance(o, Outcome) else o))
    cols = ["", *CLASS_NAMES, "confidence", "trades", "Sharpe", "collapsed", "bars"]
    return pd.DataFrame(rows, columns=cols)


def counterfactual_table(result: dict) -> pd.DataFrame:
    """The stored measures' outcomes before and after each fill, and in sample (``OUTCOME_ROWS``)."""
    m = result.get("measures") or {}
    labels = dict(OUTCOME_ROWS)
    shifted = m.get("shifted_inputs") or []
    if shifted:
        labels["shift"] = f"shifted inputs quantile-mapped ({', '.join(shifted)})"
    elif m.get("shift"):  # measured with nothing to map: the evaluated bars themselves
        labels["shift"] = "no input shifted (PSI > 0.25): nothing mapped"
    return outcome_table({labels[k]: m.get(k) for k in OUTCOME_ROWS})


def prior_tables(result: dict) -> tuple[pd.DataFrame, pd.DataFrame, str] | None:
    """The prior check: per class prior / predicted / mean probability, the gaps against the log prior
    ratios (test period, and in sample when measured), and a sentence; None when not measured."""
    m = result.get("measures") or {}
    pc = m.get("prior")
    if not pc:
        return None
    shares = pd.DataFrame(
        {
            "class": list(CLASS_NAMES),
            "training prior": pc["prior"],
            "predicted share": pc["predicted_shares"],
            "mean probability": pc["mean_probs"],
        }
    )
    ins = m.get("in_sample_prior") or {}
    gaps = pd.DataFrame(
        [
            {
                "gap": f"HOLD - {c}",
                "mean gap (nats)": pc["mean_gaps"][c],
                "std across bars": pc["gap_std"][c],
                "log prior ratio": pc["log_prior_ratios"][c],
                "mean gap in sample": (ins.get("mean_gaps") or {}).get(c),
            }
            for c in ("SELL", "BUY")
        ]
    )
    sentence = (
        f"The prior accounts for {pc['margin_explained']:.0%} of the mean HOLD margin "
        f"({pc['prior_hold_margin']:.2f} of {pc['hold_margin']:.2f} nats); mean confidence "
        f"{pc['mean_confidence']:.1%}."
    )
    return shares, gaps, sentence


def sensitivity_table(result: dict) -> pd.DataFrame | None:
    """How far the HOLD gap moves across bars and under the probes; None when not measured."""
    s = (result.get("measures") or {}).get("sensitivity")
    if not s:
        return None
    rows = [
        ("HOLD gap, mean (nats)", s.get("gap_mean")),
        ("HOLD gap, std across bars (nats)", s.get("gap_std")),
        ("variation ratio (std / |mean|)", s.get("variation_ratio")),
        ("time-shuffled windows: change / gap", s.get("shuffled_change")),
        ("time-shuffled windows: change (nats)", s.get("shuffled_change_nats")),
        ("constant window: change / gap", s.get("constant_change")),
        ("constant window: change (nats)", s.get("constant_change_nats")),
    ]
    out = [{"measure": k, "value": number_text(k, v)} for k, v in rows]
    out.append({"measure": "input-blind", "value": "yes" if s.get("input_blind") else "no"})
    return pd.DataFrame(out)


def attribution_table(result: dict) -> tuple[pd.DataFrame, str] | None:
    """The inputs with the largest share of the attribution, and a sentence on the padded inputs;
    None when not measured."""
    a = (result.get("measures") or {}).get("attribution")
    if not a:
        return None
    padded = set(a.get("padded_inputs") or [])
    top = pd.DataFrame(
        [{"input": n, "share": s, "padded": "yes" if n in padded else ""} for n, s in a.get("top") or []],
        columns=["input", "share", "padded"],
    )
    err = a.get("completeness_error")
    sentence = (
        f"The {len(padded)} padded inputs carry {a['padded_share']:.1%} of the attribution "
        f"(integrated gradients of the logit gap over {a.get('n_inputs')} inputs"
        + ("" if err is None else f"; completeness error {err:.1e}")
        + ")."
    )
    return top, sentence


# ----------------------------------------------------------------------------- explain from the page


def explain_settings(n_params: int) -> dict:
    """``flagcore explain``'s settings from the page: its defaults, or fewer bars and windows for a
    big model on a CPU (``EXPLAIN_BIG``, as the README says)."""
    return dict(EXPLAIN_BIG if n_params > BIG_MODEL_PARAMS else EXPLAIN_SMALL)


def run_explain(store, run_id: int, *, bars: int, ig_windows: int, seed: int = 0, progress=None):
    """``pipeline.explain.explain_run``, appended to the run (the caller clears the dashboard's caches)."""
    from flagcore.pipeline.explain import explain_run
    from flagcore.pipeline.settings import no_progress
    from flagcore.store.connection import unshared_reads

    with unshared_reads():  # it writes: the page's shared read connection would refuse the write
        return explain_run(
            store, run_id, bars=bars, seed=seed, ig_windows=ig_windows, progress=progress or no_progress
        )
