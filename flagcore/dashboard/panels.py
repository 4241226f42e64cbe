"""Streamlit panels that more than one page section draws: a live (slider) view of one option.

The figures come from ``flagcore.dashboard.live``; this module only lays them out.
"""

from __future__ import annotations

import streamlit as st

from flagcore.dashboard.views import criteria_rows, passed_text
from flagcore.vocab import CRITERION_LABELS


def show_view(view: dict, parameter: str) -> None:
    """Draw a live view (``live.threshold_view`` or ``live.tau_view``) of one option at one value of
    ``parameter``: shares, trades, return, Sharpe, permutation p and the HIFA criteria."""
    sh = view["action_shares"]
    c = st.columns(6)
    c[0].metric("SELL / HOLD / BUY", f"{sh['SELL']:.1%} / {sh['HOLD']:.1%} / {sh['BUY']:.1%}")
    c[1].metric("Trades", f"{view['trades']:,}")
    c[2].metric("Return", f"{view['total_return']:.2%}")
    c[3].metric("Sharpe", f"{view['sharpe']:.2f}" + ("" if view["sharpe_defined"] else " (no trades)"))
    c[4].metric(
        CRITERION_LABELS["permutation_p"],
        f"{view['permutation_p']:.4f}",
        help=f"{view['n_permutations']:,} block permutations",
    )
    c[5].metric("HIFA", passed_text(view["hifa"].n_passed))
    st.dataframe(criteria_rows(view["hifa"]), hide_index=True, width="stretch")
    plus = "" if view["on_grid"] else ", plus this value"
    st.caption(
        f"Choosing this {parameter} is a trial: the deflated Sharpe counts {view['n_trials']} trials "
        f"(every option and every swept value{plus}). With a value fixed by hand nothing is fitted "
        f"per split, so every CPCV path is the plain backtest and the CPCV mean Sharpe equals the "
        f"Sharpe."
    )
