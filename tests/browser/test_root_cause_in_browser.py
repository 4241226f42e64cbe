"""The Root cause page in Debian's chromium, driven by Playwright, against a real ``streamlit run``
server on the quick demo: the stored verdict table, and the live ablation (pick a fill, press the
button, the result table appears).

One server for the module, on its own copy of the demo store, explained once before it starts. Like
tests/browser/test_dashboard.py, these skip without chromium or playwright unless
FLAGCORE_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import pytest
from conftest import copy_demo_store, require_browser, streamlit_server

from flagcore.vocab import ROOT_CAUSES


@pytest.fixture(scope="module")
def server(quick_demo, tmp_path_factory):
    """A server over a copy of the demo store holding one explain (100 bars, 8 IG windows)."""
    require_browser()
    from flagcore.pipeline.explain import explain_run

    folder = tmp_path_factory.mktemp("root_cause_server")
    demo = copy_demo_store(quick_demo, folder / "store")
    result = explain_run(demo["store"], demo["run_id"], bars=100, ig_windows=8).to_dict()
    log = folder / "streamlit.log"
    with streamlit_server(demo["store"].path, log) as url:
        yield {"url": url, "run_id": demo["run_id"], "result": result}


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1600})
    pg = ctx.new_page()
    yield pg
    ctx.close()


def _settle(page, timeout: float = 90_000) -> None:
    """Wait for the app to finish its run: script not running, no skeletons left."""
    page.wait_for_timeout(250)  # past the widget debounce
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0", timeout=timeout
    )


def _no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0


def _open(server, page) -> None:
    page.goto(f"{server['url']}/root_cause?run={server['run_id']}")
    _settle(page)
    _no_exception(page)
    assert page.locator("[data-testid='stMain'] h1").first.inner_text().startswith("Root cause")


def test_the_page_shows_the_stored_verdict_table(server, page):
    from flagcore.dashboard import root_cause as rc

    _open(server, page)
    main = page.locator("[data-testid='stMain']")
    assert main.get_by_text(rc.computed_line(server["result"])).count() >= 1
    for label, _ in rc.verdict_badges(server["result"]):  # one badge per cause: "padding: not supported"
        assert main.get_by_text(label, exact=True).count() == 1, label
    assert len(rc.verdict_badges(server["result"])) == len(ROOT_CAUSES)
    grids = main.locator("[data-testid='stDataFrame']")
    assert grids.count() >= 4  # verdicts, prior shares and gaps, counterfactuals, ...
    verdicts = grids.first
    verdicts.wait_for(state="visible")
    assert verdicts.bounding_box()["height"] > 100  # drawn with its rows, not an empty frame
    assert page.locator("[data-testid='stAlertContentWarning']").count() == 0  # the checkpoint is fine


def test_the_live_ablation_runs_in_the_browser(server, page):
    _open(server, page)
    main = page.locator("[data-testid='stMain']")
    before = main.locator("[data-testid='stDataFrame']").count()
    assert main.get_by_text("Inputs to fill").count() == 0  # the model loads only when asked for
    main.get_by_role("button", name="Load the model for the live ablation").click()
    _settle(page)
    _no_exception(page)
    main.get_by_text("resampled training rows", exact=True).click()  # the fill
    _settle(page)
    main.get_by_label("Sampled bars").fill("200")
    main.get_by_label("Sampled bars").press("Enter")
    _settle(page)
    main.get_by_role("button", name="Infer the sample again").click()
    _settle(page)
    _no_exception(page)
    caption = main.get_by_text("200 sampled bars inferred again in")
    caption.wait_for(state="visible")
    assert "after filling 11 inputs" in caption.inner_text()  # the padded inputs, preselected
    assert main.locator("[data-testid='stDataFrame']").count() == before + 1  # the result table
    # changing the fill asks for the button again instead of showing a stale table
    main.get_by_text("training medians", exact=True).click()
    _settle(page)
    _no_exception(page)
    assert main.get_by_text("The settings changed since the last ablation").count() == 1
    assert main.locator("[data-testid='stDataFrame']").count() == before
