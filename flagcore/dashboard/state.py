"""What every dashboard page shares: the store, the chosen run, cached reads. Streamlit-side only;
the numbers come from flagcore."""

from __future__ import annotations

import streamlit as st

from flagcore.errors import FlagcoreError  # noqa: F401 - pages catch it through this module
from flagcore.store.store import Store, default_path

RUN_TTL = 600  # a run's results never change once written; reviews are read uncached


def store() -> Store:
    return Store(default_path())


def store_key() -> str:
    return str(store().path.resolve())


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


@st.cache_data(ttl=RUN_TTL, show_spinner=False)
def run_info(path: str, run_id: int) -> dict:
    return Store(path).run(run_id)


@st.cache_data(ttl=RUN_TTL, show_spinner=False)
def option_results(path: str, run_id: int):
    return Store(path).option_results(run_id)


@st.cache_data(ttl=RUN_TTL, show_spinner=False)
def hifa(path: str, run_id: int):
    return Store(path).hifa(run_id)


@st.cache_data(ttl=RUN_TTL, show_spinner=False)
def diagnostics(path: str, run_id: int, option: str) -> dict:
    return Store(path).diagnostics(run_id, option)


@st.cache_data(ttl=RUN_TTL, show_spinner=False)
def predictions(path: str, run_id: int, option: str):
    return Store(path).predictions(run_id, option)


@st.cache_data(ttl=RUN_TTL, show_spinner=False)
def equity_curves(path: str, run_id: int):
    return Store(path).equity_curves(run_id)


@st.cache_data(ttl=RUN_TTL, show_spinner=False)
def sweeps(path: str, run_id: int):
    return Store(path).sweeps(run_id)


@st.cache_data(ttl=60, show_spinner=False)  # retraining CPCV may add paths to a run later
def cpcv_paths(path: str, run_id: int):
    return Store(path).cpcv_paths(run_id)


@st.cache_data(ttl=RUN_TTL, show_spinner=False)
def permutation_null(path: str, run_id: int, option: str):
    return Store(path).permutation_null(run_id, option)


@st.cache_data(ttl=RUN_TTL, show_spinner=False)
def run_models(path: str, run_id: int):
    return Store(path).run_models(run_id)


@st.cache_data(ttl=RUN_TTL, show_spinner=False)
def dataset(path: str, dataset_id: str):
    return Store(path).dataset(dataset_id)


@st.cache_resource(show_spinner="Reading the run's logits...", max_entries=8)
def live_inputs(path: str, run_id: int):
    from flagcore.dashboard.live import load_live_inputs

    return load_live_inputs(Store(path), run_id)


@st.cache_resource(show_spinner="Loading the checkpoint...", max_entries=4)
def loaded_model(checkpoint: str, sha256: str):
    """A checkpoint in eval mode, shared by every session; used only under torch.inference_mode."""
    from flagcore.models.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint).eval()
    if model.checkpoint_info.sha256 != sha256:
        from flagcore.errors import FlagcoreError
        raise FlagcoreError(f"{checkpoint}: changed since the run (sha256 differs)")
    return model


def plain(text) -> str:
    """Text (paths, error messages) for st.error/st.success, which render Markdown: escaped so it
    shows as itself."""
    return "".join("\\" + ch if ch in "\\`*_{}[]()#+-.!|<>~$:" else ch for ch in str(text))


def pct(x) -> str:
    import math

    return "n/a" if x is None or math.isnan(x) else f"{x:.2%}"
