"""The dashboard's server with its imports done before the first visit.

``python -m flagcore.dashboard.serve [streamlit options]`` is ``streamlit run app.py [streamlit
options]`` (``app.py`` of the current folder, or a path given first), after importing in the server's
own process what every page imports on its first script run (pandas, pyarrow, duckdb, plotly and its
figure validators, streamlit's chart and table elements, the dashboard's modules), drawing one small
figure and table of each kind the pages draw and running one duckdb query into pandas; what that
loaded is then frozen out of the garbage collector's scans (``gc.freeze``). A plain ``streamlit run``
pays all that on the first visit after the server starts (seconds on 2 cores); here the server
answers its health check only once it is paid, so the first visitor does not wait for it.

The store's newest run is read too (:func:`warm_store`): every cached read its pages make (the run
list and statuses, the run's tables, each option's diagnostics, predictions and permutation null,
its checkpoints' sha256, the slider's inputs, the findings report), through one read-only
connection, into the same caches the pages read (``dashboard.state``), so the first visitor of
the newest run finds them filled, as a later visitor does. It costs the server's start-up 1.4-3 s
on the full demo (measured on a busy 2-core machine; :func:`main` prints the warm-up's seconds and
its largest parts), and some tens of MB while the entries live (``state.RUN_TTL``, 10 minutes; a
visit after that reads the store again). Other runs are read on their first visit, as before. A
store that is absent, empty or unreadable is left to the pages (nothing is warmed, nothing is
written); ``FLAGCORE_WARM_STORE=0`` turns the store's warm-up off.

Streamlit's first element of a process also checks whether it runs in a REPL by walking the call
stack and every loaded module's source file (0.3-1 s with pandas and plotly loaded); a server
started by ``streamlit run`` is not a REPL, so the launcher marks that check done.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import time
from pathlib import Path

# the pages' matrices are small (a slider's permutation test: 378 x 24): one BLAS thread answers them in
# a fraction of a millisecond, where a thread pool on 2 busy cores took 40 ms (20 sessions, other work);
# set before numpy loads its BLAS. An explicit setting is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# what the pages import on their first run, heaviest first (the dashboard's own modules import the rest)
WARM_MODULES = (
    "pandas",
    "pyarrow",
    "duckdb",
    "scipy.stats",  # the deflated Sharpe's moments (analysis.dsr imports it when first asked)
    "plotly.graph_objects",
    "streamlit.elements.plotly_chart",
    "streamlit.elements.arrow",
    "flagcore.dashboard.state",
    "flagcore.dashboard.views",
    "flagcore.dashboard.gate_views",
    "flagcore.dashboard.plots",
    "flagcore.dashboard.panels",
    "flagcore.dashboard.compare",
    "flagcore.dashboard.identity",
    "flagcore.dashboard.root_cause",
    "flagcore.dashboard.ablation",
    "flagcore.dashboard.live",
    "flagcore.dashboard.report",
    "flagcore.models.flag_trader_config",  # Model health's preset table
    "flagcore.analysis.permutation",  # the sliders' permutation test
)
# what streamlit and plotly import on a page's first script run (seen with ``python -X importtime``,
# streamlit 1.67): their internals, so one that another version lacks is skipped
WARM_OPTIONAL = (
    "narwhals._pandas_like.namespace",  # st.dataframe of a pandas frame
    "narwhals.stable.v1._namespace",
    "narwhals._interchange.dataframe",
    "streamlit.dataframe.lazy_df_adapters",
    "streamlit.web.skills",
    "streamlit.material_icon_names",  # the pages' icons
    "streamlit.runtime.scriptrunner.magic_funcs",
    "pandas.core.methods.to_dict",
    "_plotly_utils.colors",
)


def warm() -> dict[str, float]:
    """Import ``WARM_MODULES`` and draw one small figure of each trace kind the pages use (plotly
    loads a trace's validators on its first figure) and one table (streamlit's arrow conversion);
    returns the seconds each step took."""
    took: dict[str, float] = {}
    # st.cache_data checks its settings on import, before the server's runtime exists: that it falls
    # back to a memory cache for the check is no news (the cached calls run in the runtime)
    importlib.import_module("streamlit.runtime.caching.cache_data_api")  # its logger, made by streamlit
    quiet = logging.getLogger("streamlit.runtime.caching.cache_data_api")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for name in WARM_MODULES:
            t = time.perf_counter()
            importlib.import_module(name)
            took[name] = time.perf_counter() - t
        t = time.perf_counter()
        for name in WARM_OPTIONAL:
            try:
                importlib.import_module(name)
            except ImportError:
                continue
        took["streamlit's and plotly's page-time imports"] = time.perf_counter() - t
    finally:
        quiet.setLevel(level)
    t = time.perf_counter()
    _draw()
    took["first figures and table"] = time.perf_counter() - t
    return took


def _draw() -> None:
    import duckdb
    import numpy as np
    import pandas as pd
    import plotly.graph_objects as go
    from streamlit import delta_generator
    from streamlit.dataframe_util import convert_pandas_df_to_arrow_bytes

    from flagcore.dashboard import plots

    fig = go.Figure(
        [go.Scatter(x=[0, 1], y=[0, 1]), go.Bar(x=[0], y=[1]), go.Heatmap(z=[[0, 1]]), go.Box(y=[0, 1])]
    )
    fig.add_hline(y=0.5)
    fig.update_layout(title="warm-up", barmode="overlay")
    fig.to_json()
    # the dashboard's own figure builders, for the properties they set (each loads its validators)
    logits = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0]])
    plots.logit_distributions(logits).to_json()
    plots.logits_over_time(pd.date_range("2024-01-01", periods=2, freq="h", tz="UTC"), logits).to_json()
    plots.confusion_heatmap(np.eye(3, dtype=int)).to_json()
    plots.permutation_null(np.array([0.0, 1.0]), 0.5, 0.5).to_json()
    # the first element of a process asks whether it runs in a REPL (a walk of every module's source):
    # a server started by ``streamlit run`` is not one, and says nothing there either way
    if hasattr(delta_generator, "_use_warning_has_been_displayed"):
        delta_generator._use_warning_has_been_displayed = True
    convert_pandas_df_to_arrow_bytes(pd.DataFrame({"a": [1.0], "b": ["x"]}))
    with duckdb.connect(":memory:") as con:  # duckdb's first query into pandas sets up its conversion
        con.execute("SELECT 1 AS a, 'x' AS b").df()


def warm_store() -> dict[str, float]:
    """Fill the dashboard's cached reads for the store's newest run (``state.warm_run``) through one
    read-only connection; returns the seconds it took ({} when nothing was warmed: no store, no run,
    an unreadable store or team config, or ``FLAGCORE_WARM_STORE=0``)."""
    from flagcore.dashboard import state as ac

    if os.environ.get("FLAGCORE_WARM_STORE", "1") == "0":
        return {}
    t = time.perf_counter()
    # the caches' "no runtime yet" and the spinners' "no script run" notes: these are the caches the
    # runtime will use, filled before it starts
    names = ("caching.cache_data_api", "caching.cache_resource_api", "scriptrunner_utils.script_run_context")
    quiet = [logging.getLogger(f"streamlit.runtime.{name}") for name in names]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        store = ac.store()
        if store.absent():
            return {}
        path = ac.store_key()
        with store.reading():
            runs = ac.runs(path)
            if runs.empty:
                return {}
            ac.warm_run(path, int(runs["run_id"].iloc[0]), ac.review_policy())
    except Exception as e:  # noqa: BLE001 - the pages say it to whoever visits, with the way out
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"flagcore: the store was not read ahead of the first visit ({first})", file=sys.stderr)
        return {}
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    return {"the newest run's cached reads": time.perf_counter() - t}


def _largest(took: dict[str, float], n: int = 3) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in sorted(took.items(), key=lambda kv: -kv[1])[:n])


def main(argv: list[str] | None = None) -> None:
    """``streamlit run APP [options]`` in this process, after :func:`warm` and :func:`warm_store`."""
    args = list(sys.argv[1:] if argv is None else argv)
    app = Path(args.pop(0)) if args and args[0].endswith(".py") else Path.cwd() / "app.py"
    if not app.is_file():
        sys.exit(
            f"{app}: no such app file; run this from the repository's root or give the app.py path first"
        )
    took = warm()
    took |= warm_store()
    print(f"flagcore: warmed up in {sum(took.values()):.1f} s ({_largest(took)})", file=sys.stderr)
    # what the warm-up loaded lives as long as the server: kept out of every later collection's scan
    gc.collect()
    gc.freeze()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(app), *args]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
