import numpy as np
import pandas as pd
import streamlit as st

from flagcore.dashboard import state as ac
from flagcore.dashboard import plots
from flagcore.dashboard.views import criteria_table

st.title("HIFA criteria")
rid = ac.require_run()
path = ac.store_key()
info = ac.run_info(path, rid)
summary, crit = info["summary"], info["settings"]["criteria"]
opts = ac.option_results(path, rid)
titles = dict(zip(opts["option"], opts["title"], strict=True))
ppy = summary["periods_per_year"]

st.caption(f"The seed's gate: CPCV mean Sharpe >= {crit['cpcv_mean_sharpe_min']}, deflated Sharpe >= "
           f"{crit['deflated_sharpe_min']} (read as the annualised Sharpe left after the selection haircut, "
           f"SR - SR0; the DSR probability is shown beside it against its conventional bar "
           f"{crit['dsr_probability_min']}), permutation p < {crit['permutation_p_max']}.")
c = st.columns(3)
c[0].metric("Trials counted", summary["n_trials"],
            help=f"distinct strategies among the {summary.get('trials_tried', summary['n_trials'])} tried: "
                 f"{len(summary['trials']['options'])} options, {summary['trials']['hold_thresholds']} further HOLD "
                 f"thresholds and {summary['trials']['taus']} further tau values; a value that leaves the returns "
                 f"unchanged repeats a strategy and counts once")
c[1].metric("Probability of backtest overfitting", f"{summary['pbo']:.2f}",
            help=f"CSCV over the trials' returns, {summary['pbo_blocks']} blocks, "
                 f"{summary['pbo_combinations']:,} combinations")
c[2].metric("Variance of the trials' Sharpe ratios", f"{summary['trial_sharpe_variance']:.3g}",
            help="per period; it sets the expected maximum Sharpe SR0 of the trials")

option = st.selectbox("Option", list(titles), format_func=titles.get, key="hifa_option")
st.dataframe(criteria_table(ac.store(), rid, option), hide_index=True, width="stretch")
h = ac.hifa(path, rid)
row = h[(h["option"] == option) & (h["criterion"] == "deflated_sharpe")].iloc[0]
dsr = row["inputs"]
st.subheader("Deflated Sharpe")
c = st.columns(4)
c[0].metric("Sharpe (annualised)", f"{dsr['sharpe_annual']:.2f}" + ("" if dsr["sharpe_defined"] else " (undefined)"))
c[1].metric("SR0, expected best of the trials", f"{dsr['sr0_annual']:.2f}")
c[2].metric("Deflated Sharpe, SR - SR0", f"{row['value']:.2f}")
c[3].metric("DSR probability", f"{dsr['dsr_probability']:.3f}", help="PSR against SR0")
st.dataframe(pd.DataFrame([{"trials": dsr["n_trials"], "trial Sharpe variance": dsr["trial_sharpe_variance"],
                            "skew": dsr["skew"], "kurtosis (raw)": dsr["kurtosis"], "observations": dsr["n_obs"]}]),
             hide_index=True, width="stretch")

left, right = st.columns(2)
paths = ac.cpcv_paths(path, rid)
cp = h[(h["option"] == option) & (h["criterion"] == "cpcv_mean_sharpe")].iloc[0]["inputs"]
with left:
    st.subheader("CPCV paths")
    st.caption(f"Mode: {cp['mode']} (the model is fixed; {cp['parameter'] if cp['parameter'] != 'none' else 'nothing'} "
               f"is refitted on each split's training groups), {cp['groups']} groups, {cp['test_groups']} test "
               f"groups, purge {cp['purge']} and embargo {cp['embargo']} bars. Retraining CPCV, when run with "
               f"`flagcore validate --retrain`, is shown as its own mode.")
    st.plotly_chart(plots.cpcv_paths(paths[paths["option"] == option], titles,
                                     threshold=crit["cpcv_mean_sharpe_min"]), width="stretch")
with right:
    st.subheader("Permutation test")
    null = ac.permutation_null(path, rid, option)
    ann = np.sqrt(ppy)
    st.caption(f"{len(null['null_sharpes']):,} permutations of {null['block']}-bar blocks of returns against the "
               f"fixed positions; p = (b + 1) / (m + 1).")
    st.plotly_chart(plots.permutation_null(null["null_sharpes"] * ann, null["observed_sharpe"] * ann,
                                           null["p_value"]), width="stretch")
