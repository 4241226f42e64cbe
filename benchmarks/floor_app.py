"""The floor of the page benchmarks: a bare Streamlit app timed the same way as the dashboard, on the
same machine and browser, so that what no Streamlit page can beat here is measured beside the targets.

Three pages: a title with four metrics (the default page), the same with one plotly chart of three
lines of 2,000 points (a page's first chart loads and compiles plotly.js), and a fragment with a
slider and three metrics (a slider step's round trip with nothing computed).
``python -m streamlit run benchmarks/floor_app.py`` shows it.
"""

import numpy as np
import plotly.graph_objects as go
import streamlit as st


def metrics(value: float) -> None:
    c = st.columns(4)
    for i, col in enumerate(c):
        col.metric(f"metric {i + 1}", f"{value * (i + 1):.3f}")


def text_page() -> None:
    st.title("Bare page")
    st.caption("A title and four metrics: Streamlit's frontend and one script run.")
    metrics(1.0)


def chart_page() -> None:
    st.title("Bare page with one chart")
    metrics(1.0)
    walks = np.random.default_rng(0).normal(size=(3, 2000)).cumsum(axis=1)
    fig = go.Figure([go.Scatter(y=w, mode="lines", name=f"line {i + 1}") for i, w in enumerate(walks)])
    st.plotly_chart(fig, width="stretch")


@st.fragment
def slider_panel() -> None:
    value = st.slider("HOLD threshold", 0.0, 1.0, 0.5, 0.001, format="%.3f", key="threshold")
    c = st.columns(3)
    for i, col in enumerate(c):
        col.metric(f"metric {i + 1}", f"{value * (i + 1):.3f}")


def slider_page() -> None:
    st.title("Bare slider")
    slider_panel()


st.navigation(
    [
        st.Page(text_page, title="Bare page", url_path="text", default=True),
        st.Page(chart_page, title="One chart", url_path="chart"),
        st.Page(slider_page, title="Slider", url_path="slider"),
    ]
).run()
