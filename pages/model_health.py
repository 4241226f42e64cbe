import pandas as pd
import streamlit as st

from flagcore.model import preset_table


@st.cache_resource(show_spinner="Building the presets to count their parameters...")
def presets() -> pd.DataFrame:
    return pd.DataFrame(preset_table()).set_index("preset")


st.title("Model health")
st.subheader("FLAG-TRADER presets")
st.caption("Parameter counts come from the models as built (peft LoRA on the six Linear layers of "
           "each block); `full` is the reviewed model: 87,955,971 parameters, 2,938,371 trainable.")
st.dataframe(presets(), width="stretch")
