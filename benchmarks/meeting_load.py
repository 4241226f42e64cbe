"""The review meeting's load on the server alone: N sessions speaking Streamlit's own websocket protocol
(the messages a browser's frontend sends: a page's run, a slider step's fragment run) against one real
server, with no browser drawing on the server's cores.

The browser meeting (``meeting.py``) runs its 20 Chromiums on the server's own 2 cores, where a real
meeting's browsers run on their own machines; here each session is a websocket client that sends what
a frontend sends and times, from the message sent, the server's answer: a page's script run to its end,
a slider step to the first of its new metrics and to its end. What a browser adds to a slider step (its
drawing, on its own machine) is the single-browser figure of the page benchmark.

Run through ``benchmarks/browser_timing.py --only meeting_load`` or ``benchmarks/run.py`` (section
"meeting").
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from browser_timing import PAGES, Server, summary
from meeting import run_sampled

SLIDER_LABEL = "HOLD threshold"  # the Solution comparison page's live slider
PAGE_FRACTION = 0.1  # a PageDown/PageUp moves a slider by a tenth of its range
# a person's pauses: reading a page before the next click, and between two steps of the slider (keys
# pressed one after another while watching the numbers); without them every session would send its next
# message the instant an answer came, a stress test rather than a meeting
READ_S = (3.0, 8.0)
STEP_S = (0.3, 1.0)


class Session:
    """One websocket session: what Streamlit's frontend sends, and the server's answers timed."""

    def __init__(self, ws, query: str):
        self.ws, self.query = ws, query
        self.pages: dict[str, str] = {}  # url path -> page script hash (the navigation message)
        # widget id, fragment id, value, page step (from the slider's own range)
        self.slider: tuple[str, str, float, float] | None = None
        self.exceptions = 0

    async def run(self, page_hash: str = "", widget=None, fragment: str = "") -> tuple[float, float | None]:
        """Send a rerun (a page's, or a fragment's with one widget's new value); seconds from sending it
        to the first metric that came back (None: no metric) and to the run's end."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query
        state.page_script_hash = page_hash
        state.fragment_id = fragment
        if widget is not None:
            w = state.widget_states.widgets.add()
            w.id = widget[0]
            w.double_array_value.data.extend([widget[1]])
        t = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        first_metric = None
        while True:
            done = self._read(await self.ws.recv())
            if done == "metric" and first_metric is None:
                first_metric = time.perf_counter() - t
            if done == "finished":
                return time.perf_counter() - t, first_metric

    def _read(self, data: bytes) -> str | None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        fm = ForwardMsg()
        fm.ParseFromString(data)
        kind = fm.WhichOneof("type")
        if kind == "navigation":
            self.pages = {p.url_pathname: p.page_script_hash for p in fm.navigation.app_pages}
        elif kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
            el = fm.delta.new_element
            what = el.WhichOneof("type")
            if what == "slider" and el.slider.label == SLIDER_LABEL:
                now = el.slider.value if el.slider.set_value else el.slider.default
                page = (el.slider.max - el.slider.min) * PAGE_FRACTION
                self.slider = (el.slider.id, fm.delta.fragment_id, float(now[0]), page)
            elif what == "exception":
                self.exceptions += 1
            elif what == "metric":
                return "metric"
        elif kind == "script_finished":
            st = ForwardMsg.ScriptFinishedStatus
            if fm.script_finished in (st.FINISHED_SUCCESSFULLY, st.FINISHED_FRAGMENT_RUN_SUCCESSFULLY):
                return "finished"
            if fm.script_finished == st.FINISHED_WITH_COMPILE_ERROR:
                raise RuntimeError("the script failed to compile")
        return None


async def _session(url: str, run_id: int, until: float, seed: int, out: dict, join_after: float) -> None:
    import websockets

    rng = random.Random(seed)
    await asyncio.sleep(join_after)
    ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
    async with websockets.connect(ws_url, subprotocols=["streamlit"], max_size=None) as ws:  # type: ignore[list-item]
        s = Session(ws, f"run={run_id}")
        took, _ = await s.run()  # the first visit: the default page, and the navigation message
        out["page"].append(took)
        out["paths"] = sorted(s.pages)
        start: float | None = None
        while time.time() < until:
            path = rng.choice(list(PAGES.values()))
            try:
                took, _ = await s.run(s.pages.get(path, ""))
                out["page"].append(took)
                await asyncio.sleep(rng.uniform(*READ_S))
                if path == "solutions" and s.slider is not None:
                    wid, frag, value, page = s.slider
                    start = value if start is None else start
                    for _ in range(3):  # between the setting and a page step below it, as in meeting.py
                        value = round(start - page if value >= start else start, 6)
                        took, shown = await s.run(s.pages[path], (wid, value), frag)
                        out["step_end"].append(took)
                        if shown is not None:
                            out["step_shown"].append(shown)
                        await asyncio.sleep(rng.uniform(*STEP_S))
            except Exception as e:  # noqa: BLE001 - a failure is counted, the meeting goes on
                out["failures"].append(f"{path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        out["exceptions"] += s.exceptions


def meeting_load(
    store_path: Path, run_id: int, sessions: int = 20, seconds: float = 120, join_seconds: float = 20
) -> dict:
    """``sessions`` websocket sessions against one server for ``seconds``, joining over the first
    ``join_seconds``, each switching pages at random (reading each for ``READ_S`` seconds) and, on
    Solution comparison, stepping the slider three times (``STEP_S`` apart): the server's answer times
    (p50, p95), its memory (sampled every second), errors."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="flagcore-meeting-load-"))
    srv = Server(store_path, tmp / "server.log")
    out: dict = {"page": [], "step_shown": [], "step_end": [], "failures": [], "exceptions": 0}

    async def meeting() -> None:
        until = time.time() + seconds
        step = join_seconds / sessions
        await asyncio.gather(
            *(_session(srv.url, run_id, until, i, out, join_after=i * step) for i in range(sessions))
        )

    server = run_sampled(srv, meeting)
    return {
        "sessions": sessions,
        "seconds": seconds,
        "join_seconds": join_seconds,
        "read_seconds": list(READ_S),
        "step_seconds": list(STEP_S),
        "page": summary(out["page"]),
        "step_shown": summary(out["step_shown"]),
        "step_end": summary(out["step_end"]),
        "exceptions_on_pages": out["exceptions"],
        "failures": out["failures"][:20],
        "n_failures": len(out["failures"]),
        **server,
    }
