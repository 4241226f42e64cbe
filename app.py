"""flagcore dashboard: the router. Pages live in pages/; logic lives in the flagcore package."""

import streamlit as st

import flagcore
from flagcore.dashboard import state as ac
from flagcore.dashboard.identity import load_identity_config
from flagcore.dashboard.views import run_labels, run_precision

st.set_page_config(page_title="flagcore", page_icon=":material/fact_check:", layout="wide")

try:  # a damaged store or a bad team config: one line naming the file and the fix, no traceback
    runs = ac.runs(ac.store_key())
    policy = ac.review_policy()
    load_identity_config()
except ac.FlagcoreError as e:
    st.error(ac.plain(str(e)))
    st.stop()
if runs.empty:
    pages = [st.Page("pages/welcome.py", title="Get started", icon=":material/rocket_launch:", default=True)]
else:
    pages = [
        st.Page("pages/status.py", title="Validation status", icon=":material/verified:", default=True),
        st.Page("pages/model_health.py", title="Model health", icon=":material/monitor_heart:"),
        st.Page("pages/logits.py", title="Logit analysis", icon=":material/bar_chart:"),
        st.Page("pages/solutions.py", title="Solution comparison", icon=":material/tune:"),
        st.Page("pages/hifa.py", title="HIFA criteria", icon=":material/rule:"),
        st.Page("pages/root_cause.py", title="Root cause", icon=":material/troubleshoot:"),
        st.Page("pages/reviews.py", title="Reviews", icon=":material/how_to_reg:"),
        st.Page("pages/compare.py", title="Compare runs", icon=":material/compare_arrows:"),
    ]
nav = st.navigation(pages)
st.sidebar.title("flagcore")
st.sidebar.caption(f"validation review, version {flagcore.__version__}")
if not runs.empty:
    ac.run_picker(run_labels(runs, ac.run_statuses(ac.store_key(), policy)))
    picked = runs[runs["run_id"] == ac.current_run()]
    if not picked.empty:  # old runs record none: fp32
        st.sidebar.caption(f"Inference precision: {run_precision(picked['settings'].iloc[0])}")
nav.run()
