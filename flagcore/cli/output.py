"""What the commands print: the result (text lines or JSON) on stdout, progress on stderr.

:func:`emit` writes a command's result; :func:`progress` is one tqdm bar for one loop and
:class:`Stages` one bar per pipeline stage; :func:`shares_text`, :func:`mark` and
:func:`verdict_marks` are the small phrases several commands print.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flagcore.vocab import BADGE


def emit(data: Mapping[str, Any], as_json: bool, text_lines: list[str]) -> None:
    """Print ``data`` as indented JSON with ``--json``, else the text lines.

    Parameters
    ----------
    data
        The result; values JSON cannot hold are written with ``str``.
    as_json
        The command's ``--json``.
    text_lines
        What a person reads instead.
    """
    if as_json:
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(text_lines) + "\n")


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
    """One progress bar per pipeline stage on stderr (nothing with --quiet)."""

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
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}",
            )
        self.bar.n = int(max(0.0, min(1.0, frac)) * 100)
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
