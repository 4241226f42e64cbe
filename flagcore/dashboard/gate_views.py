"""The HIFA gate as the dashboard, the report and ``runs --json`` show it: stored criteria read back,
each value beside its rule and why it fails, both readings of the deflated Sharpe with the minimum
track record and backtest lengths, the gate table of a run's options and the gate's rules in words,
and each option's SELL/BUY signal apart from its sizing (configured beside unit sizing).

Like ``views``, every function takes stored rows or frames and returns what is shown; none reads the
store, and there is no streamlit here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from flagcore.analysis.gate import CriterionResult, rule_text, why_not
from flagcore.store.codec import from_json
from flagcore.vocab import BADGE, CRITERIA, CRITERION_LABELS


def criterion_text(criterion: str, value: float | None) -> str:
    """A criterion's value as the tables show it: a p-value to 4 places, a Sharpe ratio to 2."""
    if value is None or np.isnan(value):
        return "n/a"
    return f"{value:.4f}" if criterion == "permutation_p" else f"{value:.2f}"


# ----------------------------------------------------------------------------- the gate, in words
#
# A stored criterion is read back as the CriterionResult it was written from, so the rule and the
# reason it fails are written by ``analysis.gate`` (rule_text, why_not) whether the verdict was
# stored or computed live. The store writes infinity as null: a minimum track record that no
# length reaches (SR <= SR0) is read back as None, and shown as "never".

NOT_JUDGED = "not judged (run stored before this criterion)"
NOT_STORED = "n/a (run stored before this reading)"
NEVER_TRACK_RECORD = "never (SR <= SR0)"
NEVER_BACKTEST = "never (SR <= 0)"
# short names of the criteria for column headers: "trades >= 30"
_SHORT = {
    "min_trades": "trades",
    "cpcv_mean_sharpe": "CPCV mean Sharpe",
    "deflated_sharpe": "SR - SR0",
    "permutation_p": "permutation p",
}


def finite(x) -> float | None:
    """A number as a float, or None for null, NaN, infinity or a non-number (the store writes NaN and
    infinity as null)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def stored_criterion(row: Mapping[str, Any]) -> CriterionResult:
    """A stored ``hifa_criteria`` row (``Store.hifa``) as the :class:`CriterionResult` it was written
    from; a null value reads as NaN."""
    inputs = row["inputs"]
    if isinstance(inputs, str):
        inputs = from_json(inputs)
    value = finite(row["value"])
    return CriterionResult(
        str(row["criterion"]),
        float("nan") if value is None else value,
        float(row["threshold"]),
        str(row["rule"]),
        bool(row["passed"]),
        dict(inputs or {}),
    )


def stored_criteria(hifa: pd.DataFrame, option: str) -> dict[str, CriterionResult | None]:
    """One option's stored criteria in ``vocab.CRITERIA`` order; None for a criterion the run was
    stored without (runs stored before it existed)."""
    g = hifa[hifa["option"] == option]
    found = {str(r["criterion"]): stored_criterion(r) for _, r in g.iterrows()}
    return {c.key: found.get(c.key) for c in CRITERIA}


def value_text(result: CriterionResult) -> str:
    """A criterion's value as a table shows it: trades as a count, a p-value to 4 places, else 2."""
    if result.criterion == "min_trades":
        return "n/a" if np.isnan(result.value) else f"{result.value:,.0f}"
    return criterion_text(result.criterion, result.value)


def why_text(result: CriterionResult) -> str | None:
    """Why a criterion fails (``gate.why_not``); None when it passes. A run stored before the deflated
    Sharpe's two readings gets the plain comparison."""
    if result.passed:
        return None
    return why_not(result) or f"{value_text(result)} is not {result.rule} {result.threshold:g}"


def why_not_lines(results: Mapping[str, CriterionResult | None]) -> list[str]:
    """Each failing criterion's reason, labelled: "Trades (independent bets): 3 trades, below 30: ..."."""
    return [
        f"{CRITERION_LABELS[k]}: {why}"
        for k, r in results.items()
        if r is not None and (why := why_text(r)) is not None
    ]


def passed_count(results: Mapping[str, CriterionResult | None]) -> str:
    """ "k/n": the criteria passed of those judged (a run stored before a criterion judged fewer)."""
    judged = [r for r in results.values() if r is not None]
    return f"{sum(r.passed for r in judged)}/{len(judged)}"


def _probability(result: CriterionResult) -> tuple[float | None, float | None]:
    i = result.inputs
    return finite(i.get("dsr_probability")), finite(i.get("dsr_probability_threshold"))


def criteria_frame(results: Mapping[str, CriterionResult | None]) -> pd.DataFrame:
    """Criteria (stored or live) as a table in ``vocab.CRITERIA`` order: value, threshold, the rule in
    words (``gate.rule_text``), PASS/FAIL and why it fails. The deflated Sharpe shows both readings:
    the haircut SR - SR0 and the DSR probability."""
    out = []
    for c in CRITERIA:
        r = results.get(c.key)
        if r is None:
            out.append(
                {
                    "criterion": c.label,
                    "value": "n/a",
                    "threshold": "",
                    "rule": "",
                    "result": "not judged",
                    "why not": NOT_JUDGED,
                }
            )
            continue
        value, threshold = value_text(r), f"{r.threshold:g}"
        if c.key == "deflated_sharpe":
            p, p_min = _probability(r)
            if p is not None:
                value = f"SR - SR0 {value}, DSR probability {p:.3f}"
            if p_min is not None:
                threshold = f"{threshold} and {p_min:g}"
        out.append(
            {
                "criterion": c.label,
                "value": value,
                "threshold": threshold,
                "rule": rule_text(r),
                "result": BADGE[bool(r.passed)],
                "why not": why_text(r) or "",
            }
        )
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- how far from passing


def years_text(years: float) -> str:
    """ "0.47 years", "12.30 years", "1,234 years"."""
    return f"{years:,.2f} years" if years < 100 else f"{years:,.0f} years"


def _years_of(inputs: Mapping[str, Any], key: str, bars: float | None) -> float | None:
    years = finite(inputs.get(key))
    ppy = finite(inputs.get("periods_per_year"))
    if years is None and bars is not None and ppy:
        years = bars / ppy
    return years


def track_record_text(inputs: Mapping[str, Any]) -> str:
    """The minimum track record length (Bailey & Lopez de Prado 2012) in bars and calendar time:
    "4,100 bars (0.47 years)"; "never (SR <= SR0)" when no length reaches the DSR bar."""
    if "min_track_record_bars" not in inputs:
        return NOT_STORED
    bars = finite(inputs["min_track_record_bars"])
    if bars is None:
        return NEVER_TRACK_RECORD
    years = _years_of(inputs, "min_track_record_years", bars)
    return f"{bars:,.0f} bars" + ("" if years is None else f" ({years_text(years)})")


def backtest_length_text(inputs: Mapping[str, Any]) -> str:
    """The minimum backtest length for the trials counted (Bailey, Borwein, Lopez de Prado & Zhu
    2014), in years; "never (SR <= 0)" when a Sharpe this low is shown by chance at any length."""
    if "min_backtest_years" not in inputs:
        return NOT_STORED
    years = finite(inputs["min_backtest_years"])
    return NEVER_BACKTEST if years is None else years_text(years)


def sample_text(inputs: Mapping[str, Any]) -> str:
    """The backtest's own length: "1,755 bars (0.20 years)"."""
    n = finite(inputs.get("n_obs"))
    if n is None:
        return "n/a"
    years = _years_of(inputs, "backtest_years", n)
    return f"{n:,.0f} bars" + ("" if years is None else f" ({years_text(years)})")


def _long_enough(need: float | None, have: float | None, stored: bool) -> str:
    if not stored or have is None:
        return "n/a"
    if need is None:
        return "unreachable"
    return "long enough" if have >= need else "too short"


def deflated_table(result: CriterionResult | None) -> pd.DataFrame:
    """The deflated Sharpe's readings as a table: the haircut SR - SR0 and the DSR probability, each
    with its bar and result, then how far from passing: the minimum track record length and the
    minimum backtest length against the backtest's own length."""
    if result is None:
        return pd.DataFrame(columns=["reading", "value", "needs", "result"])
    i = result.inputs
    p, p_min = _probability(result)
    haircut_ok = i.get("haircut_passed", result.passed)  # older runs judged the haircut alone
    trl, btl = finite(i.get("min_track_record_bars")), finite(i.get("min_backtest_years"))
    n_obs, years = finite(i.get("n_obs")), _years_of(i, "backtest_years", finite(i.get("n_obs")))
    rows = [
        {
            "reading": "SR - SR0 (annualised)",
            "value": criterion_text("deflated_sharpe", result.value),
            "needs": f">= {result.threshold:g}",
            "result": BADGE[bool(haircut_ok)],
        },
        {
            "reading": "DSR probability, PSR(SR0)",
            "value": "n/a" if p is None else f"{p:.3f}",
            "needs": "not gated" if p_min is None else f">= {p_min:g}",
            "result": "not judged" if p_min is None else BADGE[bool(i.get("probability_passed"))],
        },
        {
            "reading": "Minimum track record",
            "value": track_record_text(i),
            "needs": f"has {sample_text(i)}",
            "result": _long_enough(trl, n_obs, "min_track_record_bars" in i),
        },
        {
            "reading": "Minimum backtest length",
            "value": backtest_length_text(i),
            "needs": "has n/a" if years is None else f"has {years_text(years)}",
            "result": _long_enough(btl, years, "min_backtest_years" in i),
        },
    ]
    return pd.DataFrame(rows)


def deflated_json(result: CriterionResult | None) -> dict[str, Any]:
    """The deflated Sharpe's readings as plain JSON values: numbers, or null with a flag (a minimum
    track record or backtest length that no length reaches is null with ``..._reachable`` false;
    a run stored before a reading has null and a null flag)."""
    i = {} if result is None else result.inputs

    def reachable(key: str) -> bool | None:
        return None if key not in i else finite(i[key]) is not None

    return {
        "sr_minus_sr0": None if result is None else finite(result.value),
        "haircut_passed": None if result is None else bool(i.get("haircut_passed", result.passed)),
        "dsr_probability": finite(i.get("dsr_probability")),
        "dsr_probability_threshold": finite(i.get("dsr_probability_threshold")),
        "probability_passed": None if "probability_passed" not in i else bool(i["probability_passed"]),
        "min_track_record_bars": finite(i.get("min_track_record_bars")),
        "min_track_record_years": finite(i.get("min_track_record_years")),
        "min_track_record_reachable": reachable("min_track_record_bars"),
        "min_backtest_years": finite(i.get("min_backtest_years")),
        "min_backtest_reachable": reachable("min_backtest_years"),
        "backtest_years": _years_of(i, "backtest_years", finite(i.get("n_obs"))),
        "n_obs": None if finite(i.get("n_obs")) is None else int(i["n_obs"]),
    }


def _header(key: str, results: list[CriterionResult]) -> str:
    return f"{_SHORT[key]} {results[0].rule} {results[0].threshold:g}" if results else _SHORT[key]


def _cell(result: CriterionResult | None, text: str | None = None, passed: bool | None = None) -> str:
    if result is None:
        return "not judged"
    ok = result.passed if passed is None else passed
    return f"{BADGE[bool(ok)]} {value_text(result) if text is None else text}"


def gate_table(hifa: pd.DataFrame, option_results: pd.DataFrame) -> pd.DataFrame:
    """Every option of one run against the gate: each criterion's PASS/FAIL and value under a header
    that states its rule ("trades >= 30"), both readings of the deflated Sharpe, the minimum track
    record and backtest lengths against the backtest's, how many criteria pass, and why it fails."""
    per = {o: stored_criteria(hifa, o) for o in option_results["option"]}
    judged: dict[str, list[CriterionResult]] = {
        c.key: [r for res in per.values() if (r := res[c.key]) is not None] for c in CRITERIA
    }
    p_mins = [p for r in judged["deflated_sharpe"] if (p := _probability(r)[1]) is not None]
    dsr_head = f"DSR probability >= {p_mins[0]:g}" if p_mins else "DSR probability"
    out = []
    for option, title in zip(option_results["option"], option_results["title"], strict=True):
        res = per[option]
        d = res["deflated_sharpe"]
        i = {} if d is None else d.inputs
        p, p_min = (None, None) if d is None else _probability(d)
        row = {"option": title}
        row[_header("min_trades", judged["min_trades"])] = _cell(res["min_trades"])
        row[_header("cpcv_mean_sharpe", judged["cpcv_mean_sharpe"])] = _cell(res["cpcv_mean_sharpe"])
        row[_header("deflated_sharpe", judged["deflated_sharpe"])] = _cell(
            d, passed=None if d is None else bool(i.get("haircut_passed", d.passed))
        )
        if p is None:
            row[dsr_head] = "n/a"
        elif p_min is None:
            row[dsr_head] = f"{p:.3f} (not gated)"
        else:
            row[dsr_head] = f"{BADGE[bool(i.get('probability_passed'))]} {p:.3f}"
        row[_header("permutation_p", judged["permutation_p"])] = _cell(res["permutation_p"])
        row["min track record"] = track_record_text(i) if d is not None else "n/a"
        row["min backtest"] = backtest_length_text(i) if d is not None else "n/a"
        row["backtest"] = sample_text(i)
        row["passed"] = passed_count(res)
        row["why not"] = "; ".join(why_not_lines(res))
        out.append(row)
    return pd.DataFrame(out)


# ------------------------------------------------------------------ the signal apart from its sizing


def signals_of(metrics: Mapping[str, Any] | None) -> int | None:
    """How many SELL/BUY actions an option took (its signals), from its stored metrics."""
    m = metrics or {}
    sizing = m.get("sizing") or {}
    if sizing.get("signals") is not None:
        return int(sizing["signals"])
    counts = m.get("action_counts")
    return None if not counts else int(counts["SELL"] + counts["BUY"])


def sizing_name(method: str) -> str:
    return "Kelly" if method == "kelly" else f"{method[:1].upper()}{method[1:]} sizing"


def sizing_text(sizing: Mapping[str, Any] | None, method: str) -> str:
    """What the configured sizing made of the signals: "Kelly sized 57 of 60 signals to 0"."""
    if not sizing:
        return NOT_STORED
    n, k = int(sizing["signals"]), int(sizing["sized_zero"])
    if n == 0:
        return "no SELL/BUY signals to size"
    return f"{sizing_name(method)} sized {k:,} of {n:,} signals to 0"


def signal_sentence(counts: Mapping[str, int], sizing: Mapping[str, Any] | None, method: str) -> str:
    """The signal apart from its sizing in one sentence, from an option's action counts and its
    ``sizing`` record."""
    n = sum(int(v) for v in counts.values())
    sig = int(counts.get("SELL", 0)) + int(counts.get("BUY", 0))
    share = sig / n if n else 0.0
    text = f"{sig:,} SELL/BUY signals ({share:.1%} of {n:,} bars); {sizing_text(sizing, method)}"
    sz = sizing or {}
    prob, fitted = sz.get("probability"), sz.get("calibration_trades")
    if prob and prob != "model":
        on = f", fitted on {int(fitted):,} training-period trades" if fitted else ""
        text += f" (Kelly reads {prob}-calibrated probabilities{on})"
    if sz.get("calibration_note"):
        text += f"; {sz['calibration_note']}"
    return f"{text}. The gate judges the configured {method} sizing."


def unit_metric(metrics: Mapping[str, Any] | None, key: str):
    """One of an option's metrics under unit sizing, from its stored metrics; None where the run was
    stored before them."""
    unit = (metrics or {}).get("unit") or {}
    return unit.get(key)


def signal_sizing_table(option_results: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per option: its SELL/BUY signals, trades, return and Sharpe under the configured sizing and
    under unit sizing (one unit in the action's direction), and the signals the sizing set to 0.
    Runs stored before the unit metrics show them empty."""
    o = option_results
    metrics = list(o["metrics"])
    return pd.DataFrame(
        {
            "option": o["title"].to_numpy(),
            "SELL/BUY share": (o["share_sell"] + o["share_buy"]).to_numpy(),
            "signals": pd.array([signals_of(m) for m in metrics], dtype="Int64"),
            "trades": pd.array(o["trades"].astype(int), dtype="Int64"),
            "trades (unit)": pd.array([unit_metric(m, "trades") for m in metrics], dtype="Int64"),
            "Sharpe": o["sharpe"].to_numpy(dtype=np.float64),
            "Sharpe (unit)": np.array([finite(unit_metric(m, "sharpe")) or np.nan for m in metrics]),
            "return": o["total_return"].to_numpy(dtype=np.float64),
            "return (unit)": np.array([finite(unit_metric(m, "total_return")) or np.nan for m in metrics]),
            "sized to 0": [sizing_text((m or {}).get("sizing"), method) for m in metrics],
        }
    )


def sizing_rows(configured: Mapping[str, Any], unit: Mapping[str, Any] | None, method: str) -> pd.DataFrame:
    """One option's trades, return, Sharpe and drawdown under the configured sizing (what the gate
    judges) beside unit sizing; ``configured`` is an option row or a live view, ``unit`` its unit
    metrics (None for a run stored before them)."""

    def row(name: str, m: Mapping[str, Any] | None) -> dict[str, str]:
        if m is None:
            return {"sizing": name, "trades": NOT_STORED, "return": "", "Sharpe": "", "max drawdown": ""}
        sharpe = finite(m.get("sharpe"))
        defined = bool(m.get("sharpe_defined", True))
        return {
            "sizing": name,
            "trades": f"{int(m['trades']):,}",
            "return": "n/a" if finite(m.get("total_return")) is None else f"{m['total_return']:.2%}",
            "Sharpe": "n/a" if sharpe is None or not defined else f"{sharpe:.2f}",
            "max drawdown": "n/a" if finite(m.get("max_drawdown")) is None else f"{m['max_drawdown']:.2%}",
        }

    return pd.DataFrame(
        [row(f"{method} (configured, judged)", configured), row("unit (one unit per signal)", unit)]
    )


def stored_signal(option_row: Mapping[str, Any]) -> dict[str, Any]:
    """An option's stored signal apart from its sizing, keyed as a live view keys it: its
    ``action_counts``, its ``unit`` metrics and its ``sizing`` record (None where the run was stored
    before them)."""
    m = option_row["metrics"] or {}
    return {"action_counts": m.get("action_counts") or {}, "unit": m.get("unit"), "sizing": m.get("sizing")}


def gate_caption(criteria: Mapping[str, Any]) -> str:
    """The gate's rules in one sentence, from a run's ``settings["criteria"]``."""
    trades = (
        f"at least {criteria['min_trades']:g} trades (independent bets)"
        if "min_trades" in criteria
        else "no minimum of trades (the run was stored before that criterion)"
    )
    p_min = criteria.get("dsr_probability_min")
    dsr = f"DSR probability >= {p_min:g} and " if p_min is not None else ""
    return (
        f"An option passes when it meets every criterion: {trades}; CPCV mean Sharpe >= "
        f"{criteria['cpcv_mean_sharpe_min']:g}; deflated Sharpe: {dsr}SR - SR0 >= "
        f"{criteria['deflated_sharpe_min']:g} (annualised, SR0 the expected best Sharpe of the trials "
        f"counted); permutation p < {criteria['permutation_p_max']:g}. The minimum track record is the "
        f"bars the observed Sharpe needs for the DSR probability to reach its bar; the minimum "
        f"backtest length the years below which the trials counted show this Sharpe by chance."
    )
