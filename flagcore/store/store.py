"""The DuckDB result store: every dataset, model, run, prediction, verdict and review.

One file (default ``data/flagcore.duckdb``; ``--store`` or ``FLAGCORE_STORE`` override it).
DuckDB lets one process hold a file read-write or many hold it read-only, never both, so:

- every connection is short-lived: opened for one read or one write and closed at once;
- reads open read-only; a write computes everything first and then holds the file for one
  transaction, so an interrupted write leaves nothing behind;
- both retry on DuckDB's lock error with exponential backoff, up to ``busy_timeout`` seconds,
  then raise :class:`StoreBusy` with a one-line message.

The schema is versioned (``meta.schema_version``) and brought up to date by ``MIGRATIONS`` the
first time a newer flagcore writes to an older file. Reviews are append-only: the API has no
update or delete, and nothing else in flagcore issues one. All SQL takes values as parameters;
bulk rows go in through registered DataFrames.
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from flagcore.errors import FlagcoreError

DEFAULT_PATH = Path("data") / "flagcore.duckdb"
ENV_VAR = "FLAGCORE_STORE"
VERDICTS = ("approve", "reject", "needs-work")
MAX_REVIEWER = 200
MAX_COMMENT = 20_000

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial schema", [
        "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        """CREATE TABLE datasets (
            dataset_id VARCHAR PRIMARY KEY,      -- sha256 of the file's content
            source VARCHAR, bars INTEGER, evaluated_bars INTEGER, features INTEGER, state_dim INTEGER,
            feature_names JSON, padded_inputs JSON, label_horizon INTEGER, label_shares JSON,
            first_timestamp TIMESTAMPTZ, last_timestamp TIMESTAMPTZ, evaluation_start TIMESTAMPTZ,
            created_at TIMESTAMPTZ)""",
        """CREATE TABLE models (
            model_id VARCHAR PRIMARY KEY,        -- sha256 of the checkpoint file, or of a predictions file
            kind VARCHAR,                        -- flag-trader, cgdt, predictions
            source VARCHAR, config JSON, total_parameters BIGINT, trainable_parameters BIGINT,
            provenance JSON, created_at TIMESTAMPTZ)""",
        """CREATE TABLE inference_cache (
            model_id VARCHAR, dataset_id VARCHAR, settings VARCHAR,
            bar INTEGER, logit_sell DOUBLE, logit_hold DOUBLE, logit_buy DOUBLE, short_history BOOLEAN)""",
        "CREATE SEQUENCE run_ids START 1",
        """CREATE TABLE runs (
            run_id INTEGER PRIMARY KEY DEFAULT nextval('run_ids'),
            name VARCHAR, created_at TIMESTAMPTZ, model_id VARCHAR, dataset_id VARCHAR,
            train_dataset_id VARCHAR, settings JSON, summary JSON, flagcore_version VARCHAR)""",
        "CREATE TABLE run_models (run_id INTEGER, role VARCHAR, model_id VARCHAR)",
        """CREATE TABLE run_bars (
            run_id INTEGER, period VARCHAR, bar INTEGER, timestamp TIMESTAMPTZ, close DOUBLE, label TINYINT)""",
        """CREATE TABLE predictions (
            run_id INTEGER, option VARCHAR, period VARCHAR, bar INTEGER,
            logit_sell DOUBLE, logit_hold DOUBLE, logit_buy DOUBLE,
            action TINYINT, confidence DOUBLE, position DOUBLE, net_return DOUBLE, equity DOUBLE)""",
        """CREATE TABLE option_results (
            run_id INTEGER, option VARCHAR, ordinal INTEGER, title VARCHAR, description VARCHAR,
            share_sell DOUBLE, share_hold DOUBLE, share_buy DOUBLE,
            accuracy DOUBLE, balanced_accuracy DOUBLE, macro_f1 DOUBLE,
            trades INTEGER, total_return DOUBLE, sharpe DOUBLE, sharpe_defined BOOLEAN, max_drawdown DOUBLE,
            hifa_passed INTEGER, metrics JSON)""",
        "CREATE TABLE diagnostics (run_id INTEGER, option VARCHAR, section VARCHAR, value JSON)",
        "CREATE TABLE cpcv_paths (run_id INTEGER, option VARCHAR, mode VARCHAR, path INTEGER, sharpe DOUBLE)",
        """CREATE TABLE hifa_criteria (
            run_id INTEGER, option VARCHAR, criterion VARCHAR, value DOUBLE, threshold DOUBLE,
            rule VARCHAR, passed BOOLEAN, inputs JSON)""",
        """CREATE TABLE permutation_nulls (
            run_id INTEGER, option VARCHAR, observed_sharpe DOUBLE, p_value DOUBLE, block INTEGER,
            null_sharpes DOUBLE[])""",
        """CREATE TABLE sweeps (
            run_id INTEGER, parameter VARCHAR, value DOUBLE, trades INTEGER, sharpe DOUBLE,
            total_return DOUBLE, share_hold DOUBLE)""",
        "CREATE SEQUENCE review_ids START 1",
        """CREATE TABLE reviews (
            review_id INTEGER PRIMARY KEY DEFAULT nextval('review_ids'),
            run_id INTEGER, reviewer VARCHAR, verdict VARCHAR, comment VARCHAR, created_at TIMESTAMPTZ,
            hifa_snapshot JSON)""",
    ]),
    (2, "runs.request_key: what a run was asked to compute, so a repeated request reuses it", [
        "ALTER TABLE runs ADD COLUMN request_key VARCHAR",
        "CREATE INDEX runs_request_key ON runs (request_key)",
        "CREATE INDEX predictions_run ON predictions (run_id, option)",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# tables holding one run's results: what a run id owns
RUN_TABLES = ("run_models", "run_bars", "predictions", "option_results", "diagnostics", "cpcv_paths",
              "hifa_criteria", "permutation_nulls", "sweeps")


class StoreBusy(FlagcoreError):
    """The store stayed locked by another process for longer than the busy timeout."""


def default_path() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def _is_lock_error(e: BaseException) -> bool:
    msg = str(e)
    return "Could not set lock" in msg or "Conflicting lock" in msg or "database is locked" in msg


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_json(value) -> str:
    """JSON with numpy scalars and arrays converted; NaN and inf become null (JSON has neither)."""

    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, (pd.Timestamp, datetime)):
            return o.isoformat()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    def clean(o):
        if isinstance(o, float) and not np.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        if isinstance(o, np.generic):
            return clean(o.item())
        return o

    return json.dumps(clean(value), default=default)


def from_json(value):
    return None if value is None else json.loads(value)


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
                raise FlagcoreError(f"FLAGCORE_BUSY_TIMEOUT must be a number of seconds, got {env_timeout!r}") from None
        self.busy_timeout = float(busy_timeout)

    def _version_key(self) -> str | None:
        # the file's identity and modification time: any write (a migration by a newer flagcore
        # included) makes this process check the schema again, plain reads do not
        try:
            st = self.path.stat()
        except OSError:
            return None
        return f"{self.path.resolve()}:{st.st_ino}:{st.st_mtime_ns}"

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
                        f"{self.busy_timeout:g} s; try again when that process has finished") from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    @contextmanager
    def read(self):
        """A short-lived read-only connection; the store must exist (see :meth:`ensure`)."""
        if not self.exists():
            raise FlagcoreError(f"{self.path}: no store here yet; run `flagcore demo` or `flagcore evaluate` first")
        if not self._schema_checked:
            self.ensure()
        con = self._connect(read_only=True)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def write(self):
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
                version = _schema_version(con)
            finally:
                con.close()
            if version == SCHEMA_VERSION:
                self._schema_checked = True
                return
            if version > SCHEMA_VERSION:
                raise FlagcoreError(f"{self.path}: store schema v{version} is newer than this flagcore "
                                    f"(v{SCHEMA_VERSION}); upgrade flagcore")
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
            return _schema_version(con)
        finally:
            con.close()

    # ------------------------------------------------------------------ reads

    def query(self, sql: str, params: list | tuple | None = None) -> pd.DataFrame:
        with self.read() as con:
            return con.execute(sql, params or []).df()

    def list_runs(self) -> pd.DataFrame:
        """One row per run, newest first, with its baseline's collapse verdict and latest review."""
        if not self.exists():
            return pd.DataFrame(columns=["run_id", "name", "created_at", "model_id", "dataset_id", "summary",
                                         "latest_verdict", "latest_reviewer"])
        return self.query("""
            SELECT r.run_id, r.name, r.created_at, r.model_id, r.dataset_id, r.summary, r.settings,
                   lr.verdict AS latest_verdict, lr.reviewer AS latest_reviewer, lr.created_at AS reviewed_at
            FROM runs r
            LEFT JOIN (SELECT run_id, verdict, reviewer, created_at,
                              row_number() OVER (PARTITION BY run_id ORDER BY review_id DESC) AS k
                       FROM reviews) lr ON lr.run_id = r.run_id AND lr.k = 1
            ORDER BY r.run_id DESC""")

    def run(self, run_id: int) -> dict:
        df = self.query("SELECT * FROM runs WHERE run_id = ?", [int(run_id)])
        if df.empty:
            raise FlagcoreError(f"{self.path}: no run {run_id}")
        row = df.iloc[0].to_dict()
        for k in ("settings", "summary"):
            row[k] = from_json(row[k])
        return row

    def option_results(self, run_id: int | None = None) -> pd.DataFrame:
        """Each option's metrics in one run, or in every run (``run_id`` None), in table order."""
        if run_id is None:
            df = self.query("SELECT * FROM option_results ORDER BY run_id, ordinal")
        else:
            df = self.query("SELECT * FROM option_results WHERE run_id = ? ORDER BY ordinal", [int(run_id)])
        df["metrics"] = df["metrics"].map(from_json)
        return df

    def hifa(self, run_id: int | None = None) -> pd.DataFrame:
        """Each option's HIFA criteria in one run, or in every run (``run_id`` None)."""
        where, params = ("", []) if run_id is None else ("WHERE run_id = ?", [int(run_id)])
        df = self.query(f"""SELECT h.* FROM hifa_criteria h JOIN option_results o USING (run_id, option)
                            {where} ORDER BY run_id, o.ordinal, h.criterion""", params)
        df["inputs"] = df["inputs"].map(from_json)
        return df

    def diagnostics(self, run_id: int, option: str = "baseline") -> dict:
        df = self.query("SELECT section, value FROM diagnostics WHERE run_id = ? AND option = ?",
                        [int(run_id), option])
        return {s: from_json(v) for s, v in zip(df["section"], df["value"], strict=True)}

    def predictions(self, run_id: int, option: str, period: str = "test") -> pd.DataFrame:
        return self.query("""SELECT p.*, b.timestamp, b.close, b.label FROM predictions p
                             JOIN run_bars b USING (run_id, period, bar)
                             WHERE p.run_id = ? AND p.option = ? AND p.period = ? ORDER BY p.bar""",
                          [int(run_id), option, period])

    def equity_curves(self, run_id: int) -> pd.DataFrame:
        return self.query("""SELECT p.option, b.timestamp, p.equity FROM predictions p
                             JOIN run_bars b USING (run_id, period, bar)
                             WHERE p.run_id = ? AND p.period = 'test' ORDER BY p.option, p.bar""", [int(run_id)])

    def bars(self, run_id: int, period: str = "test") -> pd.DataFrame:
        return self.query("SELECT * FROM run_bars WHERE run_id = ? AND period = ? ORDER BY bar",
                          [int(run_id), period])

    def cpcv_paths(self, run_id: int) -> pd.DataFrame:
        return self.query("SELECT * FROM cpcv_paths WHERE run_id = ? ORDER BY option, mode, path", [int(run_id)])

    def permutation_null(self, run_id: int, option: str) -> dict | None:
        df = self.query("SELECT * FROM permutation_nulls WHERE run_id = ? AND option = ?", [int(run_id), option])
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        row["null_sharpes"] = np.asarray(row["null_sharpes"], dtype=np.float64)
        return row

    def sweeps(self, run_id: int) -> pd.DataFrame:
        return self.query("SELECT * FROM sweeps WHERE run_id = ? ORDER BY parameter, value", [int(run_id)])

    def run_models(self, run_id: int) -> pd.DataFrame:
        return self.query("""SELECT rm.role, m.* FROM run_models rm JOIN models m USING (model_id)
                             WHERE rm.run_id = ? ORDER BY rm.role""", [int(run_id)])

    def dataset(self, dataset_id: str) -> dict | None:
        df = self.query("SELECT * FROM datasets WHERE dataset_id = ?", [dataset_id])
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        for k in ("feature_names", "padded_inputs", "label_shares"):
            row[k] = from_json(row[k])
        return row

    def reviews(self, run_id: int | None = None) -> pd.DataFrame:
        if run_id is None:
            df = self.query("SELECT * FROM reviews ORDER BY review_id")
        else:
            df = self.query("SELECT * FROM reviews WHERE run_id = ? ORDER BY review_id", [int(run_id)])
        df["hifa_snapshot"] = df["hifa_snapshot"].map(from_json)
        return df

    def find_run(self, request_key: str) -> int | None:
        if not self.exists():
            return None
        df = self.query("SELECT max(run_id) AS run_id FROM runs WHERE request_key = ?", [request_key])
        v = df["run_id"].iloc[0]
        return None if pd.isna(v) else int(v)

    def cached_logits(self, model_id: str, dataset_id: str, settings: str) -> pd.DataFrame | None:
        if not self.exists():
            return None
        df = self.query("""SELECT bar, logit_sell, logit_hold, logit_buy, short_history FROM inference_cache
                           WHERE model_id = ? AND dataset_id = ? AND settings = ? ORDER BY bar""",
                        [model_id, dataset_id, settings])
        return None if df.empty else df

    # ------------------------------------------------------------------ writes

    def put_inference(self, model_id: str, dataset_id: str, settings: str, logits: np.ndarray,
                      short_history: np.ndarray) -> None:
        df = pd.DataFrame({"model_id": model_id, "dataset_id": dataset_id, "settings": settings,
                           "bar": np.arange(len(logits), dtype=np.int32),
                           "logit_sell": logits[:, 0], "logit_hold": logits[:, 1], "logit_buy": logits[:, 2],
                           "short_history": np.asarray(short_history, dtype=bool)})
        with self.write() as con:
            exists = con.execute("SELECT count(*) FROM inference_cache WHERE model_id = ? AND dataset_id = ? "
                                 "AND settings = ?", [model_id, dataset_id, settings]).fetchall()[0][0]
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
            snap = con.execute("""SELECT option, criterion, value, threshold, passed FROM hifa_criteria
                                  WHERE run_id = ? ORDER BY option, criterion""", [int(run_id)]).fetchall()
            snapshot = [{"option": o, "criterion": c, "value": v, "threshold": t, "passed": p}
                        for o, c, v, t, p in snap]
            rid = con.execute("""INSERT INTO reviews (run_id, reviewer, verdict, comment, created_at, hifa_snapshot)
                                 VALUES (?, ?, ?, ?, ?, ?) RETURNING review_id""",
                              [int(run_id), reviewer, verdict, comment, utc_now(), to_json(snapshot)]).fetchall()[0][0]
        return int(rid)


def _schema_version(con) -> int:
    has_meta = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'").fetchall()[0][0]
    if not has_meta:
        return 0
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else 0


def migrate(con, target: int = SCHEMA_VERSION) -> int:
    """Apply the migrations above the store's version up to ``target``, each in its own
    transaction; returns the version reached."""
    version = _schema_version(con)
    for number, _title, statements in MIGRATIONS:
        if number <= version or number > target:
            continue
        con.begin()
        try:
            for sql in statements:
                con.execute(sql)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(number)])
            con.commit()
        except BaseException:
            con.rollback()
            raise
        version = number
    return version


def insert_frame(con, table: str, df: pd.DataFrame) -> None:
    """Bulk insert a DataFrame by column name (``table`` is one of ours, never user text)."""
    if table not in {t for _, _, sts in MIGRATIONS for t in _tables(sts)}:
        raise FlagcoreError(f"unknown table {table!r}")
    if df.empty:
        return
    con.register("_flagcore_rows", df)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _flagcore_rows")
    finally:
        con.unregister("_flagcore_rows")


def _tables(statements: list[str]) -> list[str]:
    out = []
    for s in statements:
        words = s.split()
        if words[:2] == ["CREATE", "TABLE"]:
            out.append(words[2])
    return out
