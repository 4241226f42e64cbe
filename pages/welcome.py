import streamlit as st

from flagcore.dashboard.state import store

st.title("Get started")
st.info(f"The result store `{store().path}` holds no runs yet. Build the embedded demo: a synthetic "
        "market, the plain-CE model that collapses to HOLD like the reviewed FLAG-TRADER, every remedy, "
        "and its evaluation with HIFA.")
quick = st.toggle("Quick demo (about a minute; a smaller market)", value=True,
                  help="off: the full demo with the seed's 9,073 test bars, about five minutes")
st.caption("The same from a terminal:")
st.code(f"flagcore demo{' --quick' if quick else ''} --store {store().path}", language="bash")
if st.button("Build the demo", type="primary"):
    from flagcore.pipeline.demo import build_demo

    bar = st.progress(0.0, text="starting")

    def progress(stage: str, frac: float) -> None:
        bar.progress(min(max(frac, 0.0), 1.0), text=stage)

    with st.spinner("Building the demo..."):
        res = build_demo(store(), quick=quick, progress=progress, workers=1)
    bar.progress(1.0, text="done")
    st.success(f"Run {res['run_id']} is in the store.")
    st.rerun()
