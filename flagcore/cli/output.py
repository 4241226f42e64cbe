"""What the commands print: the result (text lines or JSON) on stdout, progress on stderr.

:func:`emit` writes a command's result (valid JSON: :func:`json_safe`); :func:`progress` is one
tqdm bar for one loop and :class:`Stages` one bar per pipeline stage; :func:`shares_text`, :func:`mark` and
:func:`verdict_marks` are the small phrases several commands print.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flagcore.vocab import BADGE


def emit(data: Mapping[str, Any], as_json: bool, text_lines: list[str]) -> None:
    """Print ``data`` as indented JSON with ``--json``, else the text lines.

    Parameters
    ----------
    data
        The result; NaN and infinity are written as null (:func:`json_safe`: JSON has neither, and
        ``json.dump`` would write the invalid ``NaN``), other values JSON cannot hold with ``str``.
    as_json
        The command's ``--json``.
    text_lines
        What a person reads instead.
    """
    if as_json:
        json.dump(json_safe(data), sys.stdout, indent=2, default=str, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(text_lines) + "\n")


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None and numpy scalars and arrays as plain Python,
    so that it dumps as valid JSON (a caller that must tell "never" from "unknown" adds a flag).

    Examples
    --------
    >>> json_safe({"a": float("inf"), "b": [1.5, float("nan")]})
    {'a': None, 'b': [1.5, None]}
    """
    import numpy as np

    if isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def progress(label: str, quiet: bool) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A progress bar on stderr: ``(update(done, total), close())``; no bar when ``quiet``."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=None, desc=label, unit="bar", file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


class Stages:
    """One progress bar per pipeline stage on stderr (nothing with --quiet), with the stage's elapsed
    time and the time left at its pace so far (each stage reports its own fraction done)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar: Any = None
        self.stage: str | None = None

    def __call__(self, stage: str, frac: float) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(
                total=100,
                desc=stage,
                file=sys.stderr,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, {remaining} left",
            )
        self.bar.n = max(0.0, min(1.0, frac)) * 100
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def shares_text(shares: Mapping[str, float], fmt: str = ".1%") -> str:
    """``SELL 12.0%, HOLD 70.0%, BUY 18.0%``: class shares in the order given."""
    return ", ".join(f"{k} {v:{fmt}}" for k, v in shares.items())


def mark(passed: bool) -> str:
    """A criterion's mark in a table: ``PASS``, or ``fail`` in lower case so that passes stand out."""
    return BADGE[True] if passed else BADGE[False].lower()


def verdict_marks(passed: Iterable[bool]) -> str:
    """``PASS fail PASS``: one :func:`mark` per criterion."""
    return " ".join(mark(p) for p in passed)
