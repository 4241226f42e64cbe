"""Tables and figures' inputs the dashboard shows, shaped from frames the store returned.

Every function takes data frames (the pages pass the cached ones from ``state``) and returns what a
page draws; none reads the store, and there is no streamlit here, so tests call them too. The HIFA
gate in words and each signal apart from its sizing are shaped in ``gate_views``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from flagcore.analysis.gate import HifaVerdict
from flagcore.dashboard.gate_views import (
    criteria_frame,
    passed_count,
    signals_of,
    sizing_text,
    stored_criteria,
    unit_metric,
    value_text,
)
from flagcore.store.codec import from_json
from flagcore.vocab import (
    AGREEMENT_MIN,
    BADGE,
    CLASS_NAMES,
    CRITERIA,
    IDENTITY_SOURCES,
    NOT_A_TRIAL,
    collapse_label,
)


def run_label(row, status: str | None = None) -> str:
    """A run in the picker: "#3 demo-quick (2026-01-02 10:00), approved"; a run inferred at another
    precision than fp32 says so: "#4 full (2026-01-02 11:00), int8, pending"."""
    label = f"#{int(row['run_id'])} {row['name']} ({pd.Timestamp(row['created_at']):%Y-%m-%d %H:%M})"
    precision = run_precision(row.get("settings") if hasattr(row, "get") else None)
    if precision != DEFAULT_PRECISION:
        label = f"{label}, {precision}"
    return label if status is None else f"{label}, {status}"


DEFAULT_PRECISION = "fp32"  # runs stored before the precision was recorded were inferred in fp32


def _decoded(value) -> dict:
    """A run's settings or summary as a dict: decoded when the store gave its JSON text."""
    if isinstance(value, str):
        value = from_json(value)
    return value if isinstance(value, dict) else {}


def run_precision(settings) -> str:
    """The inference precision a run's models were run at (its stored settings' ``precision``);
    fp32 for runs stored without one."""
    return str(_decoded(settings).get("precision") or DEFAULT_PRECISION)


def agreement_line(summary, role: str = "baseline") -> str | None:
    """How the lower-precision logits of ``role`` agreed with fp32 on the run's sample
    (``summary["inference"][role]["agreement"]``), as a sentence; None when not measured (fp32 runs,
    runs stored before it was)."""
    a = ((_decoded(summary).get("inference") or {}).get(role) or {}).get("agreement")
    if not a:
        return None
    share = float(a["actions_equal_share"])
    line = (
        f"{role}: the actions equal fp32's on {share:.1%} of "
        f"{int(a['bars_sampled']):,} sampled bars, largest logit difference "
        f"{float(a['max_abs_logit_diff']):.2g}"
    )
    line += f" ({a['sample']})." if a.get("sample") else "."
    if share < AGREEMENT_MIN:  # the verdict may be int8's, not the model's
        line += f" Under {AGREEMENT_MIN:.0%}: confirm the verdict with an fp32 run before signing off."
    return line


def precision_line(settings, summary) -> str:
    """The run's inference precision in words, with each model's agreement with fp32 when measured."""
    precision = run_precision(settings)
    if precision == DEFAULT_PRECISION:
        return "Inference precision: fp32."
    roles = list(_decoded(summary).get("inference") or {})
    lines = [line for r in roles if (line := agreement_line(summary, r)) is not None]
    tail = " Agreement with fp32, " + " ".join(lines) if lines else " Agreement with fp32 not recorded."
    return f"Inference precision: {precision}." + tail


def run_labels(runs: pd.DataFrame, statuses: Mapping[int, Any] | None = None) -> dict[int, str]:
    """Run id -> its label in the run picker, newest first as ``runs`` lists them; with ``statuses``
    (``Store.run_statuses``) each label ends with the run's review status."""
    st = statuses or {}
    return {
        int(r["run_id"]): run_label(r, getattr(st.get(int(r["run_id"])), "status", None))
        for _, r in runs.iterrows()
    }


def rows(frame: pd.DataFrame, **match) -> pd.DataFrame:
    """The rows of ``frame`` whose columns equal the given values (or lie in a given list or set)."""
    keep = pd.Series(True, index=frame.index)
    for column, want in match.items():
        keep &= frame[column].isin(want) if isinstance(want, (list, tuple, set)) else frame[column] == want
    return frame[keep]


def option_titles(option_results: pd.DataFrame) -> dict[str, str]:
    """Option key -> its title, in the run's table order."""
    return dict(zip(option_results["option"], option_results["title"], strict=True))


def share_column(class_name: str) -> str:
    """The ``option_results`` column of a class's share of the actions: ``share_sell``, ..."""
    return f"share_{class_name.lower()}"


def passed_text(n_passed) -> str:
    """ "k/4": how many of the HIFA criteria (``vocab.CRITERIA``) pass."""
    return f"{int(n_passed)}/{len(CRITERIA)}"


def runs_overview(
    runs: pd.DataFrame, option_results: pd.DataFrame, statuses: Mapping[int, Any] | None = None
) -> pd.DataFrame:
    """One row per run: baseline collapse, HIFA badges of the best option, review status, latest
    review.

    ``runs`` is ``Store.list_runs()``, ``option_results`` ``Store.option_results()`` of every run,
    ``statuses`` ``Store.run_statuses(policy)`` (run id -> RunStatus; a run missing there: "n/a").
    """
    if runs.empty:
        return pd.DataFrame()
    opts = option_results[~option_results["option"].isin(NOT_A_TRIAL)]
    st = statuses or {}
    return pd.DataFrame(
        [
            _overview_row(r, opts[opts["run_id"] == r["run_id"]])
            | {"status": status_text(st.get(r["run_id"]))}
            for _, r in runs.iterrows()
        ]
    )


def status_text(status) -> str:
    """A run's review status in the run list: "awaiting review (1/2)"; "n/a" without one."""
    if status is None:
        return "n/a"
    return f"{status.status} ({status.approvals}/{status.required})"


def _overview_row(run, opts: pd.DataFrame) -> dict[str, Any]:
    summary = from_json(run["summary"]) or {}
    base = opts[opts["option"] == "baseline"]
    best = opts.sort_values(["hifa_passed", "sharpe"], ascending=False).head(1)
    review = run["latest_verdict"]
    return {
        "run": int(run["run_id"]),
        "name": run["name"],
        "created": pd.Timestamp(run["created_at"]).strftime("%Y-%m-%d %H:%M"),
        "baseline": collapse_label(summary.get("collapse") or {}),
        "baseline HOLD share": summary.get("baseline_hold_share"),
        "baseline HIFA": passed_text(base["hifa_passed"].iloc[0]) if len(base) else "n/a",
        "best option": best["title"].iloc[0] if len(best) else "n/a",
        "best HIFA": passed_text(best["hifa_passed"].iloc[0]) if len(best) else "n/a",
        "options passing HIFA": ", ".join(summary.get("options_passing_hifa") or []) or "none",
        "trials": summary.get("n_trials"),
        "latest review": "none" if pd.isna(review) else f"{review} ({run['latest_reviewer']})",
    }


def latest_review(runs: pd.DataFrame, run_id: int) -> tuple[str, str | None]:
    """(verdict, reviewer) of a run's latest review, from ``Store.list_runs()``; ("none", None) without
    one."""
    run = runs[runs["run_id"] == run_id].iloc[0]
    if pd.isna(run["latest_verdict"]):
        return "none", None
    return str(run["latest_verdict"]), str(run["latest_reviewer"])


def overview_row(overview: pd.DataFrame, run_id: int) -> pd.Series:
    """The overview's row of one run."""
    return overview[overview["run"] == run_id].iloc[0]


def hifa_badges(hifa: pd.DataFrame, option_results: pd.DataFrame, method: str = "kelly") -> pd.DataFrame:
    """Per option of one run: each criterion's value with PASS/FAIL ("not judged" where the run was
    stored before the criterion), how many of those judged pass, and beside the trades the SELL/BUY
    signals and how many of them ``method`` sizing (the run's ``settings.backtest.sizing``; the
    default is the backtest's) set to 0 (why a model that signals can show 0 trades)."""
    out = []
    for _, o in option_results.iterrows():
        res = stored_criteria(hifa, o["option"])
        row = {"option": o["title"]}
        for c in CRITERIA:
            r = res[c.key]
            row[c.label] = "not judged" if r is None else f"{BADGE[bool(r.passed)]} {value_text(r)}"
        row["passed"] = passed_count(res)
        row["signals"] = signals_of(o["metrics"])
        row["sized to 0"] = sizing_text((o["metrics"] or {}).get("sizing"), method)
        out.append(row)
    return pd.DataFrame(out).astype({"signals": "Int64"})


def options_table(option_results: pd.DataFrame) -> pd.DataFrame:
    """The solution comparison: every option's action shares, classification and trading metrics, with
    its SELL/BUY signals beside its trades (a model that signals but is sized to 0 shows it)."""
    o = option_results
    return pd.DataFrame(
        {
            "option": o["title"],
            **{c: o[share_column(c)] for c in CLASS_NAMES},
            "accuracy": o["accuracy"],
            "balanced accuracy": o["balanced_accuracy"],
            "macro-F1": o["macro_f1"],
            "signals": pd.array([signals_of(m) for m in o["metrics"]], dtype="Int64"),
            "trades": o["trades"],
            "trades (unit)": pd.array([unit_metric(m, "trades") for m in o["metrics"]], dtype="Int64"),
            "return": o["total_return"],
            "Sharpe": o["sharpe"],
            "Sharpe defined": o["sharpe_defined"],
            "max drawdown": o["max_drawdown"],
            "HIFA passed": o["hifa_passed"].map(passed_text),
            "key": o["option"],
        }
    )


def criteria_table(hifa: pd.DataFrame, option: str) -> pd.DataFrame:
    """One option's stored criteria, in ``vocab.CRITERIA`` order: value, threshold, rule, PASS/FAIL and
    why it fails (:func:`criteria_frame`); a criterion stored before it existed shows as not judged."""
    return criteria_frame(stored_criteria(hifa, option))


def criteria_rows(verdict: HifaVerdict) -> pd.DataFrame:
    """A verdict computed live (a slider's value) as the same table as :func:`criteria_table`."""
    return criteria_frame(verdict.criteria)


def criterion_row(hifa: pd.DataFrame, option: str, criterion: str) -> pd.Series:
    """One stored criterion of one option: value, threshold, passed and its ``inputs``."""
    return rows(hifa, option=option, criterion=criterion).iloc[0]


def dsr_inputs_table(inputs: Mapping[str, Any]) -> pd.DataFrame:
    """What the deflated Sharpe was computed from (a stored criterion's ``inputs``), as one row."""
    return pd.DataFrame(
        [
            {
                "trials": inputs["n_trials"],
                "trial Sharpe variance": inputs["trial_sharpe_variance"],
                "skew": inputs["skew"],
                "kurtosis (raw)": inputs["kurtosis"],
                "observations": inputs["n_obs"],
            }
        ]
    )


def trials_help(summary: Mapping[str, Any]) -> str:
    """What the deflated Sharpe's trial count is made of, from a run's summary."""
    t = summary["trials"]
    return (
        f"distinct strategies among the {summary.get('trials_tried', summary['n_trials'])} tried: "
        f"{len(t['options'])} options, {t['hold_thresholds']} further HOLD thresholds and {t['taus']} "
        f"further tau values; a value that leaves the returns unchanged repeats a strategy and counts "
        f"once"
    )


def cpcv_caption(inputs: Mapping[str, Any]) -> str:
    """How a run's post-hoc CPCV was set up, from the CPCV criterion's stored ``inputs``."""
    fitted = inputs["parameter"] if inputs["parameter"] != "none" else "nothing"
    return (
        f"Mode: {inputs['mode']} (the model is fixed; {fitted} is refitted on each split's training "
        f"groups), {inputs['groups']} groups, {inputs['test_groups']} test groups, purge "
        f"{inputs['purge']} and embargo {inputs['embargo']} bars. Retraining CPCV, when run with "
        f"`flagcore validate --retrain`, is shown as its own mode."
    )


def model_logit_options(run_models: pd.DataFrame, option_results: pd.DataFrame) -> list[str]:
    """Options backed by a model's own logits (what the logit-analysis page can show)."""
    roles = set(run_models["role"])
    return [o for o in option_results["option"] if o in roles]


def model_of(run_models: pd.DataFrame, role: str) -> pd.Series:
    """The model that plays ``role`` in a run."""
    return run_models[run_models["role"] == role].iloc[0]


def models_table(run_models: pd.DataFrame) -> pd.DataFrame:
    """The checkpoints of a run: role, kind, source, parameter counts, sha256."""
    columns = ["role", "kind", "source", "total_parameters", "trainable_parameters", "model_id"]
    return run_models[columns].rename(columns={"model_id": "sha256"})


def per_class_table(per_class: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """A class name -> {statistic: value} mapping (a diagnostics section) as one row per class."""
    return pd.DataFrame(per_class).T.rename_axis("class")


def trainable_share(model: Mapping[str, Any]) -> float:
    return float(model["trainable_parameters"] / model["total_parameters"])


def padded_inputs(shift: list[dict]) -> list[str]:
    """The names of the model inputs that are zero padding in the evaluation data."""
    return [r["name"] for r in shift if r["padding"]]


def shift_table(shift: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(shift)[["input", "name", "padding", "psi", "ks", "shift"]]


def review_caption(review) -> str:
    """One stored review's heading: id, time, verdict, and the HIFA criteria passed at the time."""
    snapshot = review["hifa_snapshot"] or []
    passed = sum(1 for c in snapshot if c["passed"])
    return (
        f"Review {int(review['review_id'])}, {review['created_at']:%Y-%m-%d %H:%M} UTC: "
        f"{review['verdict']}; {passed} of {len(snapshot)} HIFA criteria passed at the time"
    )


def signed_line(review) -> str:
    """Who signed a stored review and how they were known: "Reviewer: ana@x.org, logged in";
    a review stored before identities were recorded reads as a typed name."""
    source = review.get("identity_source") if hasattr(review, "get") else None
    if not isinstance(source, str) or source not in IDENTITY_SOURCES:
        source = "typed"
    return f"Reviewer: {review['reviewer']}, {IDENTITY_SOURCES[source]}"


def annualise(x, periods_per_year: float):
    return np.asarray(x, dtype=np.float64) * np.sqrt(periods_per_year)
