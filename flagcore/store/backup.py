"""Backing up, checking and restoring the store file; rebuilding lost reviews from the review log.

:func:`backup` writes DuckDB's ``EXPORT DATABASE`` (the schema, one Parquet file per table) into a
new folder, with a copy of the review log. :func:`check` opens the store, checks its schema version
and reads every column of every table (so a damaged block shows), and compares the reviews with the
review log. :func:`restore` imports a backup into a new file beside the store, brings it to the
current schema, adds every review of the review log that the backup lacks (a review's key is its
run, reviewer, verdict, time and comment, so none is added twice, and none onto another run that
took its id), and only then puts it in the store's place; the file it replaces, and its write-ahead
log, are kept beside it as ``<store>.damaged-<time>``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from flagcore.errors import FlagcoreError
from flagcore.store.codec import to_json, utc_now
from flagcore.store.connection import StoreFile, review_log_path
from flagcore.store.review_log import read_review_log, review_key
from flagcore.store.schema import SCHEMA_VERSION, TABLES, migrate, read_schema_version

LOG_COPY = "reviews.jsonl"  # the review log's copy inside a backup folder


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
    reviews = con.execute("SELECT count(*) FROM reviews").fetchall()[0][0]
    return int(runs), int(reviews)


def backup(store: StoreFile, to: str | os.PathLike) -> dict:
    """Export the store into the new folder ``to`` (EXPORT DATABASE, Parquet), with a copy of the
    review log; written under a temporary name and renamed, so a folder there is a whole backup.

    Returns ``{"backup", "runs", "reviews", "schema_version"}``.
    """
    dest = Path(to)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FlagcoreError(f"{dest}: exists and is not an empty folder; name a new one")
    if not dest.parent.is_dir():
        raise FlagcoreError(f"{dest}: the folder {dest.parent} does not exist")
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    with store.read() as con:
        runs, reviews = _counts(con)
        version = read_schema_version(con)
        try:
            con.execute(f"EXPORT DATABASE {_quoted(partial.resolve())} (FORMAT parquet)")
        except duckdb.Error as e:
            shutil.rmtree(partial, ignore_errors=True)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            if str(store.path.name) in first:  # reading the store failed: it is damaged
                raise store.damaged(f"the store file is damaged ({first[:200]})") from None
            raise FlagcoreError(f"{dest}: cannot write the backup ({first})") from None
    if store.review_log.exists():
        shutil.copyfile(store.review_log, partial / LOG_COPY)
    if dest.exists():
        dest.rmdir()
    partial.rename(dest)
    return {"backup": str(dest), "runs": runs, "reviews": reviews, "schema_version": version}


@dataclass
class CheckResult:
    """What :func:`check` found: ``ok``, and one line that says so."""

    ok: bool
    line: str
    runs: int = 0
    reviews: int = 0
    missing_from_store: int = 0  # reviews in the log that the store lacks
    details: list[str] = field(default_factory=list)


def check(store: StoreFile) -> CheckResult:
    """Open the store, check its schema version, read every column of every table, and compare its
    reviews with the review log. Never raises for a damaged or lost store: says so in the line."""
    try:
        if not store.exists():
            store.refuse_if_lost()
            return CheckResult(False, f"{store.path}: no store here")
        version = store.schema_version()
        if version > SCHEMA_VERSION:
            return CheckResult(False, f"{store.path}: schema v{version} is newer than this flagcore's")
        with store.read() as con:  # brings an older schema up to date first
            for table in sorted(TABLES):
                con.execute(f"SELECT count(*), bit_xor(hash(t)) FROM {table} t").fetchall()
            runs, n_reviews = _counts(con)
            stored = {review_key(r) for r in _stored_reviews(con)}
    except FlagcoreError as e:
        return CheckResult(False, str(e))
    logged = {review_key(r) for r in read_review_log(store.review_log)}
    missing = len(logged - stored)
    text = f"{store.path}: schema v{SCHEMA_VERSION}, {runs} runs, {n_reviews} reviews"
    if missing:
        return CheckResult(
            False,
            f"{text}; {missing} reviews of the review log {store.review_log} are missing from the store: "
            f"`flagcore store restore --from BACKUP_DIR` adds them back",
            runs,
            n_reviews,
            missing,
        )
    unlogged = len(stored - logged)
    note = f" ({unlogged} from before the log)" if unlogged and logged else ""
    log = "the review log holds every review" if not unlogged else f"{len(logged)} in the review log{note}"
    return CheckResult(True, f"ok: {text}; {log}", runs, n_reviews)


def _stored_reviews(con: duckdb.DuckDBPyConnection) -> list[dict]:
    cols = ["review_id", "run_id", "reviewer", "verdict", "created_at", "comment"]
    rows = con.execute(f"SELECT {', '.join(cols)} FROM reviews").fetchall()
    return [dict(zip(cols, r, strict=True)) for r in rows]


def _add_logged_reviews(con: duckdb.DuckDBPyConnection, logged: list[dict]) -> tuple[int, list[str]]:
    """Insert the logged reviews the store lacks; (how many, why others were skipped)."""
    have = {review_key(r) for r in _stored_reviews(con)}
    ids = {r["review_id"] for r in _stored_reviews(con)}
    runs = dict(con.execute("SELECT run_id, request_key FROM runs").fetchall())
    added, skipped = 0, []
    for r in logged:
        key = review_key(r)
        if key in have:
            continue
        run_id = int(r["run_id"])
        if run_id not in runs:
            skipped.append(f"review {r.get('review_id')}: run {run_id} is not in the backup")
            continue
        if r.get("run_key") and runs[run_id] and r["run_key"] != runs[run_id]:
            skipped.append(f"review {r.get('review_id')}: run {run_id} in the backup is another run")
            continue
        rid = r.get("review_id")
        rid = int(rid) if rid is not None and int(rid) not in ids else None
        con.execute(
            """INSERT INTO reviews (review_id, run_id, reviewer, verdict, comment, created_at,
                                    hifa_snapshot, identity_source)
               VALUES (coalesce(?, nextval('review_ids')), ?, ?, ?, ?, ?, ?, ?)""",
            [
                rid,
                run_id,
                key[1],
                key[2],
                key[4],
                key[3],
                to_json(r.get("hifa_snapshot") or []),
                r.get("identity_source") or "typed",
            ],
        )
        have.add(key)
        if rid is not None:
            ids.add(rid)
        added += 1
    # the next review id must lie above every id now taken
    top = con.execute("SELECT coalesce(max(review_id), 0) FROM reviews").fetchall()[0][0]
    nxt = con.execute("SELECT nextval('review_ids')").fetchall()[0][0]
    if nxt <= top:
        con.execute("SELECT count(nextval('review_ids')) FROM range(?)", [int(top - nxt)]).fetchall()
    return added, skipped


def _set_aside(path: Path) -> Path | None:
    """Move the store file (and its write-ahead log) to ``<store>.damaged-<time>``; never delete it."""
    if not path.exists():
        return None
    stamp = utc_now().strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    path.rename(aside)
    wal = Path(f"{path}.wal")
    if wal.exists():
        wal.rename(Path(f"{aside}.wal"))
    return aside


def restore(
    store: StoreFile,
    from_dir: str | os.PathLike,
    *,
    reviews_log: str | os.PathLike | None = None,
    force: bool = False,
) -> dict:
    """Restore the store from a :func:`backup` folder, adding the reviews of the review log
    (``reviews_log``, default the one beside the store) that the backup lacks.

    A store that passes :func:`check` is replaced only with ``force``. Returns ``{"store", "from",
    "runs", "reviews", "from_log", "skipped", "set_aside"}``.
    """
    src = Path(from_dir)
    if not (src / "schema.sql").is_file() or not (src / "load.sql").is_file():
        raise FlagcoreError(
            f"{src}: not a store backup (no schema.sql and load.sql; see `flagcore store backup`)"
        )
    log = Path(reviews_log) if reviews_log is not None else review_log_path(store.path)
    if reviews_log is not None and not log.is_file():
        raise FlagcoreError(f"{log}: no such review log")
    logged = read_review_log(log)
    if store.exists() and not force and check(store).ok:
        raise FlagcoreError(
            f"{store.path}: the store is not damaged (`flagcore store check`); pass --force to replace it "
            "(the current file is kept beside it)"
        )
    store.path.parent.mkdir(parents=True, exist_ok=True)
    with store.writer_lock():
        tmp = store.path.with_name(f"{store.path.name}.restoring")
        for p in (tmp, Path(f"{tmp}.wal")):
            p.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            try:
                con.execute(f"IMPORT DATABASE {_quoted(src.resolve())}")
            except duckdb.Error as e:
                raise FlagcoreError(f"{src}: cannot import the backup ({str(e).splitlines()[0]})") from None
            migrate(con)
            con.begin()
            added, skipped = _add_logged_reviews(con, logged)
            con.commit()
            runs, reviews = _counts(con)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        aside = _set_aside(store.path)
        os.replace(tmp, store.path)
    return {
        "store": str(store.path),
        "from": str(src),
        "runs": runs,
        "reviews": reviews,
        "from_log": added,
        "skipped": skipped,
        "set_aside": None if aside is None else str(aside),
    }
