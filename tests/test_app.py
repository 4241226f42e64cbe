from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(autouse=True)
def clear_caches():
    import streamlit as st
    st.cache_data.clear()
    st.cache_resource.clear()


def test_landing_page_renders_without_exceptions():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Validation status"


def test_model_health_shows_the_seed_parameter_counts():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/model_health.py").run()
    assert not at.exception
    df = at.dataframe[0].value
    assert int(df.loc["full", "total_params"]) == 87_955_971
    assert int(df.loc["full", "trainable_params"]) == 2_938_371
