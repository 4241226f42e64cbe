"""The store's schema: its tables, the migrations that build them, and bulk inserts by name.

The schema is versioned (``meta.schema_version``); ``MIGRATIONS`` lists every step from an empty
file, and :func:`migrate` applies the steps above a file's version, each in its own transaction.
:func:`insert_frame` writes a DataFrame into one of the tables created here, never any other.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from flagcore.errors import FlagcoreError

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "initial schema",
        [
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
            run_id INTEGER, period VARCHAR, bar INTEGER, timestamp TIMESTAMPTZ, close DOUBLE,
            label TINYINT)""",
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
            "CREATE TABLE cpcv_paths (run_id INTEGER, option VARCHAR, mode VARCHAR, path INTEGER, "
            "sharpe DOUBLE)",
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
        ],
    ),
    (
        2,
        "runs.request_key: what a run was asked to compute, so a repeated request reuses it",
        [
            "ALTER TABLE runs ADD COLUMN request_key VARCHAR",
            "CREATE INDEX runs_request_key ON runs (request_key)",
            "CREATE INDEX predictions_run ON predictions (run_id, option)",
        ],
    ),
    (
        3,
        "reviews.identity_source (older reviews read 'typed'), runs.author (older runs: NULL)",
        [
            "ALTER TABLE reviews ADD COLUMN identity_source VARCHAR DEFAULT 'typed'",
            "ALTER TABLE runs ADD COLUMN author VARCHAR",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# tables holding one run's results: what a run id owns
RUN_TABLES = (
    "run_models",
    "run_bars",
    "predictions",
    "option_results",
    "diagnostics",
    "cpcv_paths",
    "hifa_criteria",
    "permutation_nulls",
    "sweeps",
)

# the mode of the CPCV paths that retraining CPCV appends to a run, and its diagnostics section
RETRAIN_MODE = "retraining"
RETRAIN_SECTION = "retrain_cpcv"


def _tables(statements: list[str]) -> list[str]:
    out = []
    for s in statements:
        words = s.split()
        if words[:2] == ["CREATE", "TABLE"]:
            out.append(words[2])
    return out


# every table the migrations create: the only names :func:`insert_frame` accepts
TABLES = frozenset(t for _, _, sts in MIGRATIONS for t in _tables(sts))


def read_schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version recorded in an open store; 0 for an empty file."""
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
    ).fetchall()[0][0]
    if not has_meta:
        return 0
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else 0


def migrate(con: duckdb.DuckDBPyConnection, target: int = SCHEMA_VERSION) -> int:
    """Apply the migrations above the store's version up to ``target``, each in its own
    transaction; returns the version reached."""
    version = read_schema_version(con)
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


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, df: pd.DataFrame) -> None:
    """Bulk insert a DataFrame by column name (``table`` is one of ours, never user text)."""
    if table not in TABLES:
        raise FlagcoreError(f"unknown table {table!r}")
    if df.empty:
        return
    con.register("_flagcore_rows", df)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _flagcore_rows")
    finally:
        con.unregister("_flagcore_rows")
