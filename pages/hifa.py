"""HIFA criteria: per option the criteria table, the DSR inputs, CPCV paths, the permutation null, PBO."""

import streamlit as st

from flagcore.dashboard import plots, views
from flagcore.dashboard import state as ac

st.title("HIFA criteria")
rid = ac.require_run()
path = ac.store_key()
info = ac.run_info(path, rid)
summary, crit = info["summary"], info["settings"]["criteria"]
opts = ac.option_results(path, rid)
titles = views.option_titles(opts)
ppy = summary["periods_per_year"]

st.caption(
    f"The seed's gate: CPCV mean Sharpe >= {crit['cpcv_mean_sharpe_min']}, deflated Sharpe >= "
    f"{crit['deflated_sharpe_min']} (read as the annualised Sharpe left after the selection haircut, "
    f"SR - SR0; the DSR probability is shown beside it against its conventional bar "
    f"{crit['dsr_probability_min']}), permutation p < {crit['permutation_p_max']}."
)
c = st.columns(3)
c[0].metric("Trials counted", summary["n_trials"], help=views.trials_help(summary))
c[1].metric(
    "Probability of backtest overfitting",
    f"{summary['pbo']:.2f}",
    help=f"CSCV over the trials' returns, {summary['pbo_blocks']} blocks, "
    f"{summary['pbo_combinations']:,} combinations",
)
c[2].metric(
    "Variance of the trials' Sharpe ratios",
    f"{summary['trial_sharpe_variance']:.3g}",
    help="per period; it sets the expected maximum Sharpe SR0 of the trials",
)

option = st.selectbox("Option", list(titles), format_func=titles.get, key="hifa_option")
h = ac.hifa(path, rid)
st.dataframe(views.criteria_table(h, option), hide_index=True, width="stretch")
row = views.criterion_row(h, option, "deflated_sharpe")
dsr = row["inputs"]
st.subheader("Deflated Sharpe")
c = st.columns(4)
c[0].metric(
    "Sharpe (annualised)", f"{dsr['sharpe_annual']:.2f}" + ("" if dsr["sharpe_defined"] else " (undefined)")
)
c[1].metric("SR0, expected best of the trials", f"{dsr['sr0_annual']:.2f}")
c[2].metric("Deflated Sharpe, SR - SR0", f"{row['value']:.2f}")
c[3].metric("DSR probability", f"{dsr['dsr_probability']:.3f}", help="PSR against SR0")
st.dataframe(views.dsr_inputs_table(dsr), hide_index=True, width="stretch")

left, right = st.columns(2)
with left:
    st.subheader("CPCV paths")
    st.caption(views.cpcv_caption(views.criterion_row(h, option, "cpcv_mean_sharpe")["inputs"]))
    paths = views.rows(ac.cpcv_paths(path, rid), option=option)  # retraining paths appended later included
    st.plotly_chart(plots.cpcv_paths(paths, titles, threshold=crit["cpcv_mean_sharpe_min"]), width="stretch")
with right:
    st.subheader("Permutation test")
    null = ac.permutation_null(path, rid, option)
    st.caption(
        f"{len(null['null_sharpes']):,} permutations of {null['block']}-bar blocks of returns against "
        f"the fixed positions; p = (b + 1) / (m + 1)."
    )
    observed = float(views.annualise(null["observed_sharpe"], ppy))
    null_sharpes = views.annualise(null["null_sharpes"], ppy)
    st.plotly_chart(plots.permutation_null(null_sharpes, observed, null["p_value"]), width="stretch")
