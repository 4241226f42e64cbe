"""HIFA criteria: every option against the gate; per option the criteria with their rules and why they
fail, the deflated Sharpe's readings, the signal apart from its sizing, CPCV paths, the permutation null,
PBO."""

import streamlit as st

from flagcore.dashboard import gate_views, plots, views
from flagcore.dashboard import state as ac
from flagcore.dashboard.panels import open_tab, show_deflated_and_sizing, show_why_not

st.title("HIFA criteria")
rid = ac.require_run()
path = ac.store_key()
info = ac.run_info(path, rid)
summary, settings = info["summary"], info["settings"]
crit = settings["criteria"]
opts = ac.option_results(path, rid)
titles = views.option_titles(opts)
ppy = summary["periods_per_year"]
h = ac.hifa(path, rid)

st.caption(gate_views.gate_caption(crit))
c = st.columns(3)
c[0].metric("Trials counted", summary["n_trials"], help=views.trials_help(summary))
c[1].metric(
    "PBO",
    f"{summary['pbo']:.2f}",
    help=f"probability of backtest overfitting: CSCV over the trials' returns, {summary['pbo_blocks']} "
    f"blocks, {summary['pbo_combinations']:,} combinations",
)
c[2].metric(
    "Trial Sharpe variance",
    f"{summary['trial_sharpe_variance']:.3g}",
    help="variance of the trials' per-period Sharpe ratios; it sets the expected maximum Sharpe SR0",
)

st.subheader("Every option against the gate")
st.dataframe(gate_views.gate_table(h, opts), hide_index=True, width="stretch")

option = st.selectbox("Option", list(titles), format_func=titles.get, key="hifa_option")
results = gate_views.stored_criteria(h, option)
st.dataframe(gate_views.criteria_frame(results), hide_index=True, width="stretch")
show_why_not(results)

deflated = results["deflated_sharpe"]
st.subheader("Deflated Sharpe, and the signal apart from its sizing")
if deflated is not None:
    dsr = deflated.inputs
    c = st.columns(4)
    c[0].metric(
        "Sharpe (annualised)",
        f"{dsr['sharpe_annual']:.2f}",
        help=None if dsr["sharpe_defined"] else "no trades: the Sharpe is undefined",
    )
    c[1].metric("SR0", f"{dsr['sr0_annual']:.2f}", help="the expected best Sharpe of the trials (annualised)")
    c[2].metric("SR - SR0", f"{deflated.value:.2f}", help="the annualised haircut")
    c[3].metric("DSR probability", f"{dsr['dsr_probability']:.3f}", help="PSR against SR0")
row = views.rows(opts, option=option).iloc[0]
show_deflated_and_sizing(deflated, row, gate_views.stored_signal(row), settings["backtest"]["sizing"])
if deflated is not None:
    st.dataframe(views.dsr_inputs_table(deflated.inputs), hide_index=True, width="stretch")


def cpcv_tab() -> None:
    st.caption(views.cpcv_caption(views.criterion_row(h, option, "cpcv_mean_sharpe")["inputs"]))
    paths = views.rows(ac.cpcv_paths(path, rid), option=option)  # retraining paths appended later included
    st.plotly_chart(plots.cpcv_paths(paths, titles, threshold=crit["cpcv_mean_sharpe_min"]), width="stretch")


def permutation_tab() -> None:
    null = ac.permutation_null(path, rid, option)
    st.caption(
        f"{len(null['null_sharpes']):,} permutations of {null['block']}-bar blocks of returns against "
        f"the fixed positions; p = (b + 1) / (m + 1)."
    )
    observed = float(views.annualise(null["observed_sharpe"], ppy))
    null_sharpes = views.annualise(null["null_sharpes"], ppy)
    st.plotly_chart(plots.permutation_null(null_sharpes, observed, null["p_value"]), width="stretch")


# one chart drawn at a time
TABS = {"CPCV paths": cpcv_tab, "Permutation test": permutation_tab}
shown_tab, tab = open_tab(list(TABS), "hifa_tab")
with tab:
    TABS[shown_tab]()
