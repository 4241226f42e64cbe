"""Logit analysis: per model the action shares, confidence, logits, accuracy and calibration."""

import numpy as np
import streamlit as st

from flagcore.dashboard import plots, views
from flagcore.dashboard import state as ac
from flagcore.dashboard.panels import open_tab
from flagcore.vocab import CLASS_NAMES, LOGIT_COLUMNS, collapse_sentence

st.title("Logit analysis")
rid = ac.require_run()
path = ac.store_key()
results = ac.option_results(path, rid)
titles = views.option_titles(results)
choices = views.model_logit_options(ac.run_models(path, rid), results)
option = st.selectbox("Model", choices, format_func=titles.get, key="logit_model")
d = ac.diagnostics(path, rid, option)
p = ac.predictions(path, rid, option)

ad, conf, col = d["action_distribution"], d["confidence"], d["collapse"]
(st.error if col["collapsed"] else st.success)(collapse_sentence(col))

c = st.columns(4)
for i, cls in enumerate(CLASS_NAMES):
    c[i].metric(cls, f"{ad['counts'][cls]:,}", f"{ad['shares'][cls]:.2%} of bars", delta_color="off")
c[3].metric(
    "Mean confidence",
    ac.pct(conf["mean"]),
    f"min {conf['min']:.2%}, max {conf['max']:.2%}",
    delta_color="off",
)


def actions_tab() -> None:
    left, right = st.columns(2)
    left.plotly_chart(plots.action_shares({titles[option]: ad["shares"]}), width="stretch")
    right.plotly_chart(plots.confidence_histogram(p["confidence"].to_numpy()), width="stretch")


def logits_tab() -> None:
    st.caption(
        "The seed's table: strongly separated means with small spreads mean the model is sure of one "
        "class whatever the input."
    )
    st.dataframe(views.per_class_table(d["logits"]), width="stretch")
    logits = p[list(LOGIT_COLUMNS)].to_numpy()
    left, right = st.columns(2)
    left.plotly_chart(plots.logit_distributions(logits), width="stretch")
    right.plotly_chart(plots.logits_over_time(p["timestamp"], logits), width="stretch")


def labels_tab(m: dict) -> None:
    # two metrics a row: on a laptop a wider label or value is cut off with an ellipsis
    c = st.columns(2)
    c[0].metric("Accuracy", ac.pct(m["accuracy"]))
    c[1].metric(
        f"Majority-class baseline ({m['majority_class']})",
        ac.pct(m["majority_baseline"]),
        help="what always predicting the most common label scores",
    )
    c = st.columns(2)
    c[0].metric("Balanced accuracy", ac.pct(m["balanced_accuracy"]))
    c[1].metric("Macro-F1", f"{m['macro_f1']:.3f}")
    c = st.columns(2)
    c[0].metric("MCC", f"{m['mcc']:.3f}", help="Matthews correlation coefficient: 0 is chance, 1 perfect")
    c[1].metric("Cohen's kappa", f"{m['cohen_kappa']:.3f}", help="agreement beyond chance: 0 is chance")
    st.dataframe(views.per_class_table(m["per_class"]), width="stretch")
    left, right = st.columns(2)
    left.plotly_chart(plots.confusion_heatmap(np.asarray(m["confusion_matrix"])), width="stretch")
    if d.get("calibration"):
        right.plotly_chart(plots.reliability_diagram(d["calibration"]), width="stretch")


# one tab drawn at a time (each holds two charts); a run evaluated without labels has no third
m = d.get("metrics")
TABS = {
    "Actions and confidence": actions_tab,
    "Logits per class": logits_tab,
    **({"Against the labels": lambda: labels_tab(m)} if m else {}),
}
shown_tab, tab = open_tab(list(TABS), "logits_tab")
with tab:
    TABS[shown_tab]()
