"""Validation status: every run with its verdicts, and evaluating a checkpoint from the dashboard."""

import streamlit as st

from flagcore.dashboard import identity, views
from flagcore.dashboard import state as ac
from flagcore.dashboard.panels import show_status

st.title("Validation status")
st.caption(
    "Every evaluation run in the store. A run passes HIFA when an option meets every criterion: "
    "a minimum number of trades (independent bets, 30 by default), CPCV mean Sharpe, deflated Sharpe "
    "(DSR probability and haircut) and permutation p-value. The perfect-foresight labels are "
    "shown as an upper bound and never count as a passing option."
)
path = ac.store_key()
runs = ac.runs(path)
policy = ac.review_policy()
overview = views.runs_overview(runs, ac.all_option_results(path), ac.run_statuses(path, policy))
st.dataframe(
    overview,
    hide_index=True,
    width="stretch",
    column_config={"baseline HOLD share": st.column_config.NumberColumn(format="percent")},
)
rid = ac.current_run()
if rid is not None:
    st.subheader(f"Run {rid}")
    row = views.overview_row(overview, rid)
    verdict, reviewer = views.latest_review(runs, rid)
    info = ac.run_info(path, rid)
    c = st.columns(2)  # two metrics a row: on a laptop a wider value is cut off with an ellipsis
    c[0].metric("Baseline", row["baseline"], f"{ac.pct(row['baseline HOLD share'])} HOLD", delta_color="off")
    c[1].metric("Best option HIFA", row["best HIFA"], help=row["best option"])
    # the reviewer's name is user text: shown as text
    st.text("No review yet" if reviewer is None else f"Latest review: {verdict} by {reviewer}")
    show_status(ac.run_status(path, rid, policy), info.get("author"))
    st.caption(views.precision_line(info["settings"], info["summary"]))
    q = {"run": str(rid)}
    links = st.columns(6)
    links[0].page_link("app_pages/model_health.py", label="Model health", query_params=q)
    links[1].page_link("app_pages/logits.py", label="Logit analysis", query_params=q)
    links[2].page_link("app_pages/solutions.py", label="Solution comparison", query_params=q)
    links[3].page_link("app_pages/hifa.py", label="HIFA criteria", query_params=q)
    links[4].page_link("app_pages/reviews.py", label="Reviews and sign-off", query_params=q)
    if len(runs) > 1:
        links[5].page_link("app_pages/compare.py", label="Compare with another run", query_params=q)
    st.dataframe(
        views.hifa_badges(
            ac.hifa(path, rid), ac.option_results(path, rid), info["settings"]["backtest"]["sizing"]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "sized to 0": st.column_config.TextColumn(
                help="SELL/BUY signals the sizing set to 0: why a model that signals can trade less"
            )
        },
    )
st.caption(
    "New runs: `flagcore evaluate --checkpoint CKPT --data FILE [--train FILE] [--partner CGDT] "
    "[--retrained CKPT ...]`; refresh the page to see them."
)

with st.expander("Evaluate a checkpoint on a dataset"):
    files = ac.files()
    st.caption(
        "Files under the configured folders (`FLAGCORE_FILES`, default `data/`). Inference is cached "
        "in the store, so a checkpoint and dataset already evaluated are not run again."
    )
    if not files["checkpoints"] or not files["datasets"]:
        st.info("No checkpoints or datasets found under the configured folders.")
    else:
        ckpt = st.selectbox("Checkpoint (the model under review)", files["checkpoints"], key="eval_ckpt")
        data = st.selectbox("Evaluation data", files["datasets"], key="eval_data")
        train = st.selectbox(
            "Training data (prior, payoff ratios, feature shift)",
            [None, *files["datasets"]],
            format_func=lambda p: "none" if p is None else p,
            key="eval_train",
        )
        if st.button("Evaluate", key="eval_go"):
            bar = st.progress(0.0, text="starting")
            try:  # the run's author: the user's login or trusted header; none for an unverified user
                who = identity.reviewer_identity()
            except ac.FlagcoreError:
                who = None
            try:
                res = ac.evaluate_files(
                    ckpt, data, train, progress=ac.progress_bar(bar), author=None if who is None else who.name
                )
            except Exception as e:  # noqa: BLE001 - the user sees one line, the server keeps running
                st.error(ac.error_line(e))
            else:
                st.success(f"Run {res['run_id']} written; refresh the page to see it in the list.")
