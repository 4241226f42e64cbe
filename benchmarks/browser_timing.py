"""What users wait for in a real browser (issue 18, item 2), in headless chromium driven by Playwright
against a real server:

- every page's first visit after the server starts (a fresh server per visit) and later visits (a
  click in the sidebar, and a full page load);
- a HOLD-threshold slider step, from the key press to the changed metrics on the page, timed in the
  page and as the harness sees it;
- the floor: a bare Streamlit app (``floor_app.py``) timed the same way.

The review meeting (item 5) is in ``meeting.py`` (browsers) and ``meeting_load.py`` (the server alone).
Run on its own (``python benchmarks/browser_timing.py --store PATH --run ID``) or from
``benchmarks/run.py`` (sections "pages" and "meeting").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FLAGCORE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]

# page title -> URL path; the charted pages are settled only once their plotly charts are drawn
PAGES = {
    "status": "",
    "model health": "model_health",
    "logit analysis": "logits",
    "solution comparison": "solutions",
    "HIFA criteria": "hifa",
    "root cause": "root_cause",
    "reviews": "reviews",
}
# how the server starts: as the README starts the dashboard (the launcher that imports what every page
# needs before the server answers), or a plain ``streamlit run`` (``--launcher streamlit``)
LAUNCHERS = {"serve": ("-m", "flagcore.dashboard.serve"), "streamlit": ("-m", "streamlit", "run")}
LAUNCHER = os.environ.get("FLAGCORE_LAUNCHER", "serve")
PROFILED = str(Path(__file__).with_name("page_profile.py"))  # a server with its script runs profiled
CHARTED = {"model_health", "logits", "solutions", "hifa"}
SETTLED = "[data-testid='stApp'][data-test-script-state='notRunning']"
# a page's title: drawn by its script, so once it is there "notRunning" means that script has ended
# (before it, "notRunning" may be the state before the first run began)
TITLE = "[data-testid='stMain'] h1"
NO_SKELETON = "() => document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0"
# every plotly chart of the page drawn, not only the first (plotly.js adds a chart's .main-svg once drawn)
ALL_DRAWN = (
    "() => { const c = [...document.querySelectorAll(\"[data-testid='stPlotlyChart']\")]; "
    "return c.length > 0 && c.every(e => e.querySelector('.main-svg')); }"
)
# the floor: a bare Streamlit app (a text page, a page with one plotly chart, a slider page) timed the
# same way on the same machine, what no page of any Streamlit app can beat here
FLOOR_APP = Path(__file__).with_name("floor_app.py")
FLOOR_PAGES = {"bare page (title, 4 metrics)": "", "bare page with one plotly chart": "chart"}
# the live panel's figures: any change in them is the slider's answer
METRICS = (
    "() => [...document.querySelectorAll(\"[data-testid='stMetricValue']\")].map(e => e.innerText).join('|')"
)


def summary(values) -> dict:
    """Median, spread and 95th percentile of a list of seconds."""
    a = np.asarray(list(values), dtype=float)
    if a.size == 0:
        return {
            "median": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
            "p95": float("nan"),
            "reps": 0,
        }
    return {
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
        "p95": float(np.percentile(a, 95)),
        "reps": int(a.size),
    }


# ----------------------------------------------------------------------------- the server


class Server:
    """``streamlit run app.py`` over a store on a free local port; ``rss()`` is its resident memory
    (the process and its children, in bytes)."""

    def __init__(
        self,
        store_path: Path,
        log: Path | None = None,
        profile: Path | None = None,
        timed: Path | None = None,
        script: Path | None = None,
    ):
        """``script``: another app than the dashboard (the floor), run by a plain ``streamlit run``."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "FLAGCORE_STORE": str(store_path)}
        # profiled: this file runs the server (as LAUNCHER says) with every script run profiled
        start = (
            [sys.executable, "-X", "importtime", PROFILED, "--profiled-server", str(profile), LAUNCHER]
            if profile
            # timed: every script run's seconds into timed/runs.txt, nothing profiled
            else [sys.executable, PROFILED, "--timed-server", str(timed), LAUNCHER]
            if timed
            else [sys.executable, *LAUNCHERS["streamlit" if script else LAUNCHER]]
        )
        self.log = log
        self.started = time.perf_counter()
        out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(
            [
                *start,
                str(script or ROOT / "app.py"),
                "--server.headless",
                "true",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"
        self._wait()

    def _wait(self) -> None:
        import urllib.request

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    self.ready_s = time.perf_counter() - self.started  # the server's start, to healthy
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("streamlit did not come up within 2 minutes")

    def rss(self) -> int:
        total = 0
        pids = [self.proc.pid]
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(k) for k in kids]
        except OSError:
            pass
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def tracebacks(self) -> int:
        return self.log.read_text().count("Traceback") if self.log and self.log.exists() else 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self._out is not subprocess.DEVNULL:
            self._out.close()


# ----------------------------------------------------------------------------- one session (sync)


# recorded in the page, not through Playwright's websocket events (each frame sent to this process
# would load the two cores it measures): when the page's websocket opened and its last message came,
# in ms from the navigation's start
SOCKET_TIMES = """(() => {
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("open", () => { window.__socketOpen = performance.now(); });
      this.addEventListener("message", () => { window.__serverDone = performance.now(); });
    }
  };
})()"""


def _settle(pg, charted: bool) -> None:
    """Wait until the page's script run has ended and everything it drew is on screen."""
    pg.wait_for_selector(SETTLED, timeout=120_000)
    pg.wait_for_function(NO_SKELETON, timeout=120_000)
    if charted:
        pg.wait_for_function(ALL_DRAWN, timeout=120_000)


def _visit(
    pg, url: str, path: str, run_id: int | None, parts: dict | None = None, charted: bool | None = None
) -> float:
    """Seconds from navigation to the page settled (every chart drawn); with ``parts`` (a fresh page),
    also when the browser opened its websocket (its frontend loaded and started) and when the
    server's last message of the visit arrived (the script run sent), seconds from navigation."""
    t = time.perf_counter()
    if parts is not None:
        pg.add_init_script(SOCKET_TIMES)
    pg.goto(f"{url}/{path}" + ("" if run_id is None else f"?run={run_id}"))
    pg.wait_for_selector(TITLE, timeout=120_000)
    _settle(pg, path in CHARTED if charted is None else charted)
    settled = time.perf_counter() - t
    if parts is not None:
        ms = pg.evaluate("[window.__socketOpen, window.__serverDone]")
        parts["socket_open"], parts["server_done"] = ms[0] / 1e3, ms[1] / 1e3
    return settled


def _click(pg, path: str, title: str, charted: bool) -> float:
    """Seconds from a click on the page's link in the sidebar to the page settled: a later visit as a
    user makes one, the frontend already loaded (``title``: the page's heading, to tell it has come)."""
    link = pg.locator(f"[data-testid='stSidebarNav'] a[href$='/{path}']").first
    t = time.perf_counter()
    link.click()
    pg.wait_for_function(
        f"() => {{ const e = document.querySelector({json.dumps(TITLE)}); "
        f"return e !== null && e.innerText === {json.dumps(title)}; }}",
        timeout=120_000,
    )
    _settle(pg, charted)
    return time.perf_counter() - t


def _cold_and_warm(
    start: Callable[[], Server],
    pages: dict[str, str],
    charted: set[str],
    run_id: int | None,
    reps: int,
    starts: list[float],
) -> dict:
    """Each of ``pages`` (name -> path) on its first visit after a server start (``start()``: a fresh
    server each time) and on later visits to one warm server (after one visit of every page): a click
    on its sidebar link from the page before it, and a full page load; ``starts`` gets each server's
    seconds from its start to its health check's "ok"."""
    from playwright.sync_api import sync_playwright

    names = list(pages)
    times: dict[str, dict[str, list[float]]] = {
        n: {"cold": [], "warm_click": [], "warm": [], "cold_socket_open": [], "cold_server_done": []}
        for n in names
    }
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(reps):
            for name in names:
                srv = start()
                starts.append(srv.ready_s)
                try:
                    pg = b.new_page(viewport={"width": 1400, "height": 1000})
                    parts: dict[str, float] = {}
                    times[name]["cold"].append(
                        _visit(pg, srv.url, pages[name], run_id, parts, pages[name] in charted)
                    )
                    times[name]["cold_socket_open"].append(parts["socket_open"])
                    times[name]["cold_server_done"].append(parts["server_done"])
                    pg.close()
                finally:
                    srv.stop()
        srv = start()
        try:
            pg = b.new_page(viewport={"width": 1400, "height": 1000})
            heading = {}
            for name in names:
                _visit(pg, srv.url, pages[name], run_id, charted=pages[name] in charted)
                heading[name] = pg.inner_text(TITLE)
            for _ in range(reps):  # through the sidebar, each page from the one before it
                for name in names:
                    path = pages[name]
                    times[name]["warm_click"].append(_click(pg, path, heading[name], path in charted))
            for _ in range(reps):
                for name in names:
                    times[name]["warm"].append(
                        _visit(pg, srv.url, pages[name], run_id, charted=pages[name] in charted)
                    )
        finally:
            srv.stop()
        b.close()
    return {n: {k: summary(v) for k, v in t.items()} for n, t in times.items()}


def pages_cold_and_warm(
    store_path: Path, run_id: int, reps: int = 3, server_starts: list[float] | None = None
) -> dict:
    """Every dashboard page cold and warm (``_cold_and_warm``) on the server as ``LAUNCHER`` starts it;
    ``server_starts`` gets each server's seconds from its start to its health check's "ok"."""
    starts: list[float] = []
    out = _cold_and_warm(lambda: Server(store_path), PAGES, CHARTED, run_id, reps, starts)
    if server_starts is not None:
        server_starts += starts
    return out


def floor_pages(reps: int = 3) -> dict:
    """The floor's pages (``FLOOR_APP``, a bare Streamlit app) cold and warm, timed as the dashboard's."""
    starts: list[float] = []
    return _cold_and_warm(
        lambda: Server(Path(os.devnull), script=FLOOR_APP), FLOOR_PAGES, {"chart"}, None, reps, starts
    )


# a slider step timed in the page, on the page's own clock: from the key's keydown to the first change of
# the metrics (a MutationObserver) and to the animation frame that draws them; without Playwright's
# polling and its messages to this process, which the harness's own figure includes
STEP_TIMES = """(() => {
  const metrics = () => [...document.querySelectorAll("[data-testid='stMetricValue']")]
    .map(e => e.innerText).join('|');
  window.__step = null;
  document.addEventListener("keydown", () => {
    window.__step = {key: performance.now(), before: metrics(), shown: null, drawn: null};
  }, true);
  new MutationObserver(() => {
    const s = window.__step;
    if (s === null || s.shown !== null || metrics() === s.before) return;
    s.shown = performance.now();
    requestAnimationFrame(() => { s.drawn = performance.now(); });
  }).observe(document, {subtree: true, childList: true, characterData: true});
})()"""


# where a slider is: Streamlit's slider is an <input type="range"> (its aria-value* attributes are unset)
SLIDER_AT = "e => [e.valueAsNumber, Number(e.min), Number(e.max)]"


def _slider_steps(url: str, path: str, run_id: int | None, charted: bool, steps: int) -> dict:
    """``steps`` steps of the page's first slider (PageUp/PageDown, two one way then two back, turned at
    its ends): to the first change of the page's metrics as the harness sees it (``shown``) and in
    the page (``page_shown``, ``page_drawn``), and to the script run's end (``settled``)."""
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"shown": [], "page_shown": [], "page_drawn": [], "settled": []}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = b.new_page(viewport={"width": 1400, "height": 1000})
        pg.add_init_script(STEP_TIMES)
        _visit(pg, url, path, run_id, charted=charted)
        slider = pg.get_by_role("slider").first
        slider.focus()
        for i in range(steps):
            now, lo, hi = slider.evaluate(SLIDER_AT)
            key = "PageDown" if (i // 2) % 2 == 0 else "PageUp"  # within two steps of the setting
            key = "PageUp" if now <= lo else "PageDown" if now >= hi else key
            before = pg.evaluate(METRICS)
            t = time.perf_counter()
            slider.press(key)
            pg.wait_for_function(f"b => ({METRICS})() !== b", arg=before, timeout=60_000, polling="raf")
            times["shown"].append(time.perf_counter() - t)
            pg.wait_for_function(
                "() => window.__step !== null && window.__step.drawn !== null", timeout=60_000
            )
            step = pg.evaluate("window.__step")
            times["page_shown"].append((step["shown"] - step["key"]) / 1e3)
            times["page_drawn"].append((step["drawn"] - step["key"]) / 1e3)
            pg.wait_for_timeout(50)
            pg.wait_for_selector(SETTLED, timeout=60_000)
            times["settled"].append(time.perf_counter() - t)
            pg.wait_for_timeout(250)  # the step's rerun ended: the next key is a new step, not a drag
        b.close()
    return {k: summary(v) for k, v in times.items()}


def slider_steps(store_path: Path, run_id: int, steps: int = 40, profile: Path | None = None) -> dict:
    """HOLD-threshold slider steps on the Solution comparison page (``_slider_steps``); with
    ``profile``, each script run of the server profiled into that folder."""
    srv = Server(store_path, profile=profile)
    try:
        return _slider_steps(srv.url, "solutions", run_id, True, steps)
    finally:
        srv.stop()


def floor_slider(steps: int = 40) -> dict:
    """Slider steps on the floor's slider page (a fragment with a slider and three metrics)."""
    srv = Server(Path(os.devnull), script=FLOOR_APP)
    try:
        return _slider_steps(srv.url, "slider", None, False, steps)
    finally:
        srv.stop()


def main() -> None:
    global LAUNCHER
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="a store holding the run (the full demo's)")
    ap.add_argument("--run", type=int, required=True)
    ap.add_argument(
        "--only",
        default="pages,slider,meeting",
        help="any of pages,slider,floor,meeting,meeting_load,profile",
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument("--profile-dir", default="/tmp/flagcore-profile", help="where --only profile writes")
    ap.add_argument("--launcher", choices=list(LAUNCHERS), default=LAUNCHER, help="how the server starts")
    args = ap.parse_args()
    LAUNCHER = args.launcher
    only = set(args.only.split(","))
    res: dict = {}
    store = Path(args.store)
    if "pages" in only:
        starts: list[float] = []
        res["pages"] = pages_cold_and_warm(store, args.run, args.reps, starts)
        res["server_start"] = {"launcher": LAUNCHER, **summary(starts)}
    if "slider" in only:
        res["slider"] = slider_steps(store, args.run)
    if "floor" in only:
        res["floor"] = {"pages": floor_pages(args.reps), "slider": floor_slider()}
    if "profile" in only:
        from page_profile import profile_first_visits

        res["profile"] = profile_first_visits(store, args.run, Path(args.profile_dir))
    if "meeting" in only:
        from meeting import review_meeting

        res["meeting"] = review_meeting(store, args.run, args.sessions, args.seconds)
    if "meeting_load" in only:
        from meeting_load import meeting_load

        res["meeting_load"] = meeting_load(store, args.run, args.sessions, args.seconds)
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
