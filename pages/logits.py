import numpy as np
import pandas as pd
import streamlit as st

from flagcore.dashboard import state as ac
from flagcore.dashboard import plots
from flagcore.dashboard.views import model_logit_options

st.title("Logit analysis")
rid = ac.require_run()
path = ac.store_key()
opts = ac.option_results(path, rid).set_index("option")
choices = model_logit_options(ac.store(), rid)
option = st.selectbox("Model", choices, format_func=lambda o: opts.loc[o, "title"], key="logit_model")
d = ac.diagnostics(path, rid, option)
p = ac.predictions(path, rid, option)
logits = p[["logit_sell", "logit_hold", "logit_buy"]].to_numpy()

ad, conf, col = d["action_distribution"], d["confidence"], d["collapse"]
(st.error if col["collapsed"] else st.success)(
    f"{'COLLAPSED' if col['collapsed'] else 'Not collapsed'}: {col['reason']}. {col['post_hoc_outlook'].capitalize()}.")

st.subheader("Actions and confidence")
c = st.columns(4)
for i, cls in enumerate(("SELL", "HOLD", "BUY")):
    c[i].metric(cls, f"{ad['counts'][cls]:,}", f"{ad['shares'][cls]:.2%} of bars", delta_color="off")
c[3].metric("Mean confidence", ac.pct(conf["mean"]), f"min {conf['min']:.2%}, max {conf['max']:.2%}",
            delta_color="off")
left, right = st.columns(2)
left.plotly_chart(plots.action_shares({opts.loc[option, "title"]: ad["shares"]}), width="stretch")
right.plotly_chart(plots.confidence_histogram(p["confidence"].to_numpy()), width="stretch")

st.subheader("Logits per class")
st.caption("The seed's table: strongly separated means with small spreads mean the model is sure of one class "
           "whatever the input.")
st.dataframe(pd.DataFrame(d["logits"]).T.rename_axis("class"), width="stretch")
left, right = st.columns(2)
left.plotly_chart(plots.logit_distributions(logits), width="stretch")
right.plotly_chart(plots.logits_over_time(p["timestamp"], logits), width="stretch")

m = d.get("metrics")
if m:
    st.subheader("Against the labels")
    c = st.columns(5)
    c[0].metric("Accuracy", ac.pct(m["accuracy"]))
    c[1].metric(f"Majority-class baseline ({m['majority_class']})", ac.pct(m["majority_baseline"]),
                help="what always predicting the most common label scores")
    c[2].metric("Balanced accuracy", ac.pct(m["balanced_accuracy"]))
    c[3].metric("Macro-F1", f"{m['macro_f1']:.3f}")
    c[4].metric("MCC / kappa", f"{m['mcc']:.3f} / {m['cohen_kappa']:.3f}")
    st.dataframe(pd.DataFrame(m["per_class"]).T.rename_axis("class"), width="stretch")
    left, right = st.columns(2)
    left.plotly_chart(plots.confusion_heatmap(np.asarray(m["confusion_matrix"])), width="stretch")
    if d.get("calibration"):
        right.plotly_chart(plots.reliability_diagram(d["calibration"]), width="stretch")
