"""The options several commands share, defined once as argparse parent parsers, and what they build.

``--json``, ``--quiet``, ``--store``, ``--device`` and the placement options (``--workers``,
``--ray-address``, ``--task-cpus``) are parent parsers in :class:`Parents`; a command takes the ones
it has with :func:`add_command`. :func:`open_store` and :func:`placement` turn the parsed values into
the objects the pipeline takes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flagcore.store.store import Store
    from flagcore.training.tasks import Placement

    # what ``ArgumentParser.add_subparsers`` returns
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

Command = Callable[[argparse.Namespace], int]

# the built-in FLAG-TRADER configurations (flagcore.models.flag_trader.PRESETS, which loads torch)
PRESET_NAMES = ("full", "demo")


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def _flag(name: str, help: str | None) -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument(name, action="store_true", help=help)
    return p


def _placement_parent(what: str, default_workers: int) -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers,
        help=f"local worker processes for {what} (default {default_workers})",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help=f"run {what} as tasks on a Ray cluster: 'local', 'auto', host:port or "
        "ray://host:port (pip install 'flagcore[ray]')",
    )
    p.add_argument("--task-cpus", type=int, default=1, help="with --ray-address: CPUs per task (default 1)")
    return p


def _store_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument(
        "--store",
        metavar="PATH",
        help="DuckDB result store (default $FLAGCORE_STORE or data/flagcore.duckdb)",
    )
    return p


def _device_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    return p


@dataclass(frozen=True)
class Parents:
    """The shared options, one parent parser each; a command lists the ones it has.

    ``--json`` and ``--quiet`` say in their help what they change for the command, so each has a
    few wordings; the flag, its action and its default are the same in all of them.
    """

    json: argparse.ArgumentParser  # --json: print JSON
    json_summary: argparse.ArgumentParser  # --json: print a JSON summary (a command that writes a file)
    quiet: argparse.ArgumentParser  # --quiet: no progress bars (a pipeline's stages)
    quiet_bar: argparse.ArgumentParser  # --quiet: no progress bar (one loop)
    quiet_epochs: argparse.ArgumentParser  # --quiet: no per-epoch lines
    quiet_blocks: argparse.ArgumentParser  # --quiet: no per-block lines
    store: argparse.ArgumentParser  # --store PATH
    device: argparse.ArgumentParser  # --device
    inference_placement: argparse.ArgumentParser  # --workers (1), --ray-address, --task-cpus
    retraining_placement: argparse.ArgumentParser  # --workers (2), --ray-address, --task-cpus


def make_parents() -> Parents:
    """Every shared parent parser, built once per :func:`flagcore.cli.build_parser`."""
    return Parents(
        json=_flag("--json", "print JSON"),
        json_summary=_flag("--json", "print a JSON summary"),
        quiet=_flag("--quiet", "no progress bars"),
        quiet_bar=_flag("--quiet", "no progress bar"),
        quiet_epochs=_flag("--quiet", "no per-epoch progress"),
        quiet_blocks=_flag("--quiet", "no per-block progress"),
        store=_store_parent(),
        device=_device_parent(),
        inference_placement=_placement_parent("the checkpoints' inference", default_workers=1),
        retraining_placement=_placement_parent("the retraining splits", default_workers=2),
    )


def add_command(
    subparsers: Subparsers,
    name: str,
    func: Command,
    help: str,
    arguments: Callable[[argparse.ArgumentParser], None],
    *shared: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """Add the subcommand ``name``: its own ``arguments`` first, then the ``shared`` parents in order.

    Parameters
    ----------
    subparsers
        What ``ArgumentParser.add_subparsers`` returned.
    name, func, help
        The command's name, the function that runs it, and its one-line help (also its description).
    arguments
        Adds the command's own options to the parser it is given.
    *shared
        Parent parsers from :class:`Parents`, listed after the command's own options in ``--help``.

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser.
    """
    own = _parent()
    arguments(own)
    sp = subparsers.add_parser(name, help=help, description=help, parents=[own, *shared])
    sp.set_defaults(func=func)
    return sp


def config_argument(s: argparse.ArgumentParser, what: str) -> None:
    """``--config TOML``: the team config file, its sections ``what`` says (default ``$FLAGCORE_CONFIG``)."""
    s.add_argument(
        "--config",
        metavar="TOML",
        help=f"team config file: {what} (default $FLAGCORE_CONFIG; none: defaults)",
    )


def open_store(args: argparse.Namespace) -> Store:
    """The result store ``--store`` names (default ``$FLAGCORE_STORE`` or data/flagcore.duckdb)."""
    from flagcore.store.store import Store

    return Store(args.store)


def placement(args: argparse.Namespace) -> Placement:
    """Where tasks run, from ``--workers``, ``--ray-address`` and ``--task-cpus`` (checked here)."""
    from flagcore.training.tasks import Placement

    return Placement(workers=args.workers, ray_address=args.ray_address, task_cpus=args.task_cpus)
