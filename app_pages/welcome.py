"""Get started: shown on an empty store; builds the embedded demo at the press of a button."""

import streamlit as st

from flagcore.dashboard import state as ac

st.title("Get started")
st.info(
    f"The result store `{ac.store().path}` holds no runs yet. Build the embedded demo: a synthetic "
    "market, the plain-CE model that collapses to HOLD like the reviewed FLAG-TRADER, every remedy, "
    "and its evaluation with HIFA."
)
quick = st.toggle(
    "Quick demo (about a minute; a smaller market)",
    value=True,
    help="off: the full demo with the seed's 9,073 test bars, about five minutes",
)
st.caption("The same from a terminal:")
st.code(f"flagcore demo{' --quick' if quick else ''} --store {ac.store().path}", language="bash")
if st.button("Build the demo", type="primary"):
    bar = st.progress(0.0, text="starting")
    with st.spinner("Building the demo..."):
        res = ac.build_demo(quick, progress=ac.progress_bar(bar))
    bar.progress(1.0, text="done")
    st.success(f"Run {res['run_id']} is in the store.")
    st.rerun()
