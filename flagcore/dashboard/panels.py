"""Streamlit panels that more than one page section draws: a live (slider) view of one option, and the
deflated Sharpe's readings with the signal apart from its sizing.

The figures come from ``flagcore.dashboard.live`` and ``flagcore.dashboard.views``; this module only
lays them out. Metric values stay short (a column is narrow); the long text goes in ``help`` or in a
table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from flagcore.analysis.gate import CriterionResult
from flagcore.dashboard.gate_views import deflated_table, signal_sentence, sizing_rows, why_not_lines
from flagcore.dashboard.state import plain
from flagcore.dashboard.views import criteria_rows, passed_text
from flagcore.vocab import CRITERION_LABELS


def show_why_not(results: Mapping[str, CriterionResult | None]) -> None:
    """Why an option cannot pass: one line per failing criterion, or nothing when all pass."""
    lines = why_not_lines(results)
    if lines:
        st.warning("**Why it cannot pass**\n\n" + "\n".join(f"- {plain(line)}" for line in lines))


def show_deflated_and_sizing(
    deflated: CriterionResult | None, configured: Mapping[str, Any], signal: Mapping[str, Any], method: str
) -> None:
    """Side by side: the deflated Sharpe's readings (SR - SR0, the DSR probability, the minimum track
    record and backtest lengths against the backtest's), and the option under the configured sizing
    (``configured``: an option row or a live view) beside unit sizing, with the signals sizing set
    to 0 (``signal``: ``action_counts``, ``unit`` and ``sizing``, as ``gate_views.stored_signal`` or a live
    view gives them)."""
    left, right = st.columns(2)
    with left:
        st.dataframe(deflated_table(deflated), hide_index=True, width="stretch")
    with right:
        st.dataframe(sizing_rows(configured, signal["unit"], method), hide_index=True, width="stretch")
        st.caption(signal_sentence(signal["action_counts"], signal["sizing"], method))


def show_view(view: dict, parameter: str) -> None:
    """Draw a live view (``live.threshold_view`` or ``live.tau_view``) of one option at one value of
    ``parameter``: signals, trades, return, Sharpe, DSR probability, the HIFA criteria with their
    rules and why they fail, the deflated Sharpe's readings and the option under unit sizing."""
    sh, verdict = view["action_shares"], view["hifa"]
    dsr = verdict["deflated_sharpe"]
    c = st.columns(3)  # three metrics a row: on a laptop six to a row cut their values off
    c[0].metric(
        "SELL/BUY share",
        f"{sh['SELL'] + sh['BUY']:.1%}",
        help=f"SELL {sh['SELL']:.1%}, HOLD {sh['HOLD']:.1%}, BUY {sh['BUY']:.1%} of the bars",
    )
    c[1].metric("Trades", f"{view['trades']:,}", help=verdict["min_trades"].inputs.get("what"))
    c[2].metric("Return", f"{view['total_return']:.2%}")
    c = st.columns(3)
    c[0].metric(
        "Sharpe",
        f"{view['sharpe']:.2f}",
        help="annualised" + ("" if view["sharpe_defined"] else "; no trades: the Sharpe is undefined"),
    )
    c[1].metric(
        "DSR probability",
        f"{dsr.inputs['dsr_probability']:.3f}",
        help=f"PSR against SR0, {view['n_trials']} trials; SR - SR0 = {dsr.value:.2f} (annualised)",
    )
    c[2].metric(
        "HIFA",
        passed_text(verdict.n_passed),
        help=f"{CRITERION_LABELS['permutation_p']} {view['permutation_p']:.4f} "
        f"({view['n_permutations']:,} block permutations)",
    )
    st.dataframe(criteria_rows(verdict), hide_index=True, width="stretch")
    show_why_not(verdict.criteria)
    show_deflated_and_sizing(dsr, view, view, view["sizing_method"])
    plus = "" if view["on_grid"] else ", plus this value"
    st.caption(
        f"Choosing this {parameter} is a trial: the deflated Sharpe counts {view['n_trials']} trials "
        f"(every option and every swept value{plus}). With a value fixed by hand nothing is fitted "
        f"per split, so every CPCV path is the plain backtest and the CPCV mean Sharpe equals the "
        f"Sharpe."
    )


def show_status(status, author: str | None = None) -> None:
    """A run's review status (``RunStatus``): the status word and the approvals counted against the
    policy's, the run's author, and why, one line per reason (names are user text: escaped)."""
    c = st.columns(2)
    c[0].metric("Review status", status.status, help="under the team's [review] policy")
    c[1].metric(
        "Approvals",
        f"{status.approvals}/{status.required}",
        help="distinct reviewers whose approval counts under the policy",
    )
    # the author's name is user text: shown as text, never as Markdown
    st.text(f"Author: {author}" if author else "Author: not recorded (a run stored before authors were)")
    st.caption(plain("; ".join(status.reasons)))


def open_tab(labels: Sequence[str], key: str) -> tuple[str, Any]:
    """Tabs whose content is drawn only while open: the open tab's label and its container.

    A page draws only what a reviewer looks at: every plotly chart a page draws costs its reload
    a few hundred ms of the browser's time on a 2-core machine, hidden or not (st.tabs sends and
    draws every tab's content unless they are stateful). Picking a tab reruns the page; the open tab
    is kept in the URL (``?key=label``), so a shared link opens the same tab.
    """
    tabs = st.tabs(list(labels), key=key, on_change="rerun", bind="query-params")
    for label, tab in zip(labels, tabs, strict=True):
        if tab.open:
            return label, tab
    return labels[0], tabs[0]  # no tab state yet (the frontend opens the first)
