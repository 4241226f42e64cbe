"""The dashboard's server with its imports done before the first visit.

``python -m flagcore.dashboard.serve [streamlit options]`` is ``streamlit run app.py [streamlit
options]`` (``app.py`` of the current folder, or a path given first), after importing in the server's
own process what every page imports on its first script run (pandas, pyarrow, duckdb, plotly and its
figure validators, streamlit's chart and table elements, the dashboard's modules), drawing one small
figure and table of each kind the pages draw and running one duckdb query into pandas; what that
loaded is then frozen out of the garbage collector's scans (``gc.freeze``). A plain ``streamlit run``
pays all that on the first visit after the server starts (seconds on 2 cores); here the server
answers its health check only once it is paid, so the first visitor does not wait for it. Nothing
of a store is read: the first visit of a run still reads it.
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
    finally:
        quiet.setLevel(level)
    t = time.perf_counter()
    _draw()
    took["first figures and table"] = time.perf_counter() - t
    return took


def _draw() -> None:
    import duckdb
    import pandas as pd
    import plotly.graph_objects as go
    from streamlit.dataframe_util import convert_pandas_df_to_arrow_bytes

    fig = go.Figure(
        [go.Scatter(x=[0, 1], y=[0, 1]), go.Bar(x=[0], y=[1]), go.Heatmap(z=[[0, 1]]), go.Box(y=[0, 1])]
    )
    fig.add_hline(y=0.5)
    fig.update_layout(title="warm-up", barmode="overlay")
    fig.to_json()
    convert_pandas_df_to_arrow_bytes(pd.DataFrame({"a": [1.0], "b": ["x"]}))
    with duckdb.connect(":memory:") as con:  # duckdb's first query into pandas sets up its conversion
        con.execute("SELECT 1 AS a, 'x' AS b").df()


def main(argv: list[str] | None = None) -> None:
    """``streamlit run APP [options]`` in this process, after :func:`warm`."""
    args = list(sys.argv[1:] if argv is None else argv)
    app = Path(args.pop(0)) if args and args[0].endswith(".py") else Path.cwd() / "app.py"
    if not app.is_file():
        sys.exit(
            f"{app}: no such app file; run this from the repository's root or give the app.py path first"
        )
    warm()
    # what the warm-up loaded lives as long as the server: kept out of every later collection's scan
    gc.collect()
    gc.freeze()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(app), *args]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
