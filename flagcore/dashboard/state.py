"""What every dashboard page shares: the store, the chosen run, cached reads, and the writes that
clear them. Streamlit-side only; the numbers come from flagcore.

Cached reads are keyed on the store file's version (its size and modification time, and those of
its write-ahead log): a run's stored results change only by a write to the file, and any write (a
new run, a review, ``flagcore validate --retrain`` appending retraining paths to a run, from this
process or another) gives the next read a new key. Writes made from the dashboard also clear the
caches at once (:func:`written`), so a page never shows less than the store holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from flagcore.analysis.review_policy import ReviewPolicy, RunStatus, load_review_policy
from flagcore.dashboard.identity import Identity
from flagcore.errors import FlagcoreError  # pages catch it through this module too
from flagcore.store.connection import default_path, unshared_reads
from flagcore.store.store import Store

RUN_TTL = 600  # cached reads are keyed on the store's version (see above); this only bounds memory
RUNS_TTL = 30  # the run list, read on every rerun of every page: briefly cached
FILES_TTL = 30  # the checkpoints and datasets under the configured folders


def store() -> Store:
    return Store(default_path())


def store_key() -> str:
    return str(store().path.resolve())


def store_version(path: str) -> str:
    """The store file's version (``Store.version``): a cache keyed on it is fresh after every write."""
    return Store(path).version()


# ----------------------------------------------------------------------------- cached reads


@st.cache_data(ttl=RUNS_TTL, show_spinner=False)
def _runs(path: str, version: str) -> pd.DataFrame:
    return Store(path).list_runs()


@st.cache_data(ttl=RUN_TTL, max_entries=512, show_spinner=False)
def _read(path: str, version: str, method: str, *args):
    """``Store(path).<method>(*args)``, cached per store version."""
    return getattr(Store(path), method)(*args)


def runs(path: str) -> pd.DataFrame:
    """Every run, newest first (``Store.list_runs``)."""
    return _runs(path, store_version(path))


def all_option_results(path: str) -> pd.DataFrame:
    """Every option of every run (``Store.option_results()``), for the runs overview."""
    return _read(path, store_version(path), "option_results")


def run_info(path: str, run_id: int) -> dict:
    return _read(path, store_version(path), "run", run_id)


def option_results(path: str, run_id: int) -> pd.DataFrame:
    return _read(path, store_version(path), "option_results", run_id)


def hifa(path: str, run_id: int) -> pd.DataFrame:
    return _read(path, store_version(path), "hifa", run_id)


def diagnostics(path: str, run_id: int, option: str) -> dict:
    return _read(path, store_version(path), "diagnostics", run_id, option)


def predictions(path: str, run_id: int, option: str) -> pd.DataFrame:
    return _read(path, store_version(path), "predictions", run_id, option)


def equity_curves(path: str, run_id: int) -> pd.DataFrame:
    return _read(path, store_version(path), "equity_curves", run_id)


def sweeps(path: str, run_id: int) -> pd.DataFrame:
    return _read(path, store_version(path), "sweeps", run_id)


def cpcv_paths(path: str, run_id: int) -> pd.DataFrame:
    """Every CPCV path of a run: post hoc, and retraining paths appended later by ``validate --retrain``."""
    return _read(path, store_version(path), "cpcv_paths", run_id)


def permutation_null(path: str, run_id: int, option: str):
    return _read(path, store_version(path), "permutation_null", run_id, option)


def run_models(path: str, run_id: int) -> pd.DataFrame:
    return _read(path, store_version(path), "run_models", run_id)


def dataset(path: str, dataset_id: str):
    return _read(path, store_version(path), "dataset", dataset_id)


def root_cause(path: str, run_id: int) -> dict | None:
    """The newest ``flagcore explain`` stored with a run (``Store.root_cause``); an explain added
    later is a write, so it gives the next read a new key."""
    return _read(path, store_version(path), "root_cause", run_id)


def review_policy() -> ReviewPolicy:
    """The team's review policy: ``[review]`` of the team config (``$FLAGCORE_CONFIG``), else the
    defaults; read on every call (a small file), so an edit shows on the next rerun."""
    return load_review_policy()


def run_status(path: str, run_id: int, policy: ReviewPolicy) -> RunStatus:
    """A run's review status under ``policy`` (``Store.run_status``); a review or a later run is a
    write, so it gives a new key."""
    return _read(path, store_version(path), "run_status", run_id, policy)


def run_statuses(path: str, policy: ReviewPolicy) -> dict[int, RunStatus]:
    """Every run's review status under ``policy`` (``Store.run_statuses``), for the run list."""
    return _read(path, store_version(path), "run_statuses", policy)


@st.cache_data(ttl=RUN_TTL, max_entries=16, show_spinner=False)
def _report(path: str, version: str, run_id: int, fmt: str, policy: ReviewPolicy) -> str:
    from flagcore.dashboard.report import render_report

    return render_report(Store(path), run_id, fmt, policy=policy)


def report(path: str, run_id: int, fmt: str, policy: ReviewPolicy) -> str:
    """The findings report of a run with its status under ``policy``; a new review is a write, so
    it gives a new report."""
    return _report(path, store_version(path), run_id, fmt, policy)


@st.cache_data(ttl=FILES_TTL, show_spinner=False)
def _files(configured: str) -> dict[str, list[str]]:  # keyed on FLAGCORE_FILES, which it reads
    from flagcore.dashboard.actions import browsable_files

    return browsable_files()


def files() -> dict[str, list[str]]:
    """The checkpoints and datasets under the configured folders (``actions.browsable_files``)."""
    return _files(os.environ.get("FLAGCORE_FILES", ""))


@st.cache_resource(show_spinner="Reading the run's logits...", max_entries=8)
def live_inputs(path: str, run_id: int):
    """The arrays the sliders recompute from: the run's baseline logits, closes and settings, which
    no later write changes."""
    from flagcore.dashboard.live import load_live_inputs

    return load_live_inputs(Store(path), run_id)


@st.cache_resource(show_spinner="Loading the checkpoint...", max_entries=4)
def loaded_model(checkpoint: str, sha256: str):
    """A checkpoint in eval mode, shared by every session; used only under torch.inference_mode."""
    from flagcore.models.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint).eval()
    if model.checkpoint_info.sha256 != sha256:
        raise FlagcoreError(f"{checkpoint}: changed since the run (sha256 differs)")
    return model


@st.cache_data(ttl=RUN_TTL, max_entries=64, show_spinner="Checking the checkpoint's sha256...")
def _file_sha256(source: str, size: int, mtime_ns: int) -> str:  # keyed on the file's size and time
    from flagcore.models.file_id import file_sha256

    return file_sha256(source)


def file_sha256(source: str) -> str:
    """A file's sha256, hashed once per version of the file (its size and modification time)."""
    s = os.stat(source)
    return _file_sha256(source, s.st_size, s.st_mtime_ns)


def ablation_problem(path: str, run_id: int) -> str | None:
    """Why the run's live ablation cannot run (``ablation.ablation_problem``: its checkpoint gone or
    changed, a dataset gone), from the store and the files only: no torch, no model loaded."""
    from flagcore.dashboard.ablation import ablation_problem as problem

    return problem(
        run_info(path, run_id), run_models(path, run_id), lambda d: dataset(path, d), sha256=file_sha256
    )


@st.cache_resource(show_spinner="Loading the run's checkpoint and data...", max_entries=2)
def explain_model(path: str, run_id: int):
    """The run's checked baseline network and its inputs for the live ablation
    (``ablation.load_ablation_model``), loaded once and shared by every session; a checkpoint
    that is gone or changed raises (not cached) and is tried again on the next rerun."""
    from flagcore.dashboard.ablation import load_ablation_model

    return load_ablation_model(Store(path), run_id)


@st.cache_resource(show_spinner="Timing the model on a few windows...", max_entries=4)
def ablation_plan(path: str, run_id: int):
    """The live ablation's default sample size, from the time a few windows take here
    (``ablation.plan_sample``)."""
    from flagcore.dashboard.ablation import plan_sample

    return plan_sample(explain_model(path, run_id))


@st.cache_data(show_spinner="Sampling the evaluated bars and inferring them as they are...", max_entries=8)
def ablation_sample(path: str, run_id: int, bars: int, seed: int):
    """The sampled windows of a run and their logits as evaluated (``ablation.sample_windows``),
    per (run, sample size, seed): a run's model and data do not change after it is stored."""
    from flagcore.dashboard.ablation import sample_windows

    return sample_windows(explain_model(path, run_id), bars, seed)


def sweep_figure(path: str, run_id: int, parameter: str, value: float, label: str, title: str):
    """The chart of a run's sweep over ``parameter`` (``plots.sweep_chart``) with ``value`` marked.

    Built once per session, run and store version; a slider step then only moves the marker
    (``plots.mark_current``), so the step's rerun does not wait on building a plotly figure. Kept in
    the session, not shared: the figure is changed in place.
    """
    from flagcore.dashboard import plots
    from flagcore.dashboard.views import rows

    key = (path, store_version(path), run_id, parameter, label, title)
    figures = st.session_state.setdefault("_sweep_figures", {})
    if figures.get(parameter, (None,))[0] != key:
        chart = plots.sweep_chart(rows(sweeps(path, run_id), parameter=parameter), value, label, title)
        figures[parameter] = (key, chart)
    return plots.mark_current(figures[parameter][1], value)


@st.cache_data(show_spinner=False)
def presets() -> pd.DataFrame:
    """The FLAG-TRADER presets with their parameter counts (the seed's table), in closed form: no
    torch, no model built (``flag_trader_config.preset_table``)."""
    from flagcore.models.flag_trader_config import preset_table

    return pd.DataFrame(preset_table()).set_index("preset")


def forward_check(path: str, run_id: int, model: pd.Series) -> dict:
    """Re-run ``model`` (a row of ``run_models``) on the last bars of its run and compare with the
    stored logits (``health.forward_check``)."""
    from flagcore.dashboard.health import forward_check as check

    ds = dataset(path, run_info(path, run_id)["dataset_id"])
    if not Path(model["source"]).exists() or not Path(ds["source"]).exists():
        raise FlagcoreError(
            f"The checkpoint {model['source']} or the dataset {ds['source']} is no longer on disk."
        )
    return check(
        loaded_model(model["source"], model["model_id"]),
        ds["source"],
        predictions(path, run_id, model["role"]),
    )


def warm_run(path: str, run_id: int, policy: ReviewPolicy) -> None:
    """Fill the cached reads every page makes for ``run_id`` (its tables, each option's diagnostics,
    predictions and permutation null, its datasets and checkpoint hashes, the slider's inputs, the
    findings report) and the run list, as the pages' first script runs would; call it inside
    ``Store.reading()`` to read them through one connection. The launcher calls it at start-up."""
    from flagcore.dashboard.views import model_logit_options

    runs(path)
    run_statuses(path, policy)
    all_option_results(path)
    presets()
    files()
    info = run_info(path, run_id)
    opts = option_results(path, run_id)
    models = run_models(path, run_id)
    for read in (hifa, equity_curves, sweeps, cpcv_paths, root_cause):
        read(path, run_id)
    for option in opts["option"]:
        diagnostics(path, run_id, option)
        permutation_null(path, run_id, option)
    for option in model_logit_options(models, opts):
        predictions(path, run_id, option)
    run_status(path, run_id, policy)
    ablation_problem(path, run_id)  # the run's datasets and its checkpoints' sha256
    dataset(path, info["dataset_id"])
    live_inputs(path, run_id)
    for fmt in ("md", "html"):
        report(path, run_id, fmt, policy)


# ----------------------------------------------------------------------------- writes


def written() -> None:
    """After a write from the dashboard: the run list and every cached read are read again."""
    _runs.clear()
    _read.clear()
    _report.clear()


def add_review(run_id: int, reviewer: Identity, verdict: str, comment: str) -> int:
    """Append a review signed by ``reviewer`` (``Store.add_review``, with where the name came from);
    returns its id."""
    with unshared_reads():  # the page's shared read connection (Store.reading) would refuse the write
        review_id = store().add_review(
            run_id, reviewer.name, verdict, comment, identity_source=reviewer.source
        )
    written()
    return review_id


def evaluate_files(
    checkpoint: str, data: str, train: str | None, progress=None, author: str | None = None
) -> dict:
    """Evaluate files under the configured folders only (``actions.evaluate_files``) into the store,
    the run's author ``author``."""
    from flagcore.dashboard.actions import evaluate_files as evaluate

    try:
        with unshared_reads():  # as add_review
            return evaluate(store(), checkpoint, data, train, progress, author=author)
    finally:
        written()


def build_demo(quick: bool, progress=None) -> dict:
    """Build the embedded demo into the store (``flagcore demo``)."""
    from flagcore.pipeline.demo import build_demo as build

    try:
        with unshared_reads():  # as add_review
            if progress is None:
                return build(store(), quick=quick, workers=1)
            return build(store(), quick=quick, workers=1, progress=progress)
    finally:
        written()


def progress_bar(bar):
    """A ``progress(stage, fraction)`` callback that moves a ``st.progress`` bar, the fraction clipped
    to [0, 1]."""
    return lambda stage, frac: bar.progress(min(max(frac, 0.0), 1.0), text=stage)


# ----------------------------------------------------------------------------- the chosen run


def current_run() -> int | None:
    """The run chosen in the sidebar; else the one in the URL (a shared link, or a page run on its own)."""
    v = st.session_state.get("run")
    if v is None:
        q = st.query_params.get("run", "")
        return int(q) if q.isdigit() else None
    return int(v)


def require_run() -> int:
    rid = current_run()
    if rid is None:
        st.info("No run selected: pick one in the sidebar.")
        st.stop()
    return rid


def run_picker(labels: dict[int, str]) -> None:
    """The sidebar's run picker; the chosen run is kept in the URL, so any view can be shared."""
    wanted = st.session_state.get("run")
    if wanted not in labels:  # first visit, a run id from a shared link, or a run that is gone
        st.session_state.pop("run", None)
        q = st.query_params.get("run", "")
        wanted = int(q) if q.isdigit() and int(q) in labels else next(iter(labels))
    ids: list[int] = list(labels)
    st.sidebar.selectbox(
        "Run",
        ids,
        index=ids.index(wanted),
        format_func=lambda r: labels[r],
        key="run",
        help="the evaluation run every page shows; it is kept in the URL",
    )
    st.query_params["run"] = str(st.session_state["run"])


# ----------------------------------------------------------------------------- text


def plain(text) -> str:
    """Text (paths, error messages) for st.error/st.success, which render Markdown: escaped so it
    shows as itself."""
    return "".join("\\" + ch if ch in "\\`*_{}[]()#+-.!|<>~$:" else ch for ch in str(text))


def error_line(error: BaseException) -> str:
    """An error as one escaped line for st.error: its message's first line, or its type's name."""
    return plain((str(error).strip().splitlines() or [type(error).__name__])[0])


def pct(x) -> str:
    import math

    return "n/a" if x is None or math.isnan(x) else f"{x:.2%}"
