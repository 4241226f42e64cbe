"""flagcore dashboard: the router. Pages live in pages/; logic lives in the flagcore package."""

import streamlit as st

import flagcore
from flagcore.dashboard.state import store
from flagcore.dashboard.views import run_label

st.set_page_config(page_title="flagcore", page_icon=":material/fact_check:", layout="wide")

runs = store().list_runs()
if runs.empty:
    pages = [st.Page("pages/welcome.py", title="Get started", icon=":material/rocket_launch:", default=True)]
else:
    pages = [
        st.Page("pages/status.py", title="Validation status", icon=":material/verified:", default=True),
        st.Page("pages/model_health.py", title="Model health", icon=":material/monitor_heart:"),
        st.Page("pages/logits.py", title="Logit analysis", icon=":material/bar_chart:"),
        st.Page("pages/solutions.py", title="Solution comparison", icon=":material/tune:"),
        st.Page("pages/hifa.py", title="HIFA criteria", icon=":material/rule:"),
        st.Page("pages/reviews.py", title="Reviews", icon=":material/how_to_reg:"),
    ]
nav = st.navigation(pages)
st.sidebar.title("flagcore")
st.sidebar.caption(f"validation review, version {flagcore.__version__}")
if not runs.empty:
    labels = {int(r["run_id"]): run_label(r) for _, r in runs.iterrows()}
    wanted = st.session_state.get("run")
    if wanted not in labels:  # first visit, a run id from a shared link, or a run that is gone
        st.session_state.pop("run", None)
        q = st.query_params.get("run", "")
        wanted = int(q) if q.isdigit() and int(q) in labels else next(iter(labels))
    st.sidebar.selectbox("Run", list(labels), index=list(labels).index(wanted), format_func=labels.get, key="run",
                         help="the evaluation run every page shows; it is kept in the URL")
    st.query_params["run"] = str(st.session_state["run"])  # always in the URL, so any view can be shared
nav.run()
