"""One run's rows, as the pipeline computed them, and the inserts that write its records.

:meth:`flagcore.store.store.Store.write_run` writes a :class:`RunRows` in one transaction with
these functions; nothing else inserts datasets, models or runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from flagcore.store.codec import to_json, utc_now


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
    author: str | None = None  # who asked for the run (not part of its request key)


def insert_dataset(con: duckdb.DuckDBPyConnection, rec: dict) -> None:
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


def insert_model(con: duckdb.DuckDBPyConnection, r: dict) -> None:
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


def insert_run(con: duckdb.DuckDBPyConnection, rows: RunRows) -> int:
    return con.execute(
        """INSERT INTO runs (name, created_at, model_id, dataset_id, train_dataset_id, settings, summary,
                             flagcore_version, request_key, author)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING run_id""",
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
            rows.author,
        ],
    ).fetchall()[0][0]
