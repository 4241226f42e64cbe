"""``flagcore store backup | restore | check``: keep a copy of the store, and get it back.

- ``backup --to DIR``: the whole store (DuckDB's EXPORT DATABASE, Parquet) and a copy of the review
  log, into a new folder;
- ``restore --from DIR``: the backup, plus every review of the review log (``<store>.reviews.jsonl``
  or ``--reviews-log``) that it lacks, put in the store's place; the damaged file is kept beside it;
- ``check``: opens the store, checks its schema and reads every table; exit 0 or 1, one line.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from flagcore.cli.options import Parents, add_command, open_store
from flagcore.cli.output import emit

if TYPE_CHECKING:
    from flagcore.cli.options import Subparsers


def cmd_backup(args: argparse.Namespace) -> int:
    from flagcore.store.backup import backup

    res = backup(open_store(args), args.to)
    what = f"{res['runs']} runs and {res['reviews']} reviews (schema v{res['schema_version']})"
    emit(res, args.json, [f"backed up {what} to {res['backup']}"])
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from flagcore.store.backup import restore

    res = restore(open_store(args), args.from_dir, reviews_log=args.reviews_log, force=args.force)
    lines = [
        f"restored {res['store']} from {res['from']}: {res['runs']} runs, {res['reviews']} reviews "
        f"({res['from_log']} of them from the review log)"
    ]
    if res["set_aside"]:
        lines.append(f"the replaced file is kept as {res['set_aside']}")
    lines += [f"not restored: {s}" for s in res["skipped"]]
    emit(res, args.json, lines)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from flagcore.store.backup import check

    res = check(open_store(args))
    emit(asdict(res), args.json, [res.line])
    return 0 if res.ok else 1


def _backup_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--to", required=True, metavar="DIR", help="a new (or empty) folder for the backup")


def _restore_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--from", dest="from_dir", required=True, metavar="DIR", help="a `store backup` folder")
    s.add_argument(
        "--reviews-log",
        metavar="FILE",
        help="the review log to add missing reviews from (default <store>.reviews.jsonl)",
    )
    s.add_argument("--force", action="store_true", help="replace a store that is not damaged")


def _no_arguments(s: argparse.ArgumentParser) -> None:
    """``check`` has only shared options."""


def register(sub: Subparsers, parents: Parents) -> None:
    """Add ``store`` with its actions ``backup``, ``restore`` and ``check``."""
    help = "Back up, restore or check the result store (and its review log)."
    sp = sub.add_parser("store", help=help, description=help)
    actions = sp.add_subparsers(dest="store_action", required=True, metavar="ACTION")
    add_command(
        actions,
        "backup",
        cmd_backup,
        "Export the store (every table, Parquet) and its review log into a new folder.",
        _backup_arguments,
        parents.store,
        parents.json,
    )
    add_command(
        actions,
        "restore",
        cmd_restore,
        "Restore the store from a backup, adding the reviews of the review log the backup lacks.",
        _restore_arguments,
        parents.store,
        parents.json,
    )
    add_command(
        actions,
        "check",
        cmd_check,
        "Open the store, check its schema, read every table, compare with the review log: exit 0 or 1.",
        _no_arguments,
        parents.store,
        parents.json,
    )
