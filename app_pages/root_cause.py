"""Root cause: why the baseline collapsed, each suspected cause tested on the model (``flagcore explain``),
and a live ablation that fills the inputs a reviewer picks and infers a sample of evaluated bars again."""

import streamlit as st

from flagcore.dashboard import ablation, views
from flagcore.dashboard import root_cause as rc
from flagcore.dashboard import state as ac

st.title("Root cause")
rid = ac.require_run()
path = ac.store_key()
result = ac.root_cause(path, rid)
n_params = int(views.model_of(ac.run_models(path, rid), "baseline")["total_parameters"])

# a checkpoint gone or changed, a dataset gone, no FLAG-TRADER baseline: told from the files and the
# store; the model itself (torch, peft: seconds) loads only when the live ablation is asked for
problem = ac.ablation_problem(path, rid)
if problem:
    st.warning(ac.plain(problem))

st.subheader("Verdicts")
if result is None:
    st.info(
        f"`flagcore explain` has not been run for run {rid}: `flagcore explain --run {rid}` computes it "
        "from a terminal, or run it here."
    )
    settings = rc.explain_settings(n_params)
    if st.button(f"Run explain ({settings['bars']} bars)", type="primary", key="explain_go"):
        bar = st.progress(0.0, text="starting")
        try:
            with st.spinner("Testing each suspected cause on the model..."):
                rc.run_explain(ac.store(), rid, progress=ac.progress_bar(bar), **settings)
        except ac.FlagcoreError as e:
            st.error(ac.error_line(e))
        else:
            ac.written()
            st.rerun()
else:
    st.caption(rc.computed_line(result) + ". " + rc.model_line(result))
    cols = st.columns(len(rc.verdict_badges(result)) or 1)
    for c, (label, color) in zip(cols, rc.verdict_badges(result), strict=False):
        c.badge(label, color=color)
    st.dataframe(rc.verdict_table(result), hide_index=True, width="stretch")
    missing = rc.missing_table(result)
    if not missing.empty:
        st.caption("Measures this explain could not compute (their causes read inconclusive):")
        st.dataframe(missing, hide_index=True, width="stretch")

    st.subheader("Prior and loss")
    prior = rc.prior_tables(result)
    if prior is None:
        st.info("The prior check was not measured: the run records no training label prior.")
    else:
        left, right = st.columns(2)
        left.dataframe(prior[0], hide_index=True, width="stretch")
        right.dataframe(prior[1], hide_index=True, width="stretch")
        st.caption(prior[2])

    st.subheader("Padding and shift counterfactuals, and in sample")
    st.caption(
        "The sampled bars inferred again after each fill: a model collapsed by the padding trades after "
        "the padded inputs are filled; one that collapses in sample too points to labels and loss."
    )
    st.dataframe(rc.counterfactual_table(result), hide_index=True, width="stretch")

    left, right = st.columns(2)
    with left:
        st.subheader("Input sensitivity")
        sens = rc.sensitivity_table(result)
        if sens is None:
            st.info("Not measured.")
        else:
            st.dataframe(sens, hide_index=True, width="stretch")
    with right:
        st.subheader("Attribution")
        attr = rc.attribution_table(result)
        if attr is None:
            st.info("Not measured.")
        else:
            st.dataframe(attr[0], hide_index=True, width="stretch")
            st.caption(attr[1])

st.subheader("Live ablation")
model = None
if problem:
    st.info("The live ablation needs the run's FLAG-TRADER checkpoint and data (see the warning above).")
elif st.session_state.get("ablation_run") != rid:
    st.caption(
        "Fill the inputs you pick and infer a sample of evaluated bars again with the run's model. "
        "Loading the model (its checkpoint and data) takes a few seconds the first time on this server."
    )
    if st.button("Load the model for the live ablation", key="ablation_load"):
        st.session_state["ablation_run"] = rid
        st.rerun()
else:
    try:
        model = ac.explain_model(path, rid)
    except ac.FlagcoreError as e:  # a dataset changed since the run (content hash), for example
        st.warning(ac.error_line(e))
if model is not None:
    plan = ac.ablation_plan(path, rid)
    st.caption(
        "Pick inputs to fill and a fill; the loaded model infers a sample of evaluated bars again. "
        + plan.note()
    )
    fills = model.fills()
    picked = st.multiselect(
        "Inputs to fill (the padded inputs are preselected)",
        list(range(len(model.names))),
        default=model.padded,
        format_func=model.names.__getitem__,
        key="ablation_inputs",
    )
    fill = st.radio("Fill", list(fills), format_func=fills.__getitem__, horizontal=True, key="ablation_fill")
    c = st.columns(2)
    bars = c[0].number_input(
        "Sampled bars",
        min_value=min(ablation.MIN_BARS, plan.candidates),
        max_value=plan.candidates,
        value=plan.bars,
        step=50,
        key="ablation_bars",
    )
    seed = c[1].number_input("Seed", min_value=0, value=0, step=1, key="ablation_seed")
    wanted = (rid, tuple(picked), fill, int(bars), int(seed))
    if st.button("Infer the sample again", type="primary", key="ablation_go"):
        sample = ac.ablation_sample(path, rid, int(bars), int(seed))
        bar = st.progress(0.0, text="inferring")
        st.session_state["ablation"] = (
            wanted,
            ablation.ablate(model, sample, fill, picked, progress=ac.progress_bar(bar)),
        )
    shown = st.session_state.get("ablation")
    if shown is not None and shown[0] == wanted:
        ab = shown[1]
        st.dataframe(ab.table(), hide_index=True, width="stretch")
        st.caption(ab.caption())
    elif shown is not None:
        st.caption("The settings changed since the last ablation: press the button to infer again.")
