import streamlit as st

st.title("Validation status")
st.info(
    "No evaluation runs yet: the result store and the embedded demo are not built in this "
    "version. Meanwhile the command line checks models and data:"
)
st.code(
    "flagcore info --preset full\n"
    "flagcore import their_checkpoint.pt --out data/imported\n"
    "flagcore check-data --data bars.csv\n"
    "flagcore predict --checkpoint data/imported --data bars.csv --out data/predictions.parquet",
    language="bash",
)
