"""The DuckDB result store: every dataset, model, run, prediction, verdict and review.

One file (default ``data/flagcore.duckdb``; ``--store`` or ``FLAGCORE_STORE`` override it).
DuckDB lets one process hold a file read-write or many hold it read-only, never both, so:

- every connection is short-lived: opened for one read or one write and closed at once;
- reads open read-only; a write computes everything first and then holds the file for one
  transaction, so an interrupted write leaves nothing behind;
- both retry on DuckDB's lock error with exponential backoff, up to ``busy_timeout`` seconds,
  then raise :class:`StoreBusy` with a one-line message.

The schema is versioned (``meta.schema_version``) and brought up to date by ``MIGRATIONS``
(:mod:`flagcore.store.schema`) the first time a newer flagcore writes to an older file. Reviews
are append-only: the API has no update or delete, and nothing else in flagcore issues one. All SQL
takes values as parameters; bulk rows go in through registered DataFrames. Every query and every
write of flagcore is a method here: the run writer and retraining CPCV's appends included.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from flagcore.errors import FlagcoreError
from flagcore.store.codec import from_json, to_json, utc_now
from flagcore.store.schema import (
    RETRAIN_MODE,
    RETRAIN_SECTION,
    RUN_TABLES,
    SCHEMA_VERSION,
    insert_frame,
    migrate,
    read_schema_version,
)
from flagcore.vocab import VERDICTS

DEFAULT_PATH = Path("data") / "flagcore.duckdb"
ENV_VAR = "FLAGCORE_STORE"
MAX_REVIEWER = 200
MAX_COMMENT = 20_000


class StoreBusy(FlagcoreError):
    """The store stayed locked by another process for longer than the busy timeout."""


def default_path() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def _is_lock_error(e: BaseException) -> bool:
    msg = str(e)
    return "Could not set lock" in msg or "Conflicting lock" in msg or "database is locked" in msg


@dataclass
class RunRows:
    """One run as the store's rows, everything computed: :meth:`Store.write_run` writes it in one
    transaction.

    ``datasets`` rows carry their JSON columns already as text (``to_json``); ``models`` rows carry
    ``config`` and ``provenance`` as dicts. ``tables`` maps each run table (``RUN_TABLES``) to its
    rows without ``run_id``, in the order they are written.
    """

    name: str
    request_key: str
    flagcore_version: str
    model_id: str  # the baseline model's id
    dataset_id: str  # the evaluated dataset's id
    train_dataset_id: str | None
    settings: dict
    summary: dict
    datasets: list[dict]
    models: list[dict]
    tables: dict[str, pd.DataFrame]


_CURRENT: set[str] = set()  # store files (path, inode, mtime) this process has seen at SCHEMA_VERSION


class Store:
    """A DuckDB result store at ``path`` (see the module docstring for the locking rules)."""

    def __init__(self, path: str | os.PathLike | None = None, *, busy_timeout: float | None = None):
        self.path = Path(path) if path is not None else default_path()
        if busy_timeout is None:
            env_timeout = os.environ.get("FLAGCORE_BUSY_TIMEOUT", "30")
            try:
                busy_timeout = float(env_timeout)
            except ValueError:
                raise FlagcoreError(
                    f"FLAGCORE_BUSY_TIMEOUT must be a number of seconds, got {env_timeout!r}"
                ) from None
        self.busy_timeout = float(busy_timeout)

    def _version_key(self) -> str | None:
        # the file's identity and modification time: any write (a migration by a newer flagcore
        # included) makes this process check the schema again, plain reads do not
        try:
            st = self.path.stat()
        except OSError:
            return None
        return f"{self.path.resolve()}:{st.st_ino}:{st.st_mtime_ns}"

    def version(self) -> str:
        """The file's version: identity, size and modification time of the store file and of its
        write-ahead log. Every write changes it, so a cache keyed on it never serves a stale read."""
        parts = []
        for p in (self.path, Path(f"{self.path}.wal")):
            try:
                s = p.stat()
            except OSError:
                parts.append("-")
                continue
            parts.append(f"{s.st_ino}:{s.st_size}:{s.st_mtime_ns}")
        return "/".join(parts)

    @property
    def _schema_checked(self) -> bool:
        key = self._version_key()
        return key is not None and key in _CURRENT

    @_schema_checked.setter
    def _schema_checked(self, value: bool) -> None:
        key = self._version_key()
        if key is not None and value:
            _CURRENT.add(key)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # ------------------------------------------------------------------ connections

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.02
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as e:
                if not _is_lock_error(e):
                    first = str(e).splitlines()[0] if str(e) else type(e).__name__
                    raise FlagcoreError(f"{self.path}: cannot open the store ({first})") from None
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"{self.path}: the store is busy (another flagcore process holds it) for over "
                        f"{self.busy_timeout:g} s; try again when that process has finished"
                    ) from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived read-only connection; the store must exist (see :meth:`ensure`)."""
        if not self.exists():
            raise FlagcoreError(
                f"{self.path}: no store here yet; run `flagcore demo` or `flagcore evaluate` first"
            )
        if not self._schema_checked:
            self.ensure()
        con = self._connect(read_only=True)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction on a read-write connection: committed on success, rolled back on any
        exception (KeyboardInterrupt included), and the file released at once either way."""
        self.ensure()
        con = self._connect(read_only=False)
        try:
            con.begin()
            try:
                yield con
                con.commit()
            except BaseException:
                con.rollback()
                raise
        finally:
            con.close()

    def ensure(self) -> None:
        """Create the store or migrate it to ``SCHEMA_VERSION``."""
        if self._schema_checked:
            return
        if self.exists():
            con = self._connect(read_only=True)
            try:
                version = read_schema_version(con)
            finally:
                con.close()
            if version == SCHEMA_VERSION:
                self._schema_checked = True
                return
            if version > SCHEMA_VERSION:
                raise FlagcoreError(
                    f"{self.path}: store schema v{version} is newer than this flagcore "
                    f"(v{SCHEMA_VERSION}); upgrade flagcore"
                )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect(read_only=False)
        try:
            migrate(con)
        finally:
            con.close()
        self._schema_checked = True

    def schema_version(self) -> int:
        if not self.exists():
            return 0
        con = self._connect(read_only=True)
        try:
            return read_schema_version(con)
        finally:
            con.close()

    # ------------------------------------------------------------------ reads

    def _frame(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        with self.read() as con:
            return con.execute(sql, list(params or [])).df()

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Any read-only SQL as a DataFrame (kept for the CLI and the dashboard; to be removed)."""
        return self._frame(sql, params)

    def list_runs(self) -> pd.DataFrame:
        """One row per run, newest first, with its baseline's collapse verdict and latest review."""
        if not self.exists():
            return pd.DataFrame(
                columns=[
                    "run_id",
                    "name",
                    "created_at",
                    "model_id",
                    "dataset_id",
                    "summary",
                    "latest_verdict",
                    "latest_reviewer",
                ]
            )
        return self._frame("""
            SELECT r.run_id, r.name, r.created_at, r.model_id, r.dataset_id, r.summary, r.settings,
                   lr.verdict AS latest_verdict, lr.reviewer AS latest_reviewer, lr.created_at AS reviewed_at
            FROM runs r
            LEFT JOIN (SELECT run_id, verdict, reviewer, created_at,
                              row_number() OVER (PARTITION BY run_id ORDER BY review_id DESC) AS k
                       FROM reviews) lr ON lr.run_id = r.run_id AND lr.k = 1
            ORDER BY r.run_id DESC""")

    def run(self, run_id: int) -> dict:
        df = self._frame("SELECT * FROM runs WHERE run_id = ?", [int(run_id)])
        if df.empty:
            raise FlagcoreError(f"{self.path}: no run {run_id}")
        row = df.iloc[0].to_dict()
        for k in ("settings", "summary"):
            row[k] = from_json(row[k])
        return row

    def option_results(self, run_id: int | None = None) -> pd.DataFrame:
        """Each option's metrics in one run, or in every run (``run_id`` None), in table order."""
        if run_id is None:
            df = self._frame("SELECT * FROM option_results ORDER BY run_id, ordinal")
        else:
            df = self._frame("SELECT * FROM option_results WHERE run_id = ? ORDER BY ordinal", [int(run_id)])
        df["metrics"] = df["metrics"].map(from_json)
        return df

    def hifa(self, run_id: int | None = None) -> pd.DataFrame:
        """Each option's HIFA criteria in one run, or in every run (``run_id`` None)."""
        where, params = ("", []) if run_id is None else ("WHERE run_id = ?", [int(run_id)])
        df = self._frame(
            f"""SELECT h.* FROM hifa_criteria h JOIN option_results o USING (run_id, option)
                            {where} ORDER BY run_id, o.ordinal, h.criterion""",
            params,
        )
        df["inputs"] = df["inputs"].map(from_json)
        return df

    def diagnostics(self, run_id: int, option: str = "baseline") -> dict:
        df = self._frame(
            "SELECT section, value FROM diagnostics WHERE run_id = ? AND option = ?", [int(run_id), option]
        )
        return {s: from_json(v) for s, v in zip(df["section"], df["value"], strict=True)}

    def predictions(self, run_id: int, option: str, period: str = "test") -> pd.DataFrame:
        return self._frame(
            """SELECT p.*, b.timestamp, b.close, b.label FROM predictions p
                             JOIN run_bars b USING (run_id, period, bar)
                             WHERE p.run_id = ? AND p.option = ? AND p.period = ? ORDER BY p.bar""",
            [int(run_id), option, period],
        )

    def equity_curves(self, run_id: int) -> pd.DataFrame:
        return self._frame(
            """SELECT p.option, b.timestamp, p.equity FROM predictions p
                              JOIN run_bars b USING (run_id, period, bar)
                              WHERE p.run_id = ? AND p.period = 'test' ORDER BY p.option, p.bar""",
            [int(run_id)],
        )

    def bars(self, run_id: int, period: str = "test") -> pd.DataFrame:
        return self._frame(
            "SELECT * FROM run_bars WHERE run_id = ? AND period = ? ORDER BY bar", [int(run_id), period]
        )

    def cpcv_paths(self, run_id: int) -> pd.DataFrame:
        return self._frame(
            "SELECT * FROM cpcv_paths WHERE run_id = ? ORDER BY option, mode, path", [int(run_id)]
        )

    def permutation_null(self, run_id: int, option: str) -> dict | None:
        df = self._frame(
            "SELECT * FROM permutation_nulls WHERE run_id = ? AND option = ?", [int(run_id), option]
        )
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        row["null_sharpes"] = np.asarray(row["null_sharpes"], dtype=np.float64)
        return row

    def sweeps(self, run_id: int) -> pd.DataFrame:
        return self._frame("SELECT * FROM sweeps WHERE run_id = ? ORDER BY parameter, value", [int(run_id)])

    def run_models(self, run_id: int) -> pd.DataFrame:
        return self._frame(
            """SELECT rm.role, m.* FROM run_models rm JOIN models m USING (model_id)
                             WHERE rm.run_id = ? ORDER BY rm.role""",
            [int(run_id)],
        )

    def dataset(self, dataset_id: str) -> dict | None:
        df = self._frame("SELECT * FROM datasets WHERE dataset_id = ?", [dataset_id])
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        for k in ("feature_names", "padded_inputs", "label_shares"):
            row[k] = from_json(row[k])
        return row

    def reviews(self, run_id: int | None = None) -> pd.DataFrame:
        if run_id is None:
            df = self._frame("SELECT * FROM reviews ORDER BY review_id")
        else:
            df = self._frame("SELECT * FROM reviews WHERE run_id = ? ORDER BY review_id", [int(run_id)])
        df["hifa_snapshot"] = df["hifa_snapshot"].map(from_json)
        return df

    def find_run(self, request_key: str) -> int | None:
        if not self.exists():
            return None
        df = self._frame("SELECT max(run_id) AS run_id FROM runs WHERE request_key = ?", [request_key])
        v = df["run_id"].iloc[0]
        return None if pd.isna(v) else int(v)

    def cached_logits(self, model_id: str, dataset_id: str, settings: str) -> pd.DataFrame | None:
        if not self.exists():
            return None
        df = self._frame(
            """SELECT bar, logit_sell, logit_hold, logit_buy, short_history FROM inference_cache
                           WHERE model_id = ? AND dataset_id = ? AND settings = ? ORDER BY bar""",
            [model_id, dataset_id, settings],
        )
        return None if df.empty else df

    def options_with_cpcv_mode(self, run_id: int, mode: str) -> set[str]:
        """The options of a run that have CPCV paths of ``mode`` (e.g. ``RETRAIN_MODE``) stored."""
        df = self._frame(
            "SELECT DISTINCT option FROM cpcv_paths WHERE run_id = ? AND mode = ?", [int(run_id), mode]
        )
        return set(df["option"])

    # ------------------------------------------------------------------ writes

    def write_run(self, rows: RunRows, *, fail_after: str | None = None) -> int:
        """Write one run, its datasets and models (those not stored yet) in one transaction.

        Parameters
        ----------
        rows : RunRows
            The run's rows, all computed beforehand.
        fail_after : str, optional
            Tests only: raise after the named run table is written, to check that nothing of the
            run survives.

        Returns
        -------
        int
            The new run's id.
        """
        unknown = [t for t in rows.tables if t not in RUN_TABLES]
        if unknown:
            raise FlagcoreError(f"not a run table: {unknown[0]!r}")
        with self.write() as con:
            for rec in rows.datasets:
                _insert_dataset(con, rec)
            for rec in rows.models:
                _insert_model(con, rec)
            run_id = _insert_run(con, rows)
            for table, df in rows.tables.items():
                df = df.copy()
                df.insert(0, "run_id", run_id)
                insert_frame(con, table, df)
                if fail_after == table:
                    raise RuntimeError(f"injected failure after writing {table}")
        return int(run_id)

    def append_retraining(self, run_id: int, option: str, path_sharpes: Sequence[float], info: dict) -> bool:
        """Append one option's retraining-CPCV path Sharpes and their record to a run.

        Returns False, writing nothing, when another process stored this option's retraining
        paths meanwhile (theirs are kept).
        """
        rows = pd.DataFrame(
            {
                "run_id": int(run_id),
                "option": option,
                "mode": RETRAIN_MODE,
                "path": np.arange(len(path_sharpes)),
                "sharpe": np.asarray(path_sharpes),
            }
        )
        with self.write() as con:
            again = con.execute(
                "SELECT count(*) FROM cpcv_paths WHERE run_id = ? AND option = ? AND mode = ?",
                [int(run_id), option, RETRAIN_MODE],
            ).fetchall()[0][0]
            if again:
                return False
            insert_frame(con, "cpcv_paths", rows)
            con.execute(
                "INSERT INTO diagnostics VALUES (?, ?, ?, ?)",
                [int(run_id), option, RETRAIN_SECTION, to_json(info)],
            )
        return True

    def put_inference(
        self, model_id: str, dataset_id: str, settings: str, logits: np.ndarray, short_history: np.ndarray
    ) -> None:
        df = pd.DataFrame(
            {
                "model_id": model_id,
                "dataset_id": dataset_id,
                "settings": settings,
                "bar": np.arange(len(logits), dtype=np.int32),
                "logit_sell": logits[:, 0],
                "logit_hold": logits[:, 1],
                "logit_buy": logits[:, 2],
                "short_history": np.asarray(short_history, dtype=bool),
            }
        )
        with self.write() as con:
            exists = con.execute(
                "SELECT count(*) FROM inference_cache WHERE model_id = ? AND dataset_id = ? AND settings = ?",
                [model_id, dataset_id, settings],
            ).fetchall()[0][0]
            if not exists:
                insert_frame(con, "inference_cache", df)

    def add_review(self, run_id: int, reviewer: str, verdict: str, comment: str = "") -> int:
        """Append a review with a snapshot of the run's HIFA verdicts; returns its id."""
        reviewer = (reviewer or "").strip()
        if not reviewer:
            raise FlagcoreError("reviewer: a name is required")
        if len(reviewer) > MAX_REVIEWER:
            raise FlagcoreError(f"reviewer: at most {MAX_REVIEWER} characters, got {len(reviewer)}")
        if verdict not in VERDICTS:
            raise FlagcoreError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        comment = comment or ""
        if len(comment) > MAX_COMMENT:
            raise FlagcoreError(f"comment: at most {MAX_COMMENT} characters, got {len(comment)}")
        with self.write() as con:
            if not con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [int(run_id)]).fetchall()[0][0]:
                raise FlagcoreError(f"{self.path}: no run {run_id}")
            snap = con.execute(
                """SELECT option, criterion, value, threshold, passed FROM hifa_criteria
                                  WHERE run_id = ? ORDER BY option, criterion""",
                [int(run_id)],
            ).fetchall()
            snapshot = [
                {"option": o, "criterion": c, "value": v, "threshold": t, "passed": p}
                for o, c, v, t, p in snap
            ]
            rid = con.execute(
                """INSERT INTO reviews (run_id, reviewer, verdict, comment, created_at, hifa_snapshot)
                   VALUES (?, ?, ?, ?, ?, ?) RETURNING review_id""",
                [int(run_id), reviewer, verdict, comment, utc_now(), to_json(snapshot)],
            ).fetchall()[0][0]
        return int(rid)


def _insert_dataset(con: duckdb.DuckDBPyConnection, rec: dict) -> None:
    con.execute(
        """INSERT INTO datasets SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
                   WHERE NOT EXISTS (SELECT 1 FROM datasets WHERE dataset_id = ?)""",
        [
            rec["dataset_id"],
            rec["source"],
            rec["bars"],
            rec["evaluated_bars"],
            rec["features"],
            rec["state_dim"],
            rec["feature_names"],
            rec["padded_inputs"],
            rec["label_horizon"],
            rec["label_shares"],
            rec["first_timestamp"],
            rec["last_timestamp"],
            rec["evaluation_start"],
            utc_now(),
            rec["dataset_id"],
        ],
    )


def _insert_model(con: duckdb.DuckDBPyConnection, r: dict) -> None:
    con.execute(
        """INSERT INTO models SELECT ?, ?, ?, ?, ?, ?, ?, ?
                   WHERE NOT EXISTS (SELECT 1 FROM models WHERE model_id = ?)""",
        [
            r["model_id"],
            r["kind"],
            r["source"],
            to_json(r["config"]),
            r["total_parameters"],
            r["trainable_parameters"],
            to_json(r["provenance"]),
            utc_now(),
            r["model_id"],
        ],
    )


def _insert_run(con: duckdb.DuckDBPyConnection, rows: RunRows) -> int:
    return con.execute(
        """INSERT INTO runs (name, created_at, model_id, dataset_id, train_dataset_id, settings, summary,
                             flagcore_version, request_key)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING run_id""",
        [
            rows.name,
            utc_now(),
            rows.model_id,
            rows.dataset_id,
            rows.train_dataset_id,
            to_json(rows.settings),
            to_json(rows.summary),
            rows.flagcore_version,
            rows.request_key,
        ],
    ).fetchall()[0][0]
