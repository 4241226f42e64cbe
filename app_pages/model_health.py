"""Model health: parameter counts, checkpoints, the forward-pass check, feature shift, collapse."""

import streamlit as st

from flagcore.dashboard import plots, views
from flagcore.dashboard import state as ac
from flagcore.vocab import collapse_sentence

st.title("Model health")
rid = ac.require_run()
path = ac.store_key()
models = ac.run_models(path, rid)
base = views.model_of(models, "baseline")

st.subheader("Architecture and parameters")
c = st.columns(3)
c[0].metric("Total parameters", f"{int(base['total_parameters']):,}")
c[1].metric(
    "Trainable", f"{int(base['trainable_parameters']):,}", help="LoRA adapters and the layers left unfrozen"
)
c[2].metric("Trainable share", f"{views.trainable_share(base):.2%}")
# drawn only when opened (a collapsed st.json still loads the JSON viewer into the page)
box = st.expander(
    "Configuration of the baseline network (as stored in its checkpoint)",
    key="health_config",
    on_change="rerun",
)
with box:
    if box.open:
        st.json(base["config"])
st.caption(
    "The seed's table: each preset's parameters with peft LoRA on the six Linear layers of each block, "
    "counted in closed form (equal to the built model's); `full` is the reviewed model: 87,955,971 "
    "parameters, 2,938,371 trainable."
)
st.dataframe(ac.presets(), width="stretch")

st.subheader("Checkpoints in this run")
st.dataframe(views.models_table(models), hide_index=True, width="stretch")
info = ac.run_info(path, rid)
st.caption(views.precision_line(info["settings"], info["summary"]))
box = st.expander("Provenance of the baseline checkpoint", key="health_provenance", on_change="rerun")
with box:
    if box.open:
        st.json(base["provenance"])

st.subheader("Load and forward-pass check")
st.caption(
    "Loads the baseline checkpoint, runs it on the last bars of the evaluation data and compares "
    "the logits with the stored ones."
)
if st.button("Run the check"):
    try:
        res = ac.forward_check(path, rid, base)
    except ac.FlagcoreError as e:
        st.error(ac.plain(e))
    else:
        (st.success if res["ok"] else st.error)(
            f"{res['bars']} bars re-run in {res['seconds'] * 1000:.0f} ms: largest logit difference "
            f"{res['max_abs_diff']:.2e} ({'matches' if res['ok'] else 'DOES NOT match'} the stored run)."
        )

diag = ac.diagnostics(path, rid, "baseline")
st.subheader("Feature coverage and shift")
shift = diag.get("feature_shift")
if shift:
    padded = views.padded_inputs(shift)
    st.write(
        f"{len(padded)} of {len(shift)} model inputs are zero padding in the evaluation data"
        + (f": {', '.join(padded)}." if padded else ".")
    )
    st.plotly_chart(plots.feature_shift(shift), width="stretch")
    st.dataframe(views.shift_table(shift), hide_index=True, width="stretch")
else:
    st.info("This run was evaluated without the training data, so there is no train-vs-test shift.")

st.subheader("Collapse verdict")
col = diag.get("collapse", {})
(st.error if col.get("collapsed") else st.success)(collapse_sentence(col))
