"""What the dashboard may do besides reading: evaluate files it is allowed to see.

The dashboard lists checkpoints and datasets only under the configured folders
(``FLAGCORE_FILES``, a ``os.pathsep``-separated list; default ``data``), and
:func:`evaluate_files` refuses any path outside them before anything is loaded, so no page can
evaluate a file it could not have listed. No streamlit here: the pages call these through
``flagcore.dashboard.state``, which also clears the cached reads after the write.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from flagcore.errors import FlagcoreError
from flagcore.store.store import Store

Progress = Callable[[str, float], None]


def _quiet(stage: str, fraction: float) -> None:
    """No progress shown."""


def with_time_left(progress: Progress, clock: Callable[[], float] = time.monotonic) -> Progress:
    """``progress`` with each stage's time left in its text: it is called with
    ``("inference: 43% - about 1 min 20 s left", 0.43)`` (``pipeline.settings.progress_text``),
    the estimate from the stage's elapsed time and fraction done, timed from the stage's first call.

    Parameters
    ----------
    progress : callable(text, fraction)
        What shows it (a ``st.progress`` bar's callback: ``state.progress_bar``).
    clock : callable, optional
        Seconds, monotonic (tests pass their own).
    """
    from flagcore.pipeline.settings import progress_text

    began: dict[str, float] = {}

    def report(stage: str, fraction: float) -> None:
        if stage not in began:
            began.clear()  # a new stage: its own pace
            began[stage] = clock()
        progress(progress_text(stage, fraction, clock() - began[stage]), fraction)

    return report


def configured_roots() -> list[Path]:
    """The folders the dashboard may browse: ``FLAGCORE_FILES`` (``os.pathsep``-separated), else ``data``."""
    env = os.environ.get("FLAGCORE_FILES")
    return [Path(p) for p in env.split(os.pathsep)] if env else [Path("data")]


def browsable_files(roots: list[Path] | None = None) -> dict[str, list[str]]:
    """Checkpoints and datasets under ``roots`` (default :func:`configured_roots`), for the pickers.

    Paths are resolved and kept only when they stay inside a root, so links cannot lead out of them.

    Parameters
    ----------
    roots : list of Path, optional
    author : str, optional
        Who asked for the run (the reviewer identity of the dashboard's user), stored with it.

    Returns
    -------
    dict
        ``{"checkpoints": [...], "datasets": [...]}``, resolved paths, sorted.
    """
    ckpts, data = set(), set()
    for root in configured_roots() if roots is None else roots:
        base = root.resolve()
        if not base.is_dir():
            continue
        for p in base.rglob("*"):
            try:
                rp = p.resolve()
                rp.relative_to(base)
            except (OSError, ValueError):
                continue
            if rp.name == "model.safetensors" or (rp.suffix == ".safetensors" and rp.parent.name != "cgdt"):
                ckpts.add(str(rp.parent if rp.name == "model.safetensors" else rp))
            elif rp.suffix in (".parquet", ".csv") and rp.is_file():
                data.add(str(rp))
    return {"checkpoints": sorted(ckpts), "datasets": sorted(data)}


def outside_roots(paths, roots: list[Path] | None = None) -> list[str]:
    """Those of ``paths`` that are not among the checkpoints and datasets :func:`browsable_files` lists."""
    files = browsable_files(roots)
    listed = {*files["checkpoints"], *files["datasets"]}
    return [str(p) for p in paths if str(Path(p).resolve()) not in listed]


def inside_roots(path: str | Path, roots: list[Path] | None = None) -> bool:
    """Whether ``path`` is one of the checkpoints or datasets :func:`browsable_files` lists."""
    return not outside_roots([path], roots)


def evaluate_files(
    store: Store,
    checkpoint: str,
    data: str,
    train: str | None = None,
    progress: Progress | None = None,
    roots: list[Path] | None = None,
    author: str | None = None,
) -> dict:
    """Evaluate ``checkpoint`` on ``data`` (with ``train`` as the training data) into ``store``.

    Every path must lie under ``roots`` (default :func:`configured_roots`), checked before anything
    is read; then :func:`flagcore.pipeline.evaluate.evaluate` writes the run.

    Parameters
    ----------
    store : Store
    checkpoint, data : str
        The model under review and the evaluation data.
    train : str, optional
        Training data: the label prior, payoff ratios and feature shift.
    progress : callable(text, fraction), optional
        Called with each stage's progress and time left in words (:func:`with_time_left`).
    roots : list of Path, optional
    author : str, optional
        Who asked for the run (the reviewer identity of the dashboard's user), stored with it.

    Returns
    -------
    dict
        What ``evaluate`` returns (``run_id``, ...).

    Raises
    ------
    FlagcoreError
        When a path lies outside the roots, or the evaluation itself refuses the files.
    """
    from flagcore.pipeline.evaluate import evaluate
    from flagcore.pipeline.settings import EvaluateSettings

    outside = outside_roots([p for p in (checkpoint, data, train) if p is not None], roots)
    if outside:
        raise FlagcoreError(
            f"{outside[0]}: only files under the configured folders (FLAGCORE_FILES) can be "
            f"evaluated from the dashboard"
        )
    return evaluate(
        checkpoint,
        data,
        store=store,
        train_data=train,
        settings=EvaluateSettings(author=author),
        progress=with_time_left(progress) if progress is not None else _quiet,
    )
