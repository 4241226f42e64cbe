"""The command's old import path, ``flagcore.cli.main``: re-exports until callers move.

Import ``main`` and ``build_parser`` from :mod:`flagcore.cli`, and ``runs_json`` from
:mod:`flagcore.cli.runs`.
"""

from flagcore.cli.command import build_parser, main  # noqa: F401  (re-export: callers move later)
from flagcore.cli.runs import runs_json  # noqa: F401  (re-export: callers move later)

__all__ = ["build_parser", "main", "runs_json"]
