"""flagcore dashboard: the router. Pages live in app_pages/; logic lives in the flagcore package.

Not ``pages/``: Streamlit runs the files of a ``pages/`` folder beside this one on their own, without
this router, when a fresh server's first visit opens one of their URLs (before any ``st.navigation``
has run). Every read of the store in one script run, this router's and its page's, goes through one
read-only connection (``Store.reading``), opened only if a read misses the caches.
"""

import streamlit as st

import flagcore
from flagcore.dashboard import state as ac
from flagcore.dashboard.identity import load_identity_config
from flagcore.dashboard.views import run_labels, run_precision

PAGES = (  # file, title, icon; the first is the default
    ("status", "Validation status", "verified"),
    ("model_health", "Model health", "monitor_heart"),
    ("logits", "Logit analysis", "bar_chart"),
    ("solutions", "Solution comparison", "tune"),
    ("hifa", "HIFA criteria", "rule"),
    ("root_cause", "Root cause", "troubleshoot"),
    ("reviews", "Reviews", "how_to_reg"),
    ("compare", "Compare runs", "compare_arrows"),
)


def route() -> None:
    try:  # a damaged store or a bad team config: one line naming the file and the fix, no traceback
        runs = ac.runs(ac.store_key())
        policy = ac.review_policy()
        load_identity_config()
    except ac.FlagcoreError as e:
        st.error(ac.plain(str(e)))
        st.stop()
    if runs.empty:
        pages = [
            st.Page(
                "app_pages/welcome.py", title="Get started", icon=":material/rocket_launch:", default=True
            )
        ]
    else:
        pages = [
            st.Page(f"app_pages/{name}.py", title=title, icon=f":material/{icon}:", default=i == 0)
            for i, (name, title, icon) in enumerate(PAGES)
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


st.set_page_config(page_title="flagcore", page_icon=":material/fact_check:", layout="wide")
try:
    store = ac.store()
except ac.FlagcoreError as e:  # a bad FLAGCORE_BUSY_TIMEOUT
    st.error(ac.plain(str(e)))
    st.stop()
with store.reading():
    route()
