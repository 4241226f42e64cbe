"""The dashboard started by its launcher (``python -m flagcore.dashboard.serve``: the imports every page
needs done before the server answers), in Debian's chromium: the first visit of a page after the
server starts shows the run, and the server's log holds no traceback. Skips without chromium or
playwright unless FLAGCORE_REQUIRE_BROWSER=1, like the other browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import copy_demo_store, require_browser

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def launched(quick_demo, tmp_path_factory):
    require_browser()
    folder = tmp_path_factory.mktemp("launcher")
    demo = copy_demo_store(quick_demo, folder / "store")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = folder / "server.log"
    env = {**os.environ, "FLAGCORE_STORE": str(demo["store"].path)}
    args = ["--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1"]
    args += ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flagcore.dashboard.serve", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"the launcher's server did not come up: {log.read_text()[-2000:]}")
        yield {"url": url, "run_id": demo["run_id"], "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text and "No runtime found" not in text, text[-3000:]


def test_the_launchers_server_shows_a_page_on_its_first_visit(launched, browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        page.goto(f"{launched['url']}/logits?run={launched['run_id']}")
        page.wait_for_selector("[data-testid='stMain'] h1", timeout=90_000)
        page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=90_000)
        page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=90_000)
        assert page.locator("[data-testid='stMain'] h1").first.inner_text().startswith("Logit analysis")
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.locator("[data-testid='stMetricValue']").count() >= 4  # the action counts
    finally:
        ctx.close()
