"""The ``flagcore`` command, one module per command group.

- :mod:`flagcore.cli.command`: ``build_parser`` (assembles the groups) and ``main`` (exit codes, the
  one-line errors);
- :mod:`flagcore.cli.options`: the shared options (``--json``, ``--quiet``, ``--store``, ``--device``,
  the placement options) as parent parsers, and what they build (the store, the placement);
- :mod:`flagcore.cli.output`: printing results, progress bars and pipeline stages;
- the command groups, each with ``register(subparsers, parents)``: :mod:`~flagcore.cli.models`
  (info, import, init, predict, diagnose), :mod:`~flagcore.cli.data` (check-data, market, features),
  :mod:`~flagcore.cli.training` (train, train-cgdt, walk-forward), :mod:`~flagcore.cli.runs`
  (evaluate, demo, runs) and :mod:`~flagcore.cli.review` (report, review, validate).

The console script is ``flagcore.cli:main``.
"""

# ``flagcore.cli.main`` was the whole command until issue 14 and is now a module of re-exports. It is
# loaded first on purpose: loading a submodule sets the package attribute of its name, so it must
# happen before ``main`` below is bound, or ``flagcore.cli.main`` would be the module, not the function.
from flagcore.cli import main as _old_main_module  # noqa: F401  (re-export: callers move later)
from flagcore.cli.command import build_parser, main

__all__ = ["build_parser", "main"]
