import pandas as pd
import streamlit as st

from flagcore.dashboard import state as ac
from flagcore.dashboard import plots
from flagcore.dashboard.views import CRITERIA, options_table

st.title("Solution comparison")
rid = ac.require_run()
path = ac.store_key()
info = ac.run_info(path, rid)
settings, summary = info["settings"], info["summary"]
opts = ac.option_results(path, rid)
titles = dict(zip(opts["option"], opts["title"], strict=True))

st.caption(f"Every option on the same {summary['evaluated_bars']:,} evaluated bars, backtested with "
           f"{settings['backtest']['sizing']} sizing and {settings['backtest']['fee_bps']} + "
           f"{settings['backtest']['slippage_bps']} bps of costs per change of position.")
table = options_table(ac.store(), rid).drop(columns=["key"])
pct = st.column_config.NumberColumn(format="percent")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={k: pct for k in ("SELL", "HOLD", "BUY", "accuracy", "balanced accuracy", "return",
                                             "max drawdown")} | {"Sharpe": st.column_config.NumberColumn(format="%.2f"),
                                                                 "macro-F1": st.column_config.NumberColumn(format="%.3f")})
eq = ac.equity_curves(path, rid)
shown = st.multiselect("Equity curves", list(titles), default=[o for o in titles if o != "opt5_labels"],
                       format_func=titles.get, key="equity_options")
st.plotly_chart(plots.equity_curves(eq[eq["option"].isin(shown)], titles), width="stretch")


def criteria_rows(view: dict) -> pd.DataFrame:
    h = view["hifa"]
    return pd.DataFrame([{"criterion": CRITERIA[k], "value": h[k].value, "rule": h[k].rule,
                          "threshold": h[k].threshold, "result": "PASS" if h[k].passed else "FAIL"}
                         for k in CRITERIA])


def show_view(view: dict, parameter: str) -> None:
    sh = view["action_shares"]
    c = st.columns(6)
    c[0].metric("SELL / HOLD / BUY", f"{sh['SELL']:.1%} / {sh['HOLD']:.1%} / {sh['BUY']:.1%}")
    c[1].metric("Trades", f"{view['trades']:,}")
    c[2].metric("Return", f"{view['total_return']:.2%}")
    c[3].metric("Sharpe", f"{view['sharpe']:.2f}" + ("" if view["sharpe_defined"] else " (no trades)"))
    c[4].metric("Permutation p", f"{view['permutation_p']:.4f}", help=f"{view['n_permutations']:,} block permutations")
    c[5].metric("HIFA", f"{sum(view['hifa'][k]['passed'] for k in CRITERIA)}/3")
    st.dataframe(criteria_rows(view), hide_index=True, width="stretch")
    st.caption(f"Choosing this {parameter} is a trial: the deflated Sharpe counts {view['n_trials']} trials "
               f"(every option and every swept value{'' if view['on_grid'] else ', plus this value'}). With a "
               f"value fixed by hand nothing is fitted per split, so every CPCV path is the plain backtest and "
               f"the CPCV mean Sharpe equals the Sharpe.")


sw = ac.sweeps(path, rid)


@st.fragment
def threshold_panel() -> None:
    from flagcore.dashboard.live import threshold_view

    st.subheader("Option 3: the HOLD threshold")
    st.caption("Where the model says HOLD with confidence below the threshold, take its second-best action "
               "(the seed's rule), recomputed live from the stored logits.")
    value = st.slider("HOLD threshold", 0.0, 1.0, float(settings["hold_threshold"]), 0.001, format="%.3f",
                      key="threshold", bind="query-params")
    view = threshold_view(ac.live_inputs(path, rid), value)
    show_view(view, "threshold")
    st.plotly_chart(plots.sweep_chart(sw[sw["parameter"] == "hold_threshold"], value, "HOLD threshold",
                                      "Sharpe and trades across the swept thresholds"), width="stretch")


@st.fragment
def tau_panel() -> None:
    from flagcore.dashboard.live import tau_view

    st.subheader("Logit adjustment (post hoc)")
    st.caption("argmax(logit - tau * log prior): tau = 0 is the plain argmax, tau = 1 the Bayes rule for "
               "balanced error (Menon et al. 2021), the principled form of option 3.")
    value = st.slider("tau", 0.0, 3.0, float(settings["tau"]), 0.05, key="tau", bind="query-params")
    view = tau_view(ac.live_inputs(path, rid), value)
    show_view(view, "tau")
    st.plotly_chart(plots.sweep_chart(sw[sw["parameter"] == "tau"], value, "tau",
                                      "Sharpe and trades across the swept tau values"), width="stretch")


threshold_panel()
if "logit_adjust" in titles:
    tau_panel()
