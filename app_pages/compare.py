"""Compare runs: two runs side by side (``?run=A&vs=B``): their inputs with the differences marked, per
option the action shares, trades, Sharpe and each HIFA criterion, and both equity curves on one chart."""

import streamlit as st

from flagcore.dashboard import compare, plots
from flagcore.dashboard import state as ac
from flagcore.dashboard.views import run_labels
from flagcore.vocab import CLASS_NAMES, NOT_A_TRIAL

st.title("Compare runs")
rid = ac.require_run()
path = ac.store_key()
runs = ac.runs(path)
policy = ac.review_policy()
q = st.query_params.get("vs", "")
vs = compare.default_vs(runs, rid, int(q) if q.isdigit() else None)
if vs is None:
    st.info("The store holds one run: evaluate another (another checkpoint or other settings) to compare.")
    st.stop()
labels = run_labels(runs, ac.run_statuses(path, policy))
others = [r for r in labels if r != rid]
vs = st.selectbox("Compare with", others, index=others.index(vs), format_func=labels.get, key=f"vs_of_{rid}")
st.query_params["vs"] = str(vs)  # the pair is in the URL: a comparison can be shared


def side(run_id: int) -> compare.RunSide:
    return compare.RunSide(
        run_id,
        ac.run_info(path, run_id),
        ac.run_models(path, run_id),
        ac.option_results(path, run_id),
        ac.hifa(path, run_id),
        ac.equity_curves(path, run_id),
    )


a, b = side(rid), side(vs)
st.caption(
    f"Run {a.tag} (picked in the sidebar) against run {b.tag}. Changes read B - A: {b.tag} minus {a.tag}."
)
c = st.columns(2)
for col, s in zip(c, (a, b), strict=True):
    status = ac.run_status(path, s.run_id, policy)
    col.metric(f"Run {s.tag}", status.status, help=f"{s.run['name']}: review status under the team's policy")
for line in compare.summary_lines(a, b):
    st.markdown(ac.plain(line))

st.subheader("Inputs")
inputs = compare.inputs_table(a, b)
st.dataframe(
    inputs.style.apply(
        lambda r: ["background-color: rgba(255, 193, 7, 0.25)" if r[compare.DIFFERS] else ""] * len(r), axis=1
    ),
    hide_index=True,
    width="stretch",
    column_config={compare.DIFFERS: st.column_config.CheckboxColumn(help="the two runs' values differ")},
)

st.subheader("Options")
table = compare.options_table(a, b).drop(columns=["key"])
pct = st.column_config.NumberColumn(format="percent")
formats = {f"{cls} {s.tag}": pct for cls in CLASS_NAMES for s in (a, b)}
formats |= {k: st.column_config.NumberColumn(format="%.2f") for k in table.columns if k.startswith("Sharpe")}
formats["trades change"] = st.column_config.NumberColumn(format="%+d")
st.dataframe(table, hide_index=True, width="stretch", column_config=formats)
st.caption("An empty cell: the run has no such option, or no trades (an undefined Sharpe).")

st.subheader("HIFA criteria")
crit = compare.criteria_table(a, b)
only_changed = st.toggle("Only the criteria whose result changed", value=False, key="compare_changed")
st.dataframe(crit[crit["changed"]] if only_changed else crit, hide_index=True, width="stretch")

st.subheader("Equity curves")
options = compare.options_table(a, b)
titles = dict(zip(options["key"], options["option"], strict=True))
shown = st.multiselect(
    "Options",
    list(titles),
    default=[o for o in ("baseline",) if o in titles] or [next(o for o in titles if o not in NOT_A_TRIAL)],
    format_func=titles.get,
    key="compare_options",
)
frame, names = compare.equity_pair(a, b, shown)
st.plotly_chart(
    plots.equity_curves(frame, names, title=f"Equity curves, runs {a.tag} and {b.tag}"), width="stretch"
)
