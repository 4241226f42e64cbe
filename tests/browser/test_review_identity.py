"""Team review in Debian's chromium, end to end, against a real ``streamlit run`` server whose team
config trusts the ``X-Forwarded-Email`` header (as behind oauth2-proxy) and asks for two approvals:
two reviewers sign through the header and the run turns approved; a request without the header
cannot sign; and the comparison page of two runs (one server for the module: a server start costs
seconds).

The OIDC login path cannot run here (it needs an identity provider): tests/test_app.py covers it
with AppTest's seeded ``st.user``.
"""

import pytest
from conftest import copy_demo_store, require_browser, streamlit_server
from test_dashboard import _CUT_OFF, _metric, _no_exception, _settle

HEADER = "X-Forwarded-Email"
CONFIG = f'[review]\napprovals_required = 2\n[identity]\ntrusted_header = "{HEADER}"\n'


@pytest.fixture(scope="module")
def team_server(quick_demo, tmp_path_factory):
    """A server on its own copy of the demo store, holding a second run of the demo's checkpoint with
    another HOLD threshold (seconds: its inference is cached in the store), under the team config."""
    from flagcore.pipeline.evaluate import evaluate
    from flagcore.pipeline.settings import EvaluateSettings

    require_browser()
    folder = tmp_path_factory.mktemp("team_server")
    demo = copy_demo_store(quick_demo, folder / "store")
    root = demo["root"]
    second = evaluate(
        root / "models" / "ce",
        root / "test.parquet",
        store=demo["store"],
        train_data=root / "train.parquet",
        name="second",
        settings=EvaluateSettings(hold_threshold=0.9, author="Ann Author"),
    )["run_id"]
    cfg = folder / "team.toml"
    cfg.write_text(CONFIG)
    log = folder / "streamlit.log"
    with streamlit_server(demo["store"].path, log, env={"FLAGCORE_CONFIG": str(cfg)}) as url:
        yield {
            "url": url,
            "store": demo["store"],
            "first": demo["run_id"],
            "second": int(second),
            "config": cfg,
        }


def _page(browser, headers: dict | None = None):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, extra_http_headers=headers or {})
    return ctx, ctx.new_page()


def _sign(browser, url: str, email: str, verdict: str) -> str:
    """Open the Reviews page as ``email`` (the proxy's header), sign ``verdict``; the page's text."""
    ctx, page = _page(browser, {HEADER: email})
    try:
        page.goto(url)
        _settle(page)
        main = page.locator("[data-testid='stMain']")
        assert main.get_by_text(f"Signing as {email} (trusted proxy header)").is_visible()
        assert page.get_by_role("textbox", name="Reviewer").count() == 0  # no name field: the header signs
        page.get_by_text(verdict, exact=True).click()
        page.get_by_role("button", name="Sign off").click()
        # the page reruns after a sign-off (so that the status counts it) and then says "recorded";
        # on a busy machine the rerun can start after settle's pause: wait for the words
        page.get_by_text("recorded").first.wait_for(state="visible", timeout=60_000)
        _settle(page)
        _no_exception(page)
        return _metric(page, "Review status")
    finally:
        ctx.close()


def test_two_reviewers_sign_through_the_header_and_the_run_turns_approved(team_server, browser):
    from flagcore.analysis.review_policy import load_review_policy

    store, rid = team_server["store"], team_server["second"]
    url = f"{team_server['url']}/reviews?run={rid}"
    assert _sign(browser, url, "ana@example.com", "approve") == "awaiting review"
    assert _sign(browser, url, "bo@example.com", "approve") == "approved"
    reviews = store.reviews(rid)
    assert list(zip(reviews["reviewer"], reviews["identity_source"], strict=True)) == [
        ("ana@example.com", "header"),
        ("bo@example.com", "header"),
    ]
    status = store.run_status(rid, load_review_policy(team_server["config"]))
    assert status.status == "approved" and status.approvers == ["ana@example.com", "bo@example.com"]


def test_a_request_without_the_header_cannot_sign(team_server, browser):
    ctx, page = _page(browser)  # reached the server without the proxy
    try:
        page.goto(f"{team_server['url']}/reviews?run={team_server['first']}")
        _settle(page)
        _no_exception(page)
        assert page.get_by_text(f"This request has no {HEADER} header").is_visible()
        assert page.get_by_role("textbox", name="Reviewer").count() == 0
        assert page.get_by_role("button", name="Sign off").count() == 0
    finally:
        ctx.close()
    assert team_server["store"].reviews(team_server["first"]).empty


def test_the_comparison_page_shows_both_runs(team_server, browser):
    first, second = team_server["first"], team_server["second"]
    ctx, page = _page(browser, {HEADER: "ana@example.com"})
    try:
        page.goto(f"{team_server['url']}/compare?run={first}&vs={second}")
        _settle(page)
        _no_exception(page)
        assert page.locator("[data-testid='stMain'] h1").first.inner_text().startswith("Compare runs")
        assert _metric(page, f"Run #{first}") == "superseded"
        page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)
        legend = page.locator("[data-testid='stPlotlyChart'] .legendtext").all_text_contents()
        assert f"#{first} Baseline (plain CE)" in legend and f"#{second} Baseline (plain CE)" in legend
        assert page.evaluate(_CUT_OFF) == []
        assert f"vs={second}" in page.url and f"run={first}" in page.url
    finally:
        ctx.close()
