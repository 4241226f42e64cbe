"""A review meeting on one server (issue 18, item 5): N browser sessions (Playwright contexts in one
headless Chromium) against one real server open the same run, switch pages and move the HOLD-threshold
slider for a while; page settle and slider round trip (p50, p95) in the browsers, the server's own
script runs, its memory, and every error.

Run through ``benchmarks/browser_timing.py --only meeting`` or ``benchmarks/run.py`` (section "meeting").
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from browser_timing import (
    ALL_DRAWN,
    CHARTED,
    CHROMIUM,
    CHROMIUM_ARGS,
    METRICS,
    NO_SKELETON,
    PAGES,
    SETTLED,
    SLIDER_AT,
    TITLE,
    Server,
    summary,
)


async def _direction(slider, start: float) -> str:
    """A key that moves the slider one page step between its starting value and the step below it
    (or above it, at its bottom): near the run's own setting every step changes the page's numbers,
    where far off the model's confidences a step may change nothing to wait for."""
    now, lo, _ = await slider.evaluate(SLIDER_AT)
    if start <= lo:
        return "PageDown" if now > start else "PageUp"
    return "PageDown" if now >= start else "PageUp"


async def _session(
    browser, url: str, run_id: int, until: float, seed: int, out: dict, join_after: float = 0.0
) -> None:
    rng = random.Random(seed)
    start: float | None = None  # the slider's value on the session's first visit of the page
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
                    await pg.wait_for_function(ALL_DRAWN, timeout=120_000)
                out["settle"].append(time.perf_counter() - t)
                out["errors"] += await pg.locator("[data-testid='stException']").count()
                if path == "solutions":
                    slider = pg.get_by_role("slider").first
                    await slider.focus()
                    start = start if start is not None else (await slider.evaluate(SLIDER_AT))[0]
                    for _ in range(3):
                        before = await pg.evaluate(METRICS)
                        t = time.perf_counter()
                        await slider.press(await _direction(slider, start))
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


def run_sampled(srv: Server, meeting: Callable[[], Coroutine[Any, Any, None]]) -> dict:
    """Run ``meeting()`` to its end against ``srv`` with the server's memory sampled every second, then
    stop the server: its memory at the start, its largest and its last (MB), and the tracebacks in
    its log."""
    rss: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss.append(srv.rss())
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
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
        "server_tracebacks": tracebacks,
        "rss_start_mb": rss_start / 2**20,
        "rss_max_mb": max(rss, default=0) / 2**20,
        "rss_end_mb": (rss[-1] if rss else 0) / 2**20,
    }


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

    server = run_sampled(srv, meeting)
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
        **server,
    }
