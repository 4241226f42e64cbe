"""Solution comparison: every option side by side, its signal apart from its sizing, the gate per option,
equity curves, the HOLD-threshold and tau sliders."""

import streamlit as st

from flagcore.dashboard import gate_views, plots, views
from flagcore.dashboard import state as ac
from flagcore.dashboard.panels import open_tab, show_view
from flagcore.vocab import CLASS_NAMES, NOT_A_TRIAL, TAU_OPTION

st.title("Solution comparison")
rid = ac.require_run()
path = ac.store_key()
info = ac.run_info(path, rid)
settings, summary = info["settings"], info["summary"]
opts = ac.option_results(path, rid)
titles = views.option_titles(opts)

st.caption(
    f"Every option on the same {summary['evaluated_bars']:,} evaluated bars, backtested with "
    f"{settings['backtest']['sizing']} sizing and {settings['backtest']['fee_bps']} + "
    f"{settings['backtest']['slippage_bps']} bps of costs per change of position."
)
table = views.options_table(opts).drop(columns=["key"])
pct = st.column_config.NumberColumn(format="percent")
formats = {k: pct for k in (*CLASS_NAMES, "accuracy", "balanced accuracy", "return", "max drawdown")}
formats |= {
    "Sharpe": st.column_config.NumberColumn(format="%.2f"),
    "macro-F1": st.column_config.NumberColumn(format="%.3f"),
}
formats["signals"] = st.column_config.NumberColumn(help="SELL/BUY actions: the signal before sizing")
formats["trades (unit)"] = st.column_config.NumberColumn(help="trades at one unit per signal")
st.dataframe(table, hide_index=True, width="stretch", column_config=formats)


@st.fragment
def threshold_panel() -> None:
    from flagcore.dashboard.live import threshold_view

    st.caption(
        "Where the model says HOLD with confidence below the threshold, take its second-best action "
        "(the seed's rule), recomputed live from the stored logits."
    )
    value = st.slider(
        "HOLD threshold",
        0.0,
        1.0,
        float(settings["hold_threshold"]),
        0.001,
        format="%.3f",
        key="threshold",
        bind="query-params",
    )
    show_view(threshold_view(ac.live_inputs(path, rid), value), "threshold")
    title = "Sharpe and trades across the swept thresholds"
    st.plotly_chart(
        ac.sweep_figure(path, rid, "hold_threshold", value, "HOLD threshold", title), width="stretch"
    )


@st.fragment
def tau_panel() -> None:
    from flagcore.dashboard.live import tau_view

    st.caption(
        "argmax(logit - tau * log prior): tau = 0 is the plain argmax, tau = 1 the Bayes rule for "
        "balanced error (Menon et al. 2021), the principled form of option 3."
    )
    value = st.slider("tau", 0.0, 3.0, float(settings["tau"]), 0.05, key="tau", bind="query-params")
    show_view(tau_view(ac.live_inputs(path, rid), value), "tau")
    title = "Sharpe and trades across the swept tau values"
    st.plotly_chart(ac.sweep_figure(path, rid, "tau", value, "tau", title), width="stretch")


def equity_tab() -> None:
    eq = ac.equity_curves(path, rid)
    shown = st.multiselect(
        "Equity curves",
        list(titles),
        default=[o for o in titles if o not in NOT_A_TRIAL],
        format_func=titles.get,
        key="equity_options",
    )
    st.plotly_chart(plots.equity_curves(views.rows(eq, option=shown), titles), width="stretch")


def sizing_tab() -> None:
    method = settings["backtest"]["sizing"]
    st.caption(
        f"Each option's SELL/BUY signals, and its trades, return and Sharpe under the configured {method} "
        f"sizing (what the gate judges) beside unit sizing (one unit in the action's direction), with the "
        f"signals the sizing set to 0."
    )
    sig_formats = {
        "SELL/BUY share": pct,
        "return": pct,
        "return (unit)": pct,
        "Sharpe": st.column_config.NumberColumn(format="%.2f"),
        "Sharpe (unit)": st.column_config.NumberColumn(format="%.2f"),
    }
    st.dataframe(
        gate_views.signal_sizing_table(opts, method),
        hide_index=True,
        width="stretch",
        column_config=sig_formats,
    )


def gate_tab() -> None:
    st.caption(gate_views.gate_caption(settings["criteria"]))
    st.dataframe(gate_views.gate_table(ac.hifa(path, rid), opts), hide_index=True, width="stretch")


# one tab drawn at a time: the sliders first, as a review opens on them
TABS = {
    "HOLD threshold": threshold_panel,
    **({"Logit adjustment (tau)": tau_panel} if TAU_OPTION in titles else {}),
    "Equity curves": equity_tab,
    "The signal apart from its sizing": sizing_tab,
    "Every option against the gate": gate_tab,
}
shown_tab, tab = open_tab(list(TABS), "solutions_tab")
with tab:
    TABS[shown_tab]()
