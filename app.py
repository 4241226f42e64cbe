"""flagcore dashboard: the router. Pages live in pages/; logic lives in the flagcore package."""

import streamlit as st

import flagcore

st.set_page_config(page_title="flagcore", page_icon=":material/fact_check:", layout="wide")

pages = [
    st.Page("pages/status.py", title="Validation status", icon=":material/verified:", default=True),
    st.Page("pages/model_health.py", title="Model health", icon=":material/monitor_heart:"),
]
nav = st.navigation(pages)
st.sidebar.caption(f"flagcore {flagcore.__version__}")
nav.run()
