"""BENCHMARKS.md's browser sections: pages cold and warm with the floor beside them, slider steps, and
the review meeting (figures from ``benchmarks/browser_timing.py`` and ``benchmarks/meeting.py``)."""

from __future__ import annotations

from timing import fmt_s

TARGET_PAGE_S = 1.5
TARGET_SLIDER_S = 0.2


def _mark(t: dict, target: float) -> str:
    return f"{fmt_s(t, 's')} {'met' if t['median'] <= target else 'NOT met'}"


def _at(t: dict, key: str) -> str:  # a cold visit's parts, not timed before these columns existed
    return f"{t[key]['median']:.2f} s" if key in t else ""


def _ms(t: dict) -> str:
    return f"median {t['median'] * 1e3:.0f} ms, p95 {t['p95'] * 1e3:.0f} ms (n={t['reps']})"


def md_pages(p: dict) -> list[str]:
    if "pages" not in p:  # figures kept from before cold visits were timed: warm visits only
        return [
            "## Pages in the browser",
            "",
            "Chromium (headless) against a warm `streamlit run` on the full demo (target under 3 s each):",
            "",
            "| page | time |",
            "|---|---|",
            *[f"| {k} | {fmt_s(t, 's')} |" for k, t in p.items()],
            "",
        ]
    clicked = all("warm_click" in t for t in p["pages"].values())
    head = (
        "| page | cold | later visit: sidebar click | later visit: full reload | cold: frontend started "
        "| cold: server's last message |"
        if clicked
        else "| page | cold | warm | cold: frontend started | cold: server's last message |"
    )

    def row(name: str, t: dict, target: bool) -> str:
        mark = (lambda x: _mark(x, TARGET_PAGE_S)) if target else (lambda x: fmt_s(x, "s"))
        warm = f"{mark(t['warm_click'])} | {mark(t['warm'])}" if clicked else mark(t["warm"])
        parts = f"{_at(t, 'cold_socket_open')} | {_at(t, 'cold_server_done')}"
        return f"| {name} | {mark(t['cold'])} | {warm} | {parts} |"

    later = (
        "Later visits, on one warm server: a click on the page's link in the sidebar, from the page before "
        "it (the frontend already loaded, as a user moves between pages), and a full page load."
        if clicked
        else "Warm: later visits (a full page load each time, which overstates a click in the sidebar)."
    )
    out = [
        "## Pages in the browser",
        "",
        "Chromium (headless) against the dashboard as the README starts it (`python -m "
        "flagcore.dashboard.serve`) on the full demo (`benchmarks/browser_timing.py`), from the navigation "
        "or click to the page settled: its script run ended and its charts drawn. Cold: the page's first "
        "visit after a server start, in a new browser context with nothing cached (a fresh server for each "
        f"visit). {later} Target: under {TARGET_PAGE_S} s, cold and later.",
        "",
        head,
        "|---|---|---|---|---|" + ("---|" if clicked else ""),
        *[row(k, t, True) for k, t in p["pages"].items()],
        "",
        "Where a cold visit's time goes: the last two columns are seconds from navigation to the browser "
        "opening the page's websocket (Streamlit's frontend downloaded, compiled and started in a new "
        "browser context) and to the server's last message of the visit (the page's script run sent); "
        "the rest, to the page settled, is the browser drawing (for the charted pages, plotly.js, 4.7 MB, "
        "compiled and drawing in software).",
        "",
    ]
    if "floor" in p:
        fl = p["floor"]["pages"]
        text, chart = fl.values()
        out += [
            "The floor, in the same run: a bare Streamlit app (`benchmarks/floor_app.py`: a title and four "
            "metrics; the same with one plotly chart) timed the same way, what no Streamlit page can beat on "
            "this machine and browser:",
            "",
            head,
            "|---|---|---|---|---|" + ("---|" if clicked else ""),
            *[row(k, t, False) for k, t in fl.items()],
            "",
            f"A bare page's first visit takes {text['cold']['median']:.1f} s here and a bare page with one "
            f"plotly chart {chart['cold']['median']:.1f} s: a cold visit cannot meet {TARGET_PAGE_S} s on "
            "this machine whatever the page does, and a charted one is bound by the first compile of "
            "plotly.js in a new browser context.",
            "",
        ]
    sl = p["slider"]
    if "page_drawn" in sl:
        drawn = sl["page_drawn"]
        verdict = "met" if drawn["median"] <= TARGET_SLIDER_S else "NOT met"
        out += [
            "HOLD-threshold slider steps on Solution comparison, from the key press to the page's new "
            "numbers, timed in the page on its own clock (keydown to the metrics changed, and to the "
            f"animation frame that draws them): {_ms(sl['page_shown'])}; drawn {_ms(drawn)} (target median "
            f"under {TARGET_SLIDER_S * 1e3:.0f} ms: {verdict}"
            "). As the harness sees it (Playwright's key press to its poll seeing the change, its own "
            f"messages included): {_ms(sl['shown'])}. To the step's script run ended: median "
            f"{sl['settled']['median'] * 1e3:.0f} ms.",
            "",
        ]
        if "floor" in p:
            fs = p["floor"]["slider"]
            out += [
                "The floor's slider (a fragment with a slider and three metrics, nothing computed), timed "
                f"the same way: drawn in the page {_ms(fs['page_drawn'])}; as the harness sees it "
                f"{_ms(fs['shown'])}.",
                "",
            ]
    else:
        out += [
            f"HOLD-threshold slider steps on Solution comparison, from the key press to the first change of "
            f"the page's numbers: median {sl['shown']['median'] * 1e3:.0f} ms, p95 "
            f"{sl['shown']['p95'] * 1e3:.0f} ms (n={sl['shown']['reps']}; target median under 200 ms: "
            f"{'met' if sl['shown']['median'] <= TARGET_SLIDER_S else 'NOT met'}); to the page settled: "
            f"median {sl['settled']['median'] * 1e3:.0f} ms.",
            "",
        ]
    if "server_start" in p:
        out += [
            "The launcher's start, from the command to the server answering its health check (imports, "
            "the newest run's cached reads and the figures drawn once): "
            f"{fmt_s(p['server_start'], 's')}; the cold figures above start after it, as a visitor's first "
            "page does.",
            "",
        ]
    return out


def md_meeting(m: dict) -> list[str]:
    errors = m["page_errors"] + m["n_failures"] + m["server_tracebacks"]
    return [
        "## A review meeting on one server",
        "",
        f"{m['sessions']} Playwright sessions against one server for {m['seconds']:.0f} s, each "
        "opening the same run, switching pages at random and moving the HOLD-threshold slider "
        "(targets: no errors, p95 slider round trip under 1 s, memory bounded)"
        + (
            f". The sessions join one after another over the first {m['join_seconds']:.0f} s; their "
            "browsers run niced on the server's own 2 cores (a real meeting's run on their own machines), "
            "so their round trips include their own drawing on a shared, busy machine; the server's own "
            "script runs are timed apart:"
            if "join_seconds" in m
            else ":"
        ),
        "",
        "| figure | value |",
        "|---|---|",
        f"| page settle p50 / p95 | {m['settle']['median']:.2f} s / {m['settle']['p95']:.2f} s "
        f"(n={m['settle']['reps']}) |",
        f"| slider round trip p50 / p95 | {m['slider']['median']:.2f} s / {m['slider']['p95']:.2f} s "
        f"(n={m['slider']['reps']}) |",
        *(
            [
                f"| the server's page runs p50 / p95 | {runs['page']['median']:.2f} s / "
                f"{runs['page']['p95']:.2f} s (n={runs['page']['reps']}) |",
                "| the server's fragment runs (slider steps) p50 / p95 | "
                f"{runs['fragment']['median']:.2f} s / "
                f"{runs['fragment']['p95']:.2f} s (n={runs['fragment']['reps']}) |",
            ]
            if (runs := m.get("server_runs"))
            else []
        ),
        f"| errors (on pages, timeouts, server tracebacks) | {errors} |",
        f"| server memory at start / max / end | {m['rss_start_mb']:.0f} / {m['rss_max_mb']:.0f} / "
        f"{m['rss_end_mb']:.0f} MB |",
        "",
        *(md_meeting_load(m["server_only"]) if "server_only" in m else []),
    ]


def md_meeting_load(m: dict) -> list[str]:
    """The meeting's load on the server alone (``meeting_load.py``)."""
    errors = m["exceptions_on_pages"] + m["n_failures"] + m["server_tracebacks"]
    step = m["step_end"]
    verdict = "met" if step["p95"] <= 1.0 else "NOT met"

    def p(t: dict) -> str:
        return f"{t['median']:.2f} s / {t['p95']:.2f} s (n={t['reps']})"

    return [
        f"The same meeting on the server alone: {m['sessions']} websocket sessions for {m['seconds']:.0f} s, "
        f"joining over {m['join_seconds']:.0f} s, each sending what a browser's frontend sends (a page's "
        "run, a slider step's fragment run with the slider's new value; `benchmarks/meeting_load.py`)"
        + (
            f", reading each page {rs[0]:.0f} to {rs[1]:.0f} s and pausing {ss[0]:.1f} to {ss[1]:.1f} s "
            "between slider steps"
            if (rs := m.get("read_seconds")) and (ss := m.get("step_seconds"))
            else ""
        )
        + ", and "
        "timing the server's answer from the message sent, with no browser drawing on the server's cores. "
        "A browser on its own machine adds its own drawing to a slider step (the page benchmark's single "
        "browser, above).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| a page's script run, to its end, p50 / p95 | {p(m['page'])} |",
        f"| a slider step, to its first new metric, p50 / p95 | {p(m['step_shown'])} |",
        f"| a slider step, to its end, p50 / p95 | {p(step)} (target p95 under 1 s on the server's side: "
        f"{verdict}) |",
        f"| errors (exceptions on pages, failed runs, server tracebacks) | {errors} |",
        f"| server memory at start / max / end | {m['rss_start_mb']:.0f} / {m['rss_max_mb']:.0f} / "
        f"{m['rss_end_mb']:.0f} MB |",
        "",
    ]
