"""What users wait for in a real browser (issue 18, items 2 and 5), in headless chromium driven by
Playwright against a real ``streamlit run``:

- every page's first visit after the server starts (a fresh server per visit) and later visits;
- a HOLD-threshold slider step, from the key press to the changed metrics on the page;
- a review meeting: N browser sessions on one server open the same run, switch pages and move the
  slider for a while; page settle and slider round trip (p50, p95), the server's memory, errors.

Run on its own (``python benchmarks/browser_timing.py --store PATH --run ID``) or from
``benchmarks/run.py`` (sections "pages" and "meeting").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
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
DRAWN = "[data-testid='stPlotlyChart'] .main-svg"
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
    ):
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
            else [sys.executable, *LAUNCHERS[LAUNCHER]]
        )
        self.log = log
        self.started = time.perf_counter()
        out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(
            [
                *start,
                str(ROOT / "app.py"),
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


def _visit(pg, url: str, path: str, run_id: int, parts: dict | None = None) -> float:
    """Seconds from navigation to the page settled (charts drawn); with ``parts`` (a fresh page),
    also when the browser opened its websocket (its frontend loaded and started) and when the
    server's last message of the visit arrived (the script run sent), seconds from navigation."""
    t = time.perf_counter()
    if parts is not None:
        pg.add_init_script(SOCKET_TIMES)
    pg.goto(f"{url}/{path}?run={run_id}")
    pg.wait_for_selector(TITLE, timeout=120_000)
    pg.wait_for_selector(SETTLED, timeout=120_000)
    pg.wait_for_function(NO_SKELETON, timeout=120_000)
    if path in CHARTED:
        pg.wait_for_selector(DRAWN, timeout=120_000)
    settled = time.perf_counter() - t
    if parts is not None:
        ms = pg.evaluate("[window.__socketOpen, window.__serverDone]")
        parts["socket_open"], parts["server_done"] = ms[0] / 1e3, ms[1] / 1e3
    return settled


def pages_cold_and_warm(
    store_path: Path, run_id: int, reps: int = 3, server_starts: list[float] | None = None
) -> dict:
    """Each page on its first visit after a server start (a fresh server each time, started as
    ``LAUNCHER`` says) and on later visits to a warm server (after one visit of every page);
    ``server_starts`` gets each server's seconds from its start to its health check's "ok"."""
    from playwright.sync_api import sync_playwright

    cold: dict[str, list[float]] = {name: [] for name in PAGES}
    warm: dict[str, list[float]] = {name: [] for name in PAGES}
    # a cold visit's parts: the frontend loaded (websocket open), the server's last message received
    socket_open: dict[str, list[float]] = {name: [] for name in PAGES}
    server_done: dict[str, list[float]] = {name: [] for name in PAGES}
    starts: list[float] = []  # a server's start to its health check's "ok" (the launcher's imports)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(reps):
            for name, path in PAGES.items():
                srv = Server(store_path)
                starts.append(srv.ready_s)
                try:
                    pg = b.new_page(viewport={"width": 1400, "height": 1000})
                    parts: dict[str, float] = {}
                    cold[name].append(_visit(pg, srv.url, path, run_id, parts))
                    socket_open[name].append(parts["socket_open"])
                    server_done[name].append(parts["server_done"])
                    pg.close()
                finally:
                    srv.stop()
        srv = Server(store_path)
        try:
            pg = b.new_page(viewport={"width": 1400, "height": 1000})
            for path in PAGES.values():
                _visit(pg, srv.url, path, run_id)
            for _ in range(reps):
                for name, path in PAGES.items():
                    warm[name].append(_visit(pg, srv.url, path, run_id))
        finally:
            srv.stop()
        b.close()
    if server_starts is not None:
        server_starts += starts
    return {
        name: {
            "cold": summary(cold[name]),
            "warm": summary(warm[name]),
            "cold_socket_open": summary(socket_open[name]),
            "cold_server_done": summary(server_done[name]),
        }
        for name in PAGES
    }


def slider_steps(store_path: Path, run_id: int, steps: int = 12, profile: Path | None = None) -> dict:
    """HOLD-threshold slider steps on the Solution comparison page: from the key press to the first
    change of the page's metrics, and to the script's end (the page settled)."""
    from playwright.sync_api import sync_playwright

    shown, settled = [], []
    srv = Server(store_path, profile=profile)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pg = b.new_page(viewport={"width": 1400, "height": 1000})
            _visit(pg, srv.url, "solutions", run_id)
            slider = pg.get_by_role("slider").first
            slider.focus()
            for i in range(steps):
                before = pg.evaluate(METRICS)
                t = time.perf_counter()
                slider.press("PageDown" if i < steps // 2 else "PageUp")
                pg.wait_for_function(f"b => ({METRICS})() !== b", arg=before, timeout=60_000, polling="raf")
                shown.append(time.perf_counter() - t)
                pg.wait_for_timeout(50)
                pg.wait_for_selector(SETTLED, timeout=60_000)
                settled.append(time.perf_counter() - t)
            b.close()
    finally:
        srv.stop()
    return {"shown": summary(shown), "settled": summary(settled)}


# ----------------------------------------------------------------------------- the review meeting


async def _direction(slider, rng: random.Random) -> str:
    """A key that moves the slider: not up at its top, not down at its bottom."""
    now, lo, hi = [
        float(await slider.get_attribute(a) or 0) for a in ("aria-valuenow", "aria-valuemin", "aria-valuemax")
    ]
    if now >= hi:
        return "PageDown"
    if now <= lo:
        return "PageUp"
    return rng.choice(["PageDown", "PageUp"])


async def _session(
    browser, url: str, run_id: int, until: float, seed: int, out: dict, join_after: float = 0.0
) -> None:
    rng = random.Random(seed)
    await asyncio.sleep(join_after)
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = await ctx.new_page()
    try:
        while time.time() < until:
            path = rng.choice(list(PAGES.values()))
            t = time.perf_counter()
            try:
                await pg.goto(f"{url}/{path}?run={run_id}", timeout=120_000)
                await pg.wait_for_selector(TITLE, timeout=120_000)
                await pg.wait_for_selector(SETTLED, timeout=120_000)
                await pg.wait_for_function(NO_SKELETON, timeout=120_000)
                if path in CHARTED:
                    await pg.wait_for_selector(DRAWN, timeout=120_000)
                out["settle"].append(time.perf_counter() - t)
                out["errors"] += await pg.locator("[data-testid='stException']").count()
                if path == "solutions":
                    slider = pg.get_by_role("slider").first
                    await slider.focus()
                    for _ in range(3):
                        before = await pg.evaluate(METRICS)
                        t = time.perf_counter()
                        await slider.press(await _direction(slider, rng))
                        await pg.wait_for_function(
                            f"b => ({METRICS})() !== b", arg=before, timeout=60_000, polling="raf"
                        )
                        out["slider"].append(time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001 - a timeout or a crash is counted, the meeting goes on
                out["failures"].append(f"{path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    finally:
        await ctx.close()


def _niced_chromium(folder: Path, niceness: int = 19) -> str:
    """A launcher of ``CHROMIUM`` at a lower CPU priority: the meeting's 20 browsers share the
    server's 2 cores, where a real meeting's browsers run on their own machines; niced, they take
    what the server leaves, so the server is timed as it would serve them (the browsers' own drawing
    still counts in their round trips)."""
    path = folder / "chromium-niced"
    path.write_text(f'#!/bin/sh\nexec nice -n {niceness} "{CHROMIUM}" "$@"\n')
    path.chmod(0o755)
    return str(path)


def _server_runs(runs_txt: Path) -> dict:
    """The server's script runs from a timed server's runs.txt: seconds of the page runs and of the
    fragment runs (a slider step reruns its fragment only)."""
    runs: dict[str, list[float]] = {"page": [], "fragment": []}
    if runs_txt.exists():
        for line in runs_txt.read_text().splitlines():
            name, seconds = line.split("\t")
            runs["fragment" if name.endswith("-fragment.prof") else "page"].append(float(seconds))
    return {kind: summary(v) for kind, v in runs.items()}


def review_meeting(
    store_path: Path, run_id: int, sessions: int = 20, seconds: float = 120, join_seconds: float = 20
) -> dict:
    """``sessions`` browser contexts against one server for ``seconds``, joining one after another
    over the first ``join_seconds`` (people open a meeting's link within seconds, not at one
    instant): page settle and slider round trip (p50, p95) in the browsers, the server's own script
    runs (p50, p95: the page runs, the fragment runs of slider steps), the server's memory (sampled
    every second) and every error."""
    import tempfile

    from playwright.async_api import async_playwright

    tmp = Path(tempfile.mkdtemp(prefix="flagcore-meeting-"))
    log = tmp / "server.log"
    srv = Server(store_path, log, timed=tmp)
    rss: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss.append(srv.rss())
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    out: dict = {"settle": [], "slider": [], "errors": 0, "failures": []}

    async def meeting() -> None:
        async with async_playwright() as p:
            b = await p.chromium.launch(executable_path=_niced_chromium(tmp), args=CHROMIUM_ARGS)
            until = time.time() + seconds
            step = join_seconds / sessions
            await asyncio.gather(
                *(_session(b, srv.url, run_id, until, i, out, join_after=i * step) for i in range(sessions))
            )
            await b.close()

    try:
        rss_start = srv.rss()
        sampler.start()
        asyncio.run(meeting())
    finally:
        stop.set()
        sampler.join(timeout=5)
        tracebacks = srv.tracebacks()
        srv.stop()
    return {
        "sessions": sessions,
        "seconds": seconds,
        "join_seconds": join_seconds,
        "server_runs": _server_runs(tmp / "runs.txt"),
        "settle": summary(out["settle"]),
        "slider": summary(out["slider"]),
        "page_errors": out["errors"],
        "failures": out["failures"][:20],
        "n_failures": len(out["failures"]),
        "server_tracebacks": tracebacks,
        "rss_start_mb": rss_start / 2**20,
        "rss_max_mb": max(rss, default=0) / 2**20,
        "rss_end_mb": (rss[-1] if rss else 0) / 2**20,
    }


def main() -> None:
    global LAUNCHER
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="a store holding the run (the full demo's)")
    ap.add_argument("--run", type=int, required=True)
    ap.add_argument("--only", default="pages,slider,meeting", help="any of pages,slider,meeting,profile")
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
    if "profile" in only:
        from page_profile import profile_first_visits

        res["profile"] = profile_first_visits(store, args.run, Path(args.profile_dir))
    if "meeting" in only:
        res["meeting"] = review_meeting(store, args.run, args.sessions, args.seconds)
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
