"""Hostile text and access: stored verbatim, shown as text, no raw HTML, files only from configured
folders, a local-only server by default."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from flagcore.store.store import Store

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
# every page the router offers a store with runs (welcome is the empty store's only page)
PAGES = sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "app_pages").glob("*.py") if p.stem != "welcome"
)
HOSTILE = [
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=alert(1)>",
    "'); DROP TABLE reviews; --",
    "Robert'); DELETE FROM runs WHERE ('1'='1",
    "javascript:alert(1)",
    "**bold** [link](http://evil.example) $x^2$ :red[red]",
    "x" * 20_000,
    "zero\u200bwidth \u202eright-to-left\u202c emoji \U0001f4a5 nul-free",
]
# the last one signs last: the status page shows it as the latest review
REVIEWERS = [
    *(f"<b>reviewer {i}</b>" for i in range(len(HOSTILE) - 1)),
    "[**reviewer 7**](http://evil.example)",
]
# the elements that show a string as it is: never interpreted as Markdown or HTML
PLAIN = {"text", "code"}


@pytest.fixture
def hostile_store(quick_demo, tmp_path):
    """A copy of the quick demo's store whose run carries one review per hostile text."""
    copy = tmp_path / "s.duckdb"
    shutil.copy(quick_demo["store"].path, copy)
    store, rid = Store(copy), quick_demo["run_id"]
    earlier = store.reviews(rid)["comment"].tolist()
    for reviewer, text in zip(REVIEWERS, HOSTILE, strict=True):
        store.add_review(rid, reviewer, "needs-work", text)
    return {"store": store, "run_id": rid, "earlier": earlier}


@pytest.mark.slow  # needs the quick demo
def test_hostile_text_is_stored_verbatim_and_reports_escape_it(hostile_store, quick_demo):
    from flagcore.dashboard.report import render_report

    store, rid = hostile_store["store"], hostile_store["run_id"]
    got = store.reviews(rid)
    assert got["comment"].tolist() == [*hostile_store["earlier"], *HOSTILE]
    assert got["reviewer"].tolist()[-len(REVIEWERS) :] == REVIEWERS
    assert len(store.list_runs()) == len(Store(quick_demo["store"].path).list_runs())  # nothing dropped
    html = render_report(store, rid, "html")
    assert "<script>" not in html and "<img" not in html and "<b>reviewer" not in html
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in html
    assert "&lt;b&gt;reviewer 0&lt;/b&gt;" in html
    md = render_report(store, rid, "md")
    assert "<script>" not in md and "<img" not in md


def _elements(block) -> Iterator:
    """Every element under ``block`` (AppTest's tree), depth first."""
    for child in getattr(block, "children", {}).values():
        if hasattr(child, "children"):
            yield from _elements(child)
        else:
            yield child


def _strings(message) -> Iterator[str]:
    """Every string field of a protobuf message, nested messages and repeated fields included."""
    for _, value in message.ListFields():
        repeated = (
            not isinstance(value, str | bytes)
            and not hasattr(value, "ListFields")
            and hasattr(value, "__iter__")
        )
        for v in value if repeated else [value]:
            if isinstance(v, str):
                yield v
            elif hasattr(v, "ListFields"):
                yield from _strings(v)


def _check_page(at: AppTest, page: str) -> list[str]:
    """No raw HTML on ``page``; hostile text only in plain-text elements. Returns those elements' values."""
    assert not at.exception, (page, [e.value for e in at.exception])
    shown = []
    for el in [*_elements(at.main), *_elements(at.sidebar)]:
        assert el.type not in ("html", "iframe"), (page, el.type)  # st.html, components.html
        proto = getattr(el, "proto", None)
        if proto is None:
            continue
        assert not getattr(proto, "allow_html", False), (page, el.type)  # unsafe_allow_html=True
        for s in _strings(proto):
            leaked = [h[:40] for h in HOSTILE + REVIEWERS if h in s]
            if el.type in PLAIN:
                shown += [s] if leaked else []
            else:
                assert not leaked, (page, el.type, leaked)
    return shown


@pytest.mark.slow  # needs the quick demo
def test_no_page_renders_user_text_as_markdown_or_html(hostile_store, monkeypatch):
    monkeypatch.setenv("FLAGCORE_STORE", str(hostile_store["store"].path))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = str(hostile_store["run_id"])
    at.run()
    _check_page(at, "app.py")
    for page in PAGES:
        at.switch_page(page).run()
        shown = _check_page(at, page)
        if page == "app_pages/reviews.py":
            # every reviewer and comment reaches the page verbatim, through st.text
            for reviewer, text in zip(REVIEWERS, HOSTILE, strict=True):
                assert f"Reviewer: {reviewer}, typed name (unverified)" in shown and text in shown
            assert any(t.value == HOSTILE[0] for t in at.text)


def test_the_server_binds_to_localhost_by_default():
    readme = (ROOT / "README.md").read_text()
    # the set-up command that starts the dashboard (through the warming launcher)
    run_line = next(ln for ln in readme.splitlines() if "flagcore demo &&" in ln)
    assert "-m flagcore.dashboard.serve" in run_line and "--server.address 127.0.0.1" in run_line
    config = ROOT / ".streamlit" / "config.toml"
    assert 'address = "127.0.0.1"' in config.read_text()
    assert "## Reliability" in readme and "st.login" in readme
