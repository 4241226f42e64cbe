"""The ``flagcore`` command, one module per command group.

- :mod:`flagcore.cli.command`: ``build_parser`` (assembles the groups) and ``main`` (exit codes, the
  one-line errors);
- :mod:`flagcore.cli.options`: the shared options (``--json``, ``--quiet``, ``--store``, ``--device``,
  the placement options) as parent parsers, and what they build (the store, the placement);
- :mod:`flagcore.cli.output`: printing results, progress bars and pipeline stages;
- the command groups, each with ``register(subparsers, parents)``: :mod:`~flagcore.cli.models`
  (info, import, init, predict, diagnose), :mod:`~flagcore.cli.data` (check-data, market, features),
  :mod:`~flagcore.cli.training` (train, train-cgdt, walk-forward), :mod:`~flagcore.cli.runs`
  (evaluate, demo, runs), :mod:`~flagcore.cli.review` (report, review, validate),
  :mod:`~flagcore.cli.gate` (gate) and :mod:`~flagcore.cli.store_commands` (store backup, restore, check).

The console script is ``flagcore.cli:run`` (``main``, then a quick exit).
"""

from flagcore.cli.command import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
