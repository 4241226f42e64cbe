"""The dashboard in Debian's chromium, driven by Playwright, against a real ``streamlit run`` server
on the quick demo.

Without chromium or playwright these tests skip, unless FLAGCORE_REQUIRE_BROWSER=1 (set by
.ci/run, which installs both), where they fail instead. (Fixtures live here, not in a conftest,
because the other tests import helpers from tests/conftest.py by module name; the server and
the browser come from there.)
"""

import re
from pathlib import Path

import pytest
from conftest import copy_demo_store, require_browser, streamlit_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def server(quick_demo, tmp_path_factory):
    """A server on its own copy of the demo store: the reviews signed here stay out of the shared one."""
    require_browser()
    folder = tmp_path_factory.mktemp("server")
    demo = copy_demo_store(quick_demo, folder / "store")
    log = folder / "streamlit.log"
    with streamlit_server(demo["store"].path, log) as url:
        yield {"url": url, "log": log, "store": demo["store"], "run_id": demo["run_id"]}


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    dialogs = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs
    yield pg
    ctx.close()


@pytest.fixture
def settle():
    return _settle


def _settle(page, timeout: float = 60_000) -> None:
    """Wait for the app to finish its run: script not running, no skeletons left."""
    page.wait_for_timeout(250)  # past the widget debounce
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0", timeout=timeout
    )


CHARTED = ("Model health", "Logit analysis", "Solution comparison", "HIFA criteria")
PAGES = [
    "Validation status",
    "Model health",
    "Logit analysis",
    "Solution comparison",
    "HIFA criteria",
    "Reviews",
    "Compare runs",
]


def _no_exception(page):
    assert page.locator("[data-testid='stException']").count() == 0


def test_every_page_from_the_sidebar(server, page, settle):
    page.goto(server["url"])
    settle(page)
    nav = page.locator("[data-testid='stSidebarNav']")
    for title in PAGES:
        nav.get_by_text(title, exact=True).click()
        settle(page)
        _no_exception(page)
        assert page.locator("[data-testid='stMain'] h1").first.inner_text().startswith(title.split()[0])
        assert f"run={server['run_id']}" in page.url  # the run picker lives in the URL
        if title in CHARTED:
            # drawn, not just placed
            page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)


def _metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']").filter(has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text()


def test_slider_moves_the_numbers(server, page, settle):
    page.goto(f"{server['url']}/solutions?run={server['run_id']}")
    settle(page)
    before = (_metric(page, "Trades"), _metric(page, "Sharpe"))
    slider = page.get_by_role("slider").first
    slider.focus()
    for _ in range(5):
        slider.press("PageDown")
    settle(page)
    _no_exception(page)
    value = page.locator("[data-testid='stSliderThumbValue']").first.inner_text()
    assert value != "0.950"
    after = (_metric(page, "Trades"), _metric(page, "Sharpe"))
    assert after != before
    assert re.search(r"threshold=0\.\d+", page.url)


# every element of a metric whose text is wider than its box: a value or label cut off by an ellipsis
_CUT_OFF = """() => [...document.querySelectorAll(
    "[data-testid='stMetricValue'], [data-testid='stMetricLabel']")]
  .flatMap(el => [el, ...el.querySelectorAll('*')])
  .filter(el => el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
  .map(el => el.innerText)"""


@pytest.mark.parametrize("path", ["", "model_health", "logits", "solutions", "hifa", "reviews"])
def test_no_metric_is_cut_off_on_a_laptop(server, page, settle, path):
    """Every metric's label and value fit their column on a 1000-pixel-wide window with the sidebar
    open (values were cut to "21.1% ..." six to a row); reviewers see no Deploy button."""
    page.set_viewport_size({"width": 1000, "height": 900})
    page.goto(f"{server['url']}/{path}?run={server['run_id']}")
    settle(page)
    _no_exception(page)
    assert page.locator("[data-testid='stMetric']").count() >= 2
    if path == "solutions":
        assert page.locator("[data-testid='stMetric']").filter(has_text="DSR probability").count() >= 1
    assert page.evaluate(_CUT_OFF) == []
    assert page.get_by_role("button", name="Deploy").count() == 0  # [client] toolbarMode = "viewer"


def test_the_model_configuration_has_a_label(server, page, settle):
    page.goto(f"{server['url']}/model_health?run={server['run_id']}")
    settle(page)
    expander = page.get_by_text("Configuration of the baseline network (as stored in its checkpoint)")
    assert expander.is_visible()
    expander.click()
    page.wait_for_selector("[data-testid='stJson']", timeout=10_000)


def test_a_shared_url_reopens_the_threshold(server, page, settle):
    page.goto(f"{server['url']}/solutions?run={server['run_id']}&threshold=0.5")
    settle(page)
    _no_exception(page)
    assert page.locator("[data-testid='stSliderThumbValue']").first.inner_text() == "0.500"


def test_a_tab_draws_its_charts_when_opened_and_a_shared_url_reopens_it(server, page, settle, browser):
    """Only the open tab is drawn (a page's reload pays for the charts it shows, not for hidden ones);
    a click on another tab draws its chart and puts the tab in the URL, which reopens it."""
    page.goto(f"{server['url']}/solutions?run={server['run_id']}")
    settle(page)
    titles = page.locator("[data-testid='stPlotlyChart'] .gtitle")
    titles.first.wait_for(timeout=30_000)
    assert [
        t.startswith("Sharpe and trades across the swept thresholds") for t in titles.all_text_contents()
    ] == [True]
    page.get_by_role("tab", name="Equity curves").click()
    page.wait_for_url(re.compile(r"solutions_tab=Equity\+curves"), timeout=30_000)
    settle(page)
    page.locator("[data-testid='stPlotlyChart'] .gtitle", has_text="Equity curves").wait_for(timeout=30_000)
    _no_exception(page)
    assert page.get_by_role("slider").count() == 0  # the HOLD threshold's tab is closed, not drawn
    shared = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    try:
        shared.goto(page.url)
        settle(shared)
        shared.locator("[data-testid='stPlotlyChart'] .gtitle", has_text="Equity curves").wait_for(
            timeout=30_000
        )
        assert shared.get_by_role("tab", name="Equity curves").get_attribute("aria-selected") == "true"
    finally:
        shared.context.close()


def test_review_with_script_is_shown_as_text(server, page, settle):
    page.goto(f"{server['url']}/reviews?run={server['run_id']}")
    settle(page)
    comment = "<script>alert('pwned')</script> baseline collapsed"
    assert page.get_by_text("Signing as").count() == 0  # no login, no trusted header: a typed name
    page.get_by_role("textbox", name="Reviewer").fill("Browser Reviewer")
    page.get_by_text("needs-work", exact=True).click()
    page.get_by_label("Comment").fill(comment)
    page.get_by_role("button", name="Sign off").click()
    # on a busy machine the rerun can start after settle's pause: wait for the review to be listed
    page.get_by_text(comment, exact=True).first.wait_for(state="visible", timeout=60_000)
    settle(page)
    _no_exception(page)
    assert page.get_by_text(comment, exact=True).first.is_visible()
    assert page.get_by_text("Reviewer: Browser Reviewer, typed name (unverified)").first.is_visible()
    assert page.dialogs == []  # no script ran
    df = server["store"].reviews(server["run_id"])
    assert (df["comment"] == comment).sum() == 1
