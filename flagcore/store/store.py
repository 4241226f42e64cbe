"""The DuckDB result store: every dataset, model, run, prediction, verdict and review.

One file (default ``data/flagcore.duckdb``; ``--store`` or ``FLAGCORE_STORE`` override it), with
short-lived connections that wait out another process's lock (:mod:`flagcore.store.connection`)
and a versioned schema (:mod:`flagcore.store.schema`). Reviews
are append-only: the API has no update or delete, and nothing else in flagcore issues one. All SQL
takes values as parameters; bulk rows go in through registered DataFrames. Every query and every
write of flagcore is a method here: the run writer and retraining CPCV's appends included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flagcore.analysis.review_policy import ReviewPolicy, RunStatus, run_status
from flagcore.errors import FlagcoreError
from flagcore.store.codec import from_json, to_json, utc_now
from flagcore.store.connection import StoreFile
from flagcore.store.review_log import append_review
from flagcore.store.runs import RunRows, insert_dataset, insert_model, insert_run
from flagcore.store.schema import RETRAIN_MODE, RETRAIN_SECTION, RUN_TABLES, insert_frame
from flagcore.vocab import IDENTITY_SOURCES, VERDICTS

MAX_REVIEWER = 200
MAX_COMMENT = 20_000
# the diagnostics section (option "baseline") that ``flagcore explain`` appends to a run
ROOT_CAUSE_SECTION = "root_cause"


class Store(StoreFile):
    """A DuckDB result store at ``path``: every query and every write of flagcore."""

    # ------------------------------------------------------------------ reads

    def list_runs(self) -> pd.DataFrame:
        """One row per run, newest first, with its baseline's collapse verdict and latest review."""
        if self.absent():
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
                    "author",
                ]
            )
        return self._frame("""
            SELECT r.run_id, r.name, r.created_at, r.model_id, r.dataset_id, r.summary, r.settings, r.author,
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
        """An option's diagnostics by section; the root-cause section (several rows, one per explain)
        is read through :meth:`root_cause` so that this always gives the newest."""
        df = self._frame(
            "SELECT section, value FROM diagnostics WHERE run_id = ? AND option = ? AND section <> ?",
            [int(run_id), option, ROOT_CAUSE_SECTION],
        )
        out = {s: from_json(v) for s, v in zip(df["section"], df["value"], strict=True)}
        if option == "baseline" and (newest := self.root_cause(run_id)) is not None:
            out[ROOT_CAUSE_SECTION] = newest
        return out

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
        """Reviews in the order written, each with ``identity_source`` (older reviews: "typed")."""
        if run_id is None:
            df = self._frame("SELECT * FROM reviews ORDER BY review_id")
        else:
            df = self._frame("SELECT * FROM reviews WHERE run_id = ? ORDER BY review_id", [int(run_id)])
        df["hifa_snapshot"] = df["hifa_snapshot"].map(from_json)
        return df

    def find_run(self, request_key: str) -> int | None:
        if self.absent():
            return None
        df = self._frame("SELECT max(run_id) AS run_id FROM runs WHERE request_key = ?", [request_key])
        v = df["run_id"].iloc[0]
        return None if pd.isna(v) else int(v)

    def cached_logits(self, model_id: str, dataset_id: str, settings: str) -> pd.DataFrame | None:
        if self.absent():
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
                insert_dataset(con, rec)
            for rec in rows.models:
                insert_model(con, rec)
            run_id = insert_run(con, rows)
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

    def add_review(
        self, run_id: int, reviewer: str, verdict: str, comment: str = "", *, identity_source: str = "typed"
    ) -> int:
        """Append a review with a snapshot of the run's HIFA verdicts; returns its id.

        ``identity_source`` says where the reviewer's name came from (``vocab.IDENTITY_SOURCES``:
        "oidc" a login, "header" a trusted proxy header, "typed" a name typed in, unverified). The
        review is also appended to the review log (``<store>.reviews.jsonl``, fsynced) once its
        transaction has committed, under the same writer lock.
        """
        if identity_source not in IDENTITY_SOURCES:
            raise FlagcoreError(
                f"identity_source must be one of {', '.join(IDENTITY_SOURCES)}, got {identity_source!r}"
            )
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
        with self.writer_lock():
            review = self._insert_review(int(run_id), reviewer, verdict, comment, identity_source)
            try:
                append_review(self.review_log, review)
            except OSError as e:
                raise FlagcoreError(
                    f"{self.review_log}: review {review['review_id']} is stored, but the review log "
                    f"could not be written ({e.strerror or e}); do not sign again"
                ) from None
        return int(review["review_id"])

    def _insert_review(self, run_id: int, reviewer: str, verdict: str, comment: str, source: str) -> dict:
        """Insert one review in its own transaction (the caller holds the writer lock); the review
        as the log writes it."""
        with self.transaction() as con:
            found = con.execute("SELECT request_key FROM runs WHERE run_id = ?", [run_id]).fetchall()
            if not found:
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
            now = utc_now()
            rid = con.execute(
                """INSERT INTO reviews (run_id, reviewer, verdict, comment, created_at, hifa_snapshot,
                                        identity_source)
                   VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING review_id""",
                [run_id, reviewer, verdict, comment, now, to_json(snapshot), source],
            ).fetchall()[0][0]
        return {
            "review_id": int(rid),
            "run_id": run_id,
            "run_key": found[0][0],
            "reviewer": reviewer,
            "verdict": verdict,
            "comment": comment,
            "created_at": now,
            "identity_source": source,
            "hifa_snapshot": snapshot,
        }

    # ------------------------------------------------------------------ review status

    def run_status(self, run_id: int, policy: ReviewPolicy | None = None) -> RunStatus:
        """A run's review status under ``policy`` (``analysis.review_policy.run_status``): its
        reviews, its author, and the run that supersedes it (:meth:`superseded_by`)."""
        run = self.run(run_id)
        reviews = self.reviews(run_id)
        return run_status(_review_dicts(reviews), run.get("author"), policy, self.superseded_by(run_id))

    def run_statuses(self, policy: ReviewPolicy | None = None) -> dict[int, RunStatus]:
        """Every run's review status under ``policy``, by run id (for the run list and ``runs``)."""
        if self.absent():
            return {}
        runs = self._frame("SELECT run_id, model_id, dataset_id, settings, author FROM runs ORDER BY run_id")
        reviews = self._frame(
            "SELECT review_id, run_id, reviewer, verdict, identity_source, created_at FROM reviews"
        )
        later = _superseding(runs)
        out = {}
        for r in runs.itertuples(index=False):
            mine = reviews[reviews["run_id"] == r.run_id]
            author = None if pd.isna(r.author) else r.author
            out[int(r.run_id)] = run_status(_review_dicts(mine), author, policy, later.get(int(r.run_id)))
        return out

    def superseded_by(self, run_id: int) -> int | None:
        """The newest later run of the same baseline checkpoint (sha256) on the same test dataset
        with other settings, or None."""
        runs = self._frame(
            """SELECT r.run_id, r.model_id, r.dataset_id, r.settings FROM runs r
               JOIN runs me ON me.run_id = ? AND r.model_id = me.model_id AND r.dataset_id = me.dataset_id
               ORDER BY r.run_id""",
            [int(run_id)],
        )
        return _superseding(runs).get(int(run_id))

    # ------------------------------------------------------------------ explain (root cause)

    def add_root_cause(self, run_id: int, payload: dict) -> None:
        """Append one ``flagcore explain`` result to a run (diagnostics row, option "baseline",
        section ``ROOT_CAUSE_SECTION``); earlier results stay, the newest is the one read back.

        ``payload`` must carry ``computed_at`` (ISO 8601, UTC): :meth:`root_cause` orders by it.
        """
        if not isinstance(payload, dict) or not payload.get("computed_at"):
            raise FlagcoreError("a root-cause result needs its computed_at time")
        with self.write() as con:
            if not con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [int(run_id)]).fetchall()[0][0]:
                raise FlagcoreError(f"{self.path}: no run {run_id}")
            con.execute(
                "INSERT INTO diagnostics VALUES (?, ?, ?, ?)",
                [int(run_id), "baseline", ROOT_CAUSE_SECTION, to_json(payload)],
            )

    def root_cause(self, run_id: int) -> dict | None:
        """The newest ``flagcore explain`` result stored with a run (by ``computed_at``), or None."""
        if self.absent():
            return None
        df = self._frame(
            "SELECT value FROM diagnostics WHERE run_id = ? AND option = 'baseline' AND section = ?",
            [int(run_id), ROOT_CAUSE_SECTION],
        )
        results = [from_json(v) for v in df["value"]]
        if not results:
            return None
        return max(results, key=lambda r: str(r.get("computed_at") or ""))


def _review_dicts(reviews: pd.DataFrame) -> list[dict]:
    cols = ["review_id", "reviewer", "verdict", "identity_source", "created_at"]
    return reviews[cols].to_dict("records")


def _superseding(runs: pd.DataFrame) -> dict[int, int]:
    """run id -> the newest later run with the same model and dataset but other settings, over
    ``runs`` (columns run_id, model_id, dataset_id, settings)."""
    out: dict[int, int] = {}
    known = runs.dropna(subset=["model_id", "dataset_id"])
    for _, group in known.groupby(["model_id", "dataset_id"]):
        rows = [(int(i), from_json(s)) for i, s in zip(group["run_id"], group["settings"], strict=True)]
        for i, settings in rows:
            other = [j for j, s in rows if j > i and s != settings]
            if other:
                out[i] = max(other)
    return out
