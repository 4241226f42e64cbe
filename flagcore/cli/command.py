"""The ``flagcore`` command: the parser assembled from the command groups, and ``main``.

Exit codes: 0 success; 1 a problem with the input (one line on stderr naming the file, column or
value); 2 a usage error; 3 an unexpected internal error (one line naming the exception and the
place it was raised; set FLAGCORE_DEBUG=1 for the traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback
from pathlib import Path

from flagcore import __version__
from flagcore.cli import data, explain, gate, models, review, runs, store_commands, training
from flagcore.cli.options import make_parents
from flagcore.errors import FlagcoreError
from flagcore.models.malloc import keep_freed_memory

# each registers its commands, in this order in ``flagcore --help``
GROUPS = (models, data, training, runs, review, gate, store_commands, explain)

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder that holds flagcore/


def build_parser() -> argparse.ArgumentParser:
    """The ``flagcore`` parser: every command group's subcommands, sharing one set of parent options."""
    p = argparse.ArgumentParser(
        prog="flagcore",
        description="Validation review for trading models: load, diagnose, backtest, validate.",
    )
    p.add_argument("--version", action="version", version=f"flagcore {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = make_parents()
    for group in GROUPS:
        group.register(sub, parents)
    return p


def _in_package(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(_PACKAGE_PARENT / "flagcore")


def _short_path(filename: str) -> str:
    """A frame's file, short: flagcore/..., or the part after site-packages, or the file's name."""
    path = Path(filename).resolve()
    if path.is_relative_to(_PACKAGE_PARENT):
        return path.relative_to(_PACKAGE_PARENT).as_posix()
    if "site-packages" in path.parts:
        return Path(*path.parts[path.parts.index("site-packages") + 1 :]).as_posix()
    return path.name


def where_raised(error: BaseException) -> str:
    """Where ``error`` was raised: the innermost frame of its traceback, as ``function at file:line``.

    When that frame lies outside flagcore (in numpy, torch, ...), the innermost flagcore frame
    follows it (``called from function at flagcore/...:line``): the line of ours that made the call.
    """
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    inner = frames[-1]
    text = f"{inner.name} at {_short_path(inner.filename)}:{inner.lineno}"
    if not _in_package(inner.filename):
        ours = [f for f in frames if _in_package(f.filename)]
        if ours:
            text += f", called from {ours[-1].name} at {_short_path(ours[-1].filename)}:{ours[-1].lineno}"
    return text


def internal_error_line(error: BaseException) -> str:
    """The one stderr line for an unexpected error: its type, its message's first line, where it was raised.

    The message is cut at its first line and 300 characters.
    """
    text = str(error).strip()
    msg = text.splitlines()[0][:300] if text else ""
    return (
        f"flagcore: internal error: {type(error).__name__}: {msg} (in {where_raised(error)}; "
        "FLAGCORE_DEBUG=1 shows the traceback)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``flagcore`` with ``argv`` (default the process's arguments) and return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FlagcoreError as e:
        print(f"flagcore: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flagcore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the one place that turns surprises into one line
        if os.environ.get("FLAGCORE_DEBUG"):
            raise
        print(internal_error_line(e), file=sys.stderr)
        return 3


def run() -> None:
    """The console script: ``main``, then exit without the interpreter's last garbage collections.

    With torch and peft imported those walk millions of objects: 1.3 s of every command's exit on
    a 2-core machine (measured; 0.25 s with the objects frozen). Everything a command opens is
    closed by then (stores, pools), and objects still reachable are finalized as usual.
    Inference's memory is kept for reuse from the start, before any thread takes an arena.
    """
    keep_freed_memory()
    code = main()
    gc.freeze()
    sys.exit(code)
