from pathlib import Path

import pandas as pd
import streamlit as st

from flagcore.dashboard import state as ac
from flagcore.dashboard import plots
from flagcore.models.flag_trader import preset_table


@st.cache_resource(show_spinner="Building the presets to count their parameters...")
def presets() -> pd.DataFrame:
    return pd.DataFrame(preset_table()).set_index("preset")


st.title("Model health")
rid = ac.require_run()
path = ac.store_key()
models = ac.run_models(path, rid)
base = models[models["role"] == "baseline"].iloc[0]

st.subheader("Architecture and parameters")
c = st.columns(3)
c[0].metric("Total parameters", f"{int(base['total_parameters']):,}")
c[1].metric("Trainable (LoRA and unfrozen)", f"{int(base['trainable_parameters']):,}")
c[2].metric("Trainable share", f"{base['trainable_parameters'] / base['total_parameters']:.2%}")
st.json(base["config"], expanded=False)
st.caption("The seed's table, from the presets as built (peft LoRA on the six Linear layers of each block); "
           "`full` is the reviewed model: 87,955,971 parameters, 2,938,371 trainable.")
st.dataframe(presets(), width="stretch")

st.subheader("Checkpoints in this run")
show = models[["role", "kind", "source", "total_parameters", "trainable_parameters", "model_id"]].rename(
    columns={"model_id": "sha256"})
st.dataframe(show, hide_index=True, width="stretch")
with st.expander("Provenance of the baseline checkpoint"):
    st.json(base["provenance"])

st.subheader("Load and forward-pass check")
st.caption("Loads the baseline checkpoint, runs it on the last bars of the evaluation data and compares "
           "the logits with the stored ones.")
if st.button("Run the check"):
    from flagcore.dashboard.health import forward_check

    info = ac.run_info(path, rid)
    ds = ac.dataset(path, info["dataset_id"])
    if not Path(base["source"]).exists() or not Path(ds["source"]).exists():
        st.error(ac.plain(f"The checkpoint {base['source']} or the dataset {ds['source']} is no longer on disk."))
    else:
        model = ac.loaded_model(base["source"], base["model_id"])
        stored = ac.predictions(path, rid, "baseline")
        res = forward_check(model, ds["source"], stored)
        (st.success if res["ok"] else st.error)(
            f"{res['bars']} bars re-run in {res['seconds'] * 1000:.0f} ms: largest logit difference "
            f"{res['max_abs_diff']:.2e} ({'matches' if res['ok'] else 'DOES NOT match'} the stored run).")

diag = ac.diagnostics(path, rid, "baseline")
st.subheader("Feature coverage and shift")
shift = diag.get("feature_shift")
if shift:
    padded = [r["name"] for r in shift if r["padding"]]
    st.write(f"{len(padded)} of {len(shift)} model inputs are zero padding in the evaluation data"
             + (f": {', '.join(padded)}." if padded else "."))
    st.plotly_chart(plots.feature_shift(shift), width="stretch")
    st.dataframe(pd.DataFrame(shift)[["input", "name", "padding", "psi", "ks", "shift"]], hide_index=True,
                 width="stretch")
else:
    st.info("This run was evaluated without the training data, so there is no train-vs-test shift.")

st.subheader("Collapse verdict")
col = diag.get("collapse", {})
(st.error if col.get("collapsed") else st.success)(
    f"{'COLLAPSED' if col.get('collapsed') else 'Not collapsed'}: {col.get('reason')}. "
    f"{str(col.get('post_hoc_outlook', '')).capitalize()}.")
