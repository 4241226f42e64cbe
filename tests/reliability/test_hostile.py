"""Hostile text and access: stored verbatim, shown as text, no raw HTML, files only from configured
folders, a local-only server by default."""

import re
from pathlib import Path

from flagcore.store.store import Store

ROOT = Path(__file__).resolve().parents[2]
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


def test_hostile_text_is_stored_verbatim_and_reports_escape_it(quick_demo, tmp_path):
    import shutil

    from flagcore.dashboard.report import render_report

    copy = tmp_path / "s.duckdb"
    shutil.copy(quick_demo["store"].path, copy)
    store, rid = Store(copy), quick_demo["run_id"]
    earlier = store.reviews(rid)["comment"].tolist()  # other tests may have signed off already
    for i, text in enumerate(HOSTILE):
        store.add_review(rid, f"<b>reviewer {i}</b>", "needs-work", text)
    got = store.reviews(rid)
    assert got["comment"].tolist() == [*earlier, *HOSTILE]
    assert len(store.list_runs()) == len(Store(quick_demo["store"].path).list_runs())  # nothing dropped
    html = render_report(store, rid, "html")
    assert "<script>" not in html and "<img" not in html and "<b>reviewer" not in html
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in html
    md = render_report(store, rid, "md")
    assert "<script>" not in md and "<img" not in md


def test_no_page_renders_raw_html():
    sources = [ROOT / "app.py", ROOT / "flagcore" / "dashboard" / "state.py", *sorted((ROOT / "pages").glob("*.py"))]
    for path in sources:
        text = path.read_text()
        assert "unsafe_allow_html" not in text, path
        assert "st.html(" not in text and "components.html" not in text, path
    # user text (reviewer, comment) reaches the page only through st.text
    reviews = (ROOT / "pages" / "reviews.py").read_text()
    assert re.search(r"st\.text\(r\[\"comment\"\]\)", reviews)
    assert re.search(r"st\.text\(f\"Reviewer: \{r\['reviewer'\]\}\"\)", reviews)


def test_the_server_binds_to_localhost_by_default():
    readme = (ROOT / "README.md").read_text()
    run_line = next(ln for ln in readme.splitlines() if "streamlit run app.py" in ln)
    assert "--server.address 127.0.0.1" in run_line
    config = ROOT / ".streamlit" / "config.toml"
    assert 'address = "127.0.0.1"' in config.read_text()
    assert "## Reliability" in readme and "st.login" in readme
