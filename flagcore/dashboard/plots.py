"""Plotly figure builders for the dashboard: plain functions of arrays and tables, no streamlit.

Long series are thinned to at most ``MAX_POINTS`` points per trace (every k-th bar, the last
always kept) and drawn as SVG, so a page stays light in the browser (WebGL traces are slow where
the browser has no GPU); the numbers shown beside a chart come from the full series. Histograms
are binned here, over every value, and sent as bars: tens of bins instead of every bar's value.
Figures keep plotly's default template, which streamlit sets to its own theme (the look
``st.plotly_chart`` gives them anyway): setting another one copies and validates a large template
per figure (70 ms on 2 busy cores, a third of a small figure's build) and sends it to the browser.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from flagcore.vocab import CLASS_NAMES

CLASS_COLORS = dict(zip(CLASS_NAMES, ("#d62728", "#7f7f7f", "#2ca02c"), strict=True))  # red, grey, green
MAX_POINTS = 1000  # per trace: SVG stays quick to draw, even without a GPU


def _thin(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    idx = np.arange(0, n, int(np.ceil(n / max_points)))
    return idx if idx[-1] == n - 1 else np.append(idx, n - 1)


def _histogram_bars(values, edges: np.ndarray, **kw) -> go.Bar:
    """A histogram binned here over every finite value, as bars (the browser gets one number per
    bin, not every value); ``edges`` as ``np.histogram`` takes them."""
    x = np.asarray(values, dtype=np.float64).ravel()
    counts, edges = np.histogram(x[np.isfinite(x)], bins=edges)
    return go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), **kw)


def _edges(values, bins: int) -> np.ndarray:
    """``bins`` equal bins over the finite values' range (shared by every trace of one chart)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    return np.histogram_bin_edges(x[np.isfinite(x)], bins=bins)


def _utc_naive(ts) -> np.ndarray:
    """UTC wall times as datetime64 (plotly serialises these fast; tz-aware objects are slow)."""
    idx = pd.DatetimeIndex(ts)
    return (idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx).to_numpy()


def _marks(*lines: tuple[str, float, str, dict]) -> dict:
    """Reference lines with their labels as layout ``shapes`` and ``annotations``, for ``_layout``:
    each ``(axis, at, text, line)`` is a horizontal ("y") or vertical ("x") line across the plot,
    labelled where ``add_hline`` / ``add_vline`` put it (top right, top left), in one layout update
    instead of their 20 ms each."""
    shapes, notes = [], []
    for axis, at, text, line in lines:
        if axis == "y":
            shapes.append(dict(type="line", xref="x domain", x0=0, x1=1, yref="y", y0=at, y1=at, line=line))
            notes.append(
                dict(
                    showarrow=False,
                    text=text,
                    xref="x domain",
                    x=1,
                    xanchor="right",
                    yref="y",
                    y=at,
                    yanchor="bottom",
                )
            )
        else:
            shapes.append(dict(type="line", xref="x", x0=at, x1=at, yref="y domain", y0=0, y1=1, line=line))
            notes.append(
                dict(
                    showarrow=False,
                    text=text,
                    xref="x",
                    x=at,
                    xanchor="left",
                    yref="y domain",
                    y=1,
                    yanchor="top",
                )
            )
    return {"shapes": shapes, "annotations": notes}


def _layout(fig: go.Figure, title: str, **kw) -> go.Figure:
    fig.update_layout(
        title=title,
        margin=dict(l=40, r=20, t=50, b=40),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        **kw,
    )
    return fig


def action_shares(shares: dict[str, dict[str, float]], title: str = "Action distribution") -> go.Figure:
    """Stacked bars of SELL/HOLD/BUY shares, one bar per model or option."""
    names = list(shares)
    fig = go.Figure(
        [
            go.Bar(name=c, x=names, y=[shares[n][c] for n in names], marker_color=CLASS_COLORS[c])
            for c in CLASS_NAMES
        ]
    )
    fig.update_layout(barmode="stack")
    fig.update_yaxes(tickformat=".0%", range=[0, 1])
    return _layout(fig, title)


def logit_distributions(logits: np.ndarray, title: str = "Logits per class") -> go.Figure:
    x = np.asarray(logits)
    edges = _edges(x, 80)  # the same bins for every class, as overlaid histograms share them
    fig = go.Figure(
        [
            _histogram_bars(x[:, j], edges, name=c, opacity=0.6, marker_color=CLASS_COLORS[c])
            for j, c in enumerate(CLASS_NAMES)
        ]
    )
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title="logit")
    fig.update_yaxes(title="bars")
    return _layout(fig, title)


def confidence_histogram(confidence: np.ndarray, title: str = "Confidence of the chosen action") -> go.Figure:
    fig = go.Figure(_histogram_bars(confidence, np.linspace(0.0, 1.0001, 61), marker_color="#1f77b4"))
    fig.update_layout(bargap=0)
    fig.update_xaxes(title="confidence", tickformat=".0%", range=[0, 1])
    fig.update_yaxes(title="bars")
    return _layout(fig, title)


def logits_over_time(timestamps, logits: np.ndarray, title: str = "Logits over time") -> go.Figure:
    x = np.asarray(logits)
    ts = _utc_naive(timestamps)
    k = _thin(len(ts))
    fig = go.Figure(
        [
            go.Scatter(x=ts[k], y=x[k, j], name=c, mode="lines", line=dict(color=CLASS_COLORS[c], width=1))
            for j, c in enumerate(CLASS_NAMES)
        ]
    )
    fig.update_yaxes(title="logit")
    fig.update_xaxes(title="UTC")
    return _layout(fig, title)


def reliability_diagram(curve: dict, title: str | None = None) -> go.Figure:
    edges = np.asarray(curve["bin_edges"])
    mids = (edges[:-1] + edges[1:]) / 2
    acc = [np.nan if a is None else a for a in curve["accuracy"]]
    conf = [np.nan if c is None else c for c in curve["confidence"]]
    fig = go.Figure(
        [
            go.Scatter(
                x=[0, 1],
                y=[0, 1],
                mode="lines",
                name="perfect calibration",
                line=dict(dash="dash", color="#999"),
            ),
            go.Scatter(
                x=conf,
                y=acc,
                mode="lines+markers",
                name="model",
                text=[f"{n} bars" for n in curve["count"]],
                marker=dict(size=8),
            ),
            go.Bar(
                x=mids,
                y=np.asarray(curve["count"]) / max(sum(curve["count"]), 1),
                name="share of bars",
                opacity=0.25,
                width=edges[1] - edges[0],
                yaxis="y2",
            ),
        ]
    )
    fig.update_layout(
        yaxis2=dict(overlaying="y", side="right", tickformat=".0%", showgrid=False, title="bars")
    )
    fig.update_xaxes(title="confidence", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(title="hit rate", range=[0, 1], tickformat=".0%")
    return _layout(fig, title or f"Reliability (ECE {curve['ece']:.3f})")


def confusion_heatmap(matrix, title: str = "Confusion matrix") -> go.Figure:
    m = np.asarray(matrix)
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=[f"predicted {c}" for c in CLASS_NAMES],
            y=[f"true {c}" for c in CLASS_NAMES],
            text=m,
            texttemplate="%{text:,}",
            colorscale="Blues",
            showscale=False,
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title)


def feature_shift(rows: list[dict], title: str = "Train vs test feature shift (PSI)") -> go.Figure:
    import html

    df = pd.DataFrame(rows)
    # plotly reads tags in labels: show names as text
    df["name"] = df["name"].map(lambda n: html.escape(str(n)))
    color = np.where(
        df["padding"],
        "#d62728",
        np.where(df["psi"] > 0.25, "#ff7f0e", np.where(df["psi"] > 0.1, "#bcbd22", "#1f77b4")),
    )
    fig = go.Figure(
        go.Bar(
            x=df["name"],
            y=df["psi"],
            marker_color=color,
            customdata=np.stack([df["ks"], df["padding"]], axis=1),
            hovertemplate="%{x}<br>PSI %{y:.3f}<br>KS %{customdata[0]:.3f}"
            "<br>padding %{customdata[1]}<extra></extra>",
        )
    )
    marks = _marks(
        ("y", 0.25, "major shift (0.25)", {"dash": "dot"}),
        ("y", 0.1, "moderate (0.1)", {"dash": "dot", "color": "#999"}),
    )
    fig.update_yaxes(title="PSI", type="log")
    fig.update_xaxes(tickangle=-60)
    return _layout(fig, title, **marks)


def equity_curves(
    df: pd.DataFrame, titles: dict[str, str] | None = None, title: str = "Equity curves"
) -> go.Figure:
    """``df`` with columns option, timestamp, equity (one row per bar and option)."""
    traces = []
    ts_all, eq_all = _utc_naive(df["timestamp"]), df["equity"].to_numpy()
    for opt, rows in df.groupby("option", sort=False).indices.items():
        k = rows[_thin(len(rows))]
        traces.append(
            go.Scatter(
                x=ts_all[k],
                y=eq_all[k],
                mode="lines",
                name=(titles or {}).get(opt, opt),
                line=dict(width=1.5),
            )
        )
    fig = go.Figure(traces)
    fig.update_yaxes(title="equity (start = 1)", type="log")
    fig.update_xaxes(title="UTC")
    return _layout(fig, title)


def sweep_chart(sweep: pd.DataFrame, current: float, parameter_label: str, title: str) -> go.Figure:
    """Sharpe and trades across the swept values, the current value marked."""
    fig = go.Figure(
        [
            go.Scatter(x=sweep["value"], y=sweep["sharpe"], mode="lines+markers", name="Sharpe (annualised)"),
            go.Scatter(
                x=sweep["value"],
                y=sweep["trades"],
                mode="lines+markers",
                name="trades",
                yaxis="y2",
                line=dict(dash="dot"),
            ),
        ]
    )
    fig.update_layout(yaxis2=dict(overlaying="y", side="right", title="trades", showgrid=False))
    fig.update_xaxes(title=parameter_label)
    fig.update_yaxes(title="Sharpe")
    return _layout(fig, title, **_marks(("x", current, f"current {current:g}", {"color": "#d62728"})))


def mark_current(fig: go.Figure, current: float) -> go.Figure:
    """Move a ``sweep_chart``'s marker (its one line and label) to ``current``, in place.

    A slider step moves the marker of the figure it already has: building a plotly figure takes about
    100 ms on a 2-core machine, moving the marker a few.
    """
    fig.update_shapes(x0=current, x1=current)
    fig.update_annotations(x=current, text=f"current {current:g}")
    return fig


def cpcv_paths(
    paths: pd.DataFrame,
    titles: dict[str, str] | None = None,
    threshold: float | None = None,
    title: str = "CPCV path Sharpe ratios",
) -> go.Figure:
    """One box per option and mode; points are the paths' annualised Sharpe ratios."""
    fig = go.Figure()
    for (opt, mode), g in paths.groupby(["option", "mode"], sort=False):
        fig.add_trace(
            go.Box(
                y=g["sharpe"],
                name=f"{(titles or {}).get(opt, opt)} [{mode}]",
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
            )
        )
    fig.update_yaxes(title="Sharpe (annualised)")
    fig.update_layout(showlegend=False)
    if threshold is None:
        return _layout(fig, title)
    line = {"dash": "dot", "color": "#d62728"}
    return _layout(fig, title, **_marks(("y", threshold, f"criterion {threshold:g}", line)))


def permutation_null(
    null_sharpes: np.ndarray, observed: float, p_value: float, title: str | None = None
) -> go.Figure:
    """Histogram of the permuted Sharpes with the observed one marked (both annualised by the caller)."""
    fig = go.Figure(
        _histogram_bars(null_sharpes, _edges(null_sharpes, 80), name="permutations", marker_color="#9ecae1")
    )
    fig.update_layout(bargap=0)
    fig.update_xaxes(title="Sharpe (annualised)")
    fig.update_yaxes(title="permutations")
    mark = _marks(("x", observed, f"observed {observed:.2f}", {"color": "#d62728"}))
    return _layout(fig, title or f"Permutation null (p = {p_value:.4f})", **mark)
