"""Where a page's first visit after the server starts goes, and a slider step: each script run of a
real server (a page's, a fragment's) profiled with cProfile, and the server's imports timed with
``python -X importtime``; the seconds by part (imports, store reads, plotly figures, ...).

``python benchmarks/browser_timing.py --store PATH --run ID --only profile`` runs it (this file is also
the profiled server: ``python -X importtime benchmarks/page_profile.py --profiled-server DIR LAUNCHER
app.py [options]``, which imports nothing before the launcher does).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

# what a page's first script run spends, by the functions that stand for each part (cumulative seconds)
PARTS = {
    "imports": ("<frozen importlib._bootstrap>", "_find_and_load"),
    "store reads (duckdb)": ("flagcore/store/connection.py", ""),
    "plotly figures": ("flagcore/dashboard/plots.py", ""),
    "plotly_chart (serialise)": ("streamlit/elements/plotly_chart.py", "plotly_chart"),
    "dataframes (arrow)": ("streamlit/elements/arrow.py", "dataframe"),
    "cache_data (pickle)": ("streamlit/runtime/caching/cache_data_api.py", ""),
    "torch / the model": ("flagcore/dashboard/state.py", "explain_model"),
}


def _parts(prof: Path) -> dict:
    """The script run's seconds by part (``PARTS``; parts overlap: an import inside a read counts in
    both), its total, and its 12 most expensive flagcore/streamlit functions (cumulative)."""
    import pstats

    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    out: dict = {}
    for part, (file, func) in PARTS.items():
        # the outermost call of a part: its callers are not of the same part
        total = 0.0
        for (f, _, name), (_, _, _, ct, callers) in stats.items():
            if f.endswith(file) and func:  # one function: cProfile counts a recursive one once
                total += ct if name == func else 0.0
            elif f.endswith(file):  # a module: the calls into it from outside it
                total += sum(v[3] for c, v in callers.items() if not c[0].endswith(file))
        out[part] = round(total, 3)
    tops = sorted(
        (
            (ct, f"{Path(f).parent.name}/{Path(f).name}:{name}")
            for (f, _, name), (_, _, _, ct, _) in stats.items()
            if "flagcore" in f or "/app_pages/" in f or "streamlit/elements" in f
        ),
        reverse=True,
    )
    out["top"] = [f"{t:.3f} {n}" for t, n in tops[:12]]
    return out


def profile_first_visits(store_path: Path, run_id: int, folder: Path) -> dict:
    """Each page's first visit on a fresh server started with ``FLAGCORE_PROFILE`` (cProfile of the
    script run, ``dashboard.profiling``) and ``python -X importtime`` (the server's imports, before
    and during the visit): the seconds by part and the slowest modules imported during the visit."""
    import numpy as np
    from browser_timing import CHROMIUM, CHROMIUM_ARGS, PAGES, Server, _visit, slider_steps, summary
    from playwright.sync_api import sync_playwright

    out: dict = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, path in PAGES.items():
            sub = folder / (path or "status")
            shutil.rmtree(sub, ignore_errors=True)
            sub.mkdir(parents=True)
            log = sub / "server.log"
            srv = Server(store_path, log, profile=sub)
            try:
                before = log.read_text().count("\n")
                pg = b.new_page(viewport={"width": 1400, "height": 1000})
                seconds = _visit(pg, srv.url, path, run_id)
                pg.close()
            finally:
                srv.stop()
            lines = log.read_text().splitlines()[before:]
            mods = sorted(
                (int(ln.split("|")[1]), ln.split("|")[2].rstrip())
                for ln in lines
                if ln.startswith("import time:")
                and ln.split("|")[1].strip().isdigit()
                and not ln.split("|")[2].startswith("  ")  # the outermost imports of the visit only
            )[::-1]
            first = sorted(sub.glob("*.prof"))[0]  # the visit's first script run
            out[name] = {
                "settled_s": round(seconds, 3),
                "server_ready_s": round(srv.ready_s, 3),
                "script_s": float(
                    dict(ln.split("\t") for ln in (sub / "runs.txt").read_text().splitlines())[first.name]
                ),
                **_parts(first),
                "imported_during_visit": [f"{us / 1e6:.3f} {m.strip()}" for us, m in mods[:10]],
            }
        b.close()
    sub = folder / "slider"
    shutil.rmtree(sub, ignore_errors=True)
    sub.mkdir(parents=True)
    steps = slider_steps(store_path, run_id, steps=12, profile=sub)
    runs = dict(ln.split("\t") for ln in (sub / "runs.txt").read_text().splitlines())
    profs = sorted(sub.glob("*-fragment.prof"))
    parts = [_parts(p) for p in profs]
    out["slider"] = {
        **steps,
        "fragment_s": summary(float(runs[p.name]) for p in profs),
        **{k: float(np.median([q[k] for q in parts])) for k in PARTS if parts},
        "top (last step)": parts[-1]["top"] if parts else [],
    }
    return out


def profiled_server(folder: Path, launcher: str, args: list[str], profile: bool = True) -> None:
    """Run the server as ``launcher`` says with every script run (a page's, a fragment's) profiled
    with cProfile into ``folder/<n>-<page or fragment>.prof``, its seconds in ``folder/runs.txt``;
    without ``profile``, only its seconds (no profiler's overhead: the review meeting's server)."""
    import cProfile
    import itertools
    import threading

    from streamlit.runtime.scriptrunner import script_runner

    count = itertools.count(1)
    real = script_runner.ScriptRunner._run_script
    lock = threading.Lock()  # every session's script thread appends to runs.txt

    def run(self, rerun_data):  # on the script's own thread
        prof = cProfile.Profile() if profile else None
        t = time.perf_counter()
        if prof:
            prof.enable()
        try:
            return real(self, rerun_data)
        finally:
            took = time.perf_counter() - t
            what = "fragment" if rerun_data.fragment_id_queue else (rerun_data.page_name or "page")
            name = f"{next(count):03d}-{what}.prof"
            if prof:
                prof.disable()
                prof.dump_stats(folder / name)
            with lock, open(folder / "runs.txt", "a") as f:
                f.write(f"{name}\t{took:.3f}\n")

    script_runner.ScriptRunner._run_script = run  # type: ignore[method-assign]
    if launcher == "serve":
        from flagcore.dashboard.serve import main as serve

        serve(args)
    else:
        from streamlit.web import cli

        sys.argv = ["streamlit", "run", *args]
        cli.main(prog_name="streamlit")


if __name__ == "__main__" and sys.argv[1:2] in (["--profiled-server"], ["--timed-server"]):
    profiled_server(Path(sys.argv[2]), sys.argv[3], sys.argv[4:], profile=sys.argv[1] == "--profiled-server")
