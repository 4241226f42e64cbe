"""The DuckDB store: schema and migrations, reviews, locking between processes."""

import multiprocessing as mp
import subprocess
import sys
import time

import duckdb
import pytest

from flagcore.errors import FlagcoreError
from flagcore.store.connection import StoreBusy
from flagcore.store.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from flagcore.store.store import Store


def _sql(store: Store, sql: str):
    """A read-only query, for checks of what the store holds."""
    with store.read() as con:
        return con.execute(sql).df()


def _add_run(store: Store, name: str = "r") -> int:
    with store.write() as con:
        return con.execute(
            "INSERT INTO runs (name, settings, summary) VALUES (?, '{}', '{}') RETURNING run_id", [name]
        ).fetchall()[0][0]


def test_new_store_has_current_schema(tmp_path):
    s = Store(tmp_path / "sub" / "x.duckdb")
    assert not s.exists()
    s.ensure()
    assert s.schema_version() == SCHEMA_VERSION == MIGRATIONS[-1][0]
    tables = set(_sql(s, "SELECT table_name FROM information_schema.tables")["table_name"])
    for t in (
        "datasets",
        "models",
        "runs",
        "predictions",
        "option_results",
        "diagnostics",
        "cpcv_paths",
        "hifa_criteria",
        "permutation_nulls",
        "sweeps",
        "reviews",
        "inference_cache",
        "run_bars",
    ):
        assert t in tables


def test_migration_from_version_1_keeps_data(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    assert migrate(con, target=1) == 1
    con.execute("INSERT INTO runs (name, settings, summary) VALUES ('old run', '{}', '{}')")
    con.close()
    s = Store(path)
    assert s.schema_version() == 1
    s.ensure()
    assert s.schema_version() == SCHEMA_VERSION
    df = _sql(s, "SELECT name, request_key FROM runs")
    assert df["name"].tolist() == ["old run"] and df["request_key"].isna().all()


def test_a_newer_store_is_refused(tmp_path):
    s = Store(tmp_path / "x.duckdb")
    s.ensure()
    with s.write() as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(FlagcoreError, match="v99 is newer"):
        Store(s.path).ensure()


def test_reading_a_missing_store_says_how_to_fill_it(tmp_path):
    s = Store(tmp_path / "none.duckdb")
    with pytest.raises(FlagcoreError, match="flagcore demo"):
        s.run(1)
    assert s.list_runs().empty


def test_a_failed_write_leaves_nothing(tmp_path):
    s = Store(tmp_path / "x.duckdb")
    _add_run(s, "kept")
    with pytest.raises(RuntimeError), s.write() as con:
        con.execute("INSERT INTO runs (name) VALUES ('lost')")
        raise RuntimeError("boom")
    assert _sql(s, "SELECT name FROM runs")["name"].tolist() == ["kept"]


def test_retraining_paths_are_appended_once(tmp_path):
    from flagcore.store.schema import RETRAIN_MODE

    s = Store(tmp_path / "x.duckdb")
    rid = _add_run(s)
    assert s.options_with_cpcv_mode(rid, RETRAIN_MODE) == set()
    assert s.append_retraining(rid, "baseline", [0.5, -0.25, 1.0], {"paths": 3}) is True
    assert s.options_with_cpcv_mode(rid, RETRAIN_MODE) == {"baseline"}
    # a second append (another process's, say) keeps the first and adds nothing
    assert s.append_retraining(rid, "baseline", [9.0], {"paths": 1}) is False
    paths = s.cpcv_paths(rid)
    assert paths["path"].tolist() == [0, 1, 2] and paths["sharpe"].tolist() == [0.5, -0.25, 1.0]
    assert set(paths["mode"]) == {RETRAIN_MODE}
    assert s.diagnostics(rid)["retrain_cpcv"] == {"paths": 3}


def test_the_run_writer_takes_run_tables_only(tmp_path):
    import pandas as pd

    from flagcore.store.runs import RunRows

    s = Store(tmp_path / "x.duckdb")
    rows = RunRows(
        name="r",
        request_key="k",
        flagcore_version="0",
        model_id="m",
        dataset_id="d",
        train_dataset_id=None,
        settings={},
        summary={},
        datasets=[],
        models=[],
        tables={"reviews": pd.DataFrame({"reviewer": ["x"]})},
    )
    with pytest.raises(FlagcoreError, match="not a run table"):
        s.write_run(rows)
    rows.tables = {"sweeps": pd.DataFrame({"parameter": ["tau"], "value": [1.0]})}
    rid = s.write_run(rows)
    assert s.run(rid)["name"] == "r" and s.sweeps(rid)["parameter"].tolist() == ["tau"]


def test_reviews_are_appended_verbatim_with_a_snapshot(tmp_path):
    s = Store(tmp_path / "x.duckdb")
    rid = _add_run(s)
    with s.write() as con:
        con.execute(
            "INSERT INTO hifa_criteria VALUES (?, 'baseline', 'permutation_p', 1.0, 0.05, '<', false, '{}')",
            [rid],
        )
    hostile = "'); DROP TABLE reviews; -- <script>alert(1)</script> " + "x" * 5000
    a = s.add_review(rid, "  <b>Ann</b> ", "reject", hostile)
    b = s.add_review(rid, "Bob", "approve", "")
    assert b > a
    df = s.reviews(rid)
    assert df["reviewer"].tolist() == ["<b>Ann</b>", "Bob"]
    assert df["comment"].iloc[0] == hostile
    assert df["hifa_snapshot"].iloc[0] == [
        {"option": "baseline", "criterion": "permutation_p", "value": 1.0, "threshold": 0.05, "passed": False}
    ]
    # nothing in the API changes or removes a review
    assert not [m for m in dir(Store) if any(w in m for w in ("update", "delete", "remove", "edit"))]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"reviewer": " ", "verdict": "approve"}, "name is required"),
        ({"reviewer": "a", "verdict": "ok"}, "verdict must be one of"),
        ({"reviewer": "a" * 201, "verdict": "approve"}, "at most 200"),
    ],
)
def test_bad_reviews_are_refused_and_nothing_is_written(tmp_path, kw, match):
    s = Store(tmp_path / "x.duckdb")
    rid = _add_run(s)
    with pytest.raises(FlagcoreError, match=match):
        s.add_review(rid, **kw)
    with pytest.raises(FlagcoreError, match="no run 99"):
        s.add_review(99, "a", "approve")
    assert s.reviews(rid).empty


def _hold_lock(path: str, seconds: float, ready, release=None) -> None:
    """Hold DuckDB's lock on the file for ``seconds``, or until ``release`` is set."""
    con = duckdb.connect(path)
    ready.set()
    if release is None:
        time.sleep(seconds)
    else:
        release.wait(seconds)
    con.close()


def test_a_writer_waits_for_a_lock_and_then_succeeds(tmp_path):
    s = Store(tmp_path / "x.duckdb", busy_timeout=30)
    rid = _add_run(s)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(s.path), 1.5, ready))
    p.start()
    assert ready.wait(30)
    t0 = time.monotonic()
    s.add_review(rid, "ann", "approve")
    waited = time.monotonic() - t0
    p.join()
    assert waited > 0.3  # it really met the lock
    assert len(s.reviews(rid)) == 1


@pytest.mark.parametrize(
    "holder, says",
    [
        ("_hold_lock", "another flagcore process holds it"),  # DuckDB's own lock on the file
        ("_hold_writer_lock", "another flagcore process is writing"),  # the writer lock alone
    ],
)
def test_a_store_that_stays_busy_gives_one_clear_line(tmp_path, holder, says):
    s = Store(tmp_path / "x.duckdb", busy_timeout=0.5)
    rid = _add_run(s)
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=globals()[holder], args=(str(s.path), 60, ready, release))
    p.start()
    assert ready.wait(30)
    with pytest.raises(StoreBusy, match=says) as e:
        s.add_review(rid, "ann", "approve")
    assert "\n" not in str(e.value)
    release.set()  # the holder lets go now, not after its 60 s
    p.join()
    assert s.reviews(rid).empty
    s.add_review(rid, "ann", "approve")  # free again once the holder has gone
    assert s.reviews(rid)["reviewer"].tolist() == ["ann"]


# A writer says it is ready (imports done) and waits for the go file, so that every writer starts
# writing at the same moment, whichever started its process first.
_WRITER = """
import os, sys, time
from flagcore.store.store import Store
s = Store(sys.argv[1], busy_timeout=60)
go = sys.argv[4]
open(f"{go}.{sys.argv[2]}", "w").close()
t = time.time()
while not os.path.exists(go) and time.time() - t < 120:
    time.sleep(0.005)
for i in range(int(sys.argv[3])):
    s.add_review(1, sys.argv[2], "approve", f"{sys.argv[2]} {i}")
"""
_READER = """
import os, sys, time
from flagcore.store.store import Store
s = Store(sys.argv[1], busy_timeout=60)
n, t = 0, time.time()
# at least 5 reads, and on until the writers are done (a test that fails first leaves no reader behind)
while n < 5 or not (os.path.exists(sys.argv[2]) or time.time() - t > 120):
    s.list_runs(); s.reviews(1); n += 1
print(n)
"""


def _start_writers(path, go, names, n: int) -> list:
    """Writer processes that each add ``n`` reviews once ``go`` exists; returned once all are ready."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), w, str(n), str(go)], stderr=subprocess.PIPE, text=True
        )
        for w in names
    ]
    t = time.time()
    while not all(go.with_name(f"{go.name}.{w}").exists() for w in names) and time.time() - t < 120:
        assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs]
        time.sleep(0.01)
    return procs


def test_two_writers_and_a_reader_at_once(tmp_path):
    s = Store(tmp_path / "x.duckdb")
    _add_run(s)
    n = 8  # both writers start together (the go file): their writes interleave from the first
    done = tmp_path / "writers-done"
    reader = subprocess.Popen(  # reads from before the writers start until they are done
        [sys.executable, "-c", _READER, str(s.path), str(done)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    go = tmp_path / "go"
    procs = _start_writers(s.path, go, ("ann", "bob"), n)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    done.touch()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert int(out) > 0
    df = s.reviews(1)
    for w in ("ann", "bob"):  # every write present exactly once
        assert sorted(df.loc[df["reviewer"] == w, "comment"]) == sorted(f"{w} {i}" for i in range(n))


def _hold_writer_lock(path: str, seconds: float, ready, release) -> None:
    from flagcore.store.store import Store

    with Store(path).writer_lock():
        ready.set()
        release.wait(seconds)


def test_six_reviewers_at_the_same_moment_each_land_once(tmp_path):
    s = Store(tmp_path / "x.duckdb")
    _add_run(s)
    go = tmp_path / "go"
    procs = _start_writers(s.path, go, [f"r{i}" for i in range(6)], 1)
    go.touch()  # all six write at the same moment
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    df = s.reviews(1)
    assert sorted(df["reviewer"]) == [f"r{i}" for i in range(6)]
    assert df["review_id"].is_unique
    # the review log too: each review once, in review-id order (appended under the writer lock)
    from flagcore.store.review_log import read_review_log

    logged = read_review_log(s.review_log)
    assert [r["review_id"] for r in logged] == sorted(df["review_id"])
    assert sorted(r["reviewer"] for r in logged) == [f"r{i}" for i in range(6)]


def test_the_newest_root_cause_is_read_by_every_path(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    rid = _add_run(store)
    for stamp, tag in [("2026-02-01T00:00:00+00:00", "new"), ("2026-01-01T00:00:00+00:00", "old")]:
        store.add_root_cause(rid, {"computed_at": stamp, "tag": tag})  # the older one written last
    assert store.root_cause(rid)["tag"] == "new"
    assert store.diagnostics(rid)["root_cause"]["tag"] == "new"
    assert "root_cause" not in store.diagnostics(rid, option="weighted")


# ----------------------------------------------------------------------------- identities, authors, status


def test_migration_from_version_2_marks_older_reviews_typed(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    assert migrate(con, target=2) == 2
    con.execute("INSERT INTO runs (name, settings, summary) VALUES ('old run', '{}', '{}')")
    con.execute(
        "INSERT INTO reviews (run_id, reviewer, verdict, comment, hifa_snapshot) "
        "VALUES (1, 'ann', 'approve', '', '[]')"
    )
    con.close()
    s = Store(path)
    assert s.schema_version() == 2
    assert s.reviews(1)["identity_source"].tolist() == ["typed"]  # a read brings it up to date
    assert s.schema_version() == SCHEMA_VERSION == 3
    assert s.run(1)["author"] is None
    s.add_review(1, "bob", "approve", identity_source="header")
    assert s.reviews(1)["identity_source"].tolist() == ["typed", "header"]


def _write(store: Store, *, model="m1", data="d1", settings=None, author=None) -> int:
    from flagcore.store.runs import RunRows

    rows = RunRows(
        name="r",
        request_key=f"k{model}{data}{settings}",
        flagcore_version="0",
        model_id=model,
        dataset_id=data,
        train_dataset_id=None,
        settings=settings or {"tau": 1.0},
        summary={},
        datasets=[],
        models=[],
        tables={},
        author=author,
    )
    return store.write_run(rows)


def test_a_runs_author_and_status_with_identities(tmp_path):
    from flagcore.analysis.review_policy import ReviewPolicy

    s = Store(tmp_path / "x.duckdb")
    rid = _write(s, author="carl")
    assert s.run(rid)["author"] == "carl" and s.list_runs()["author"].tolist() == ["carl"]
    with pytest.raises(FlagcoreError, match="identity_source must be one of oidc, header, typed"):
        s.add_review(rid, "ann", "approve", identity_source="badge")
    s.add_review(rid, "ann", "approve", identity_source="oidc")
    s.add_review(rid, "carl", "approve", identity_source="header")  # the author: does not count
    st = s.run_status(rid, ReviewPolicy())
    assert (st.status, st.approvers) == ("awaiting review", ["ann"])
    s.add_review(rid, "bob", "approve")  # typed, unverified: counts by default
    assert s.run_status(rid).status == "approved"
    assert s.run_status(rid, ReviewPolicy(count_unverified=False)).status == "awaiting review"
    assert {k: v.status for k, v in s.run_statuses().items()} == {rid: "approved"}


def test_a_later_run_of_the_same_checkpoint_and_data_with_other_settings_supersedes(tmp_path):
    s = Store(tmp_path / "x.duckdb")
    first = _write(s)
    same = _write(s, settings={"tau": 1.0})  # the same settings: not superseding
    other_data = _write(s, data="d2", settings={"tau": 2.0})
    assert s.superseded_by(first) is None
    newer = _write(s, settings={"tau": 2.0})
    newest = _write(s, settings={"tau": 3.0})
    assert s.superseded_by(first) == s.superseded_by(same) == s.superseded_by(newer) == newest
    assert s.superseded_by(newest) is None and s.superseded_by(other_data) is None
    statuses = s.run_statuses()
    assert statuses[first].status == "superseded" and statuses[first].superseded_by == newest
    assert statuses[newest].status == "awaiting review"
    assert s.run_status(first).superseded_by == newest


def test_every_review_is_also_in_the_review_log(tmp_path):
    import json

    s = Store(tmp_path / "x.duckdb")
    rid = _write(s)
    a = s.add_review(rid, "ann", "approve", "fine", identity_source="oidc")
    b = s.add_review(rid, "bob", "needs-work", "line\nbreak")
    lines = s.review_log.read_text().splitlines()
    assert s.review_log.name == "x.duckdb.reviews.jsonl" and len(lines) == 2
    logged = [json.loads(x) for x in lines]
    assert [r["review_id"] for r in logged] == [a, b]
    assert logged[0]["identity_source"] == "oidc" and logged[1]["comment"] == "line\nbreak"
    stored = s.reviews(rid)
    assert logged[0]["created_at"] == stored["created_at"].iloc[0].isoformat(timespec="microseconds")
    assert logged[0]["run_key"] == s.run(rid)["request_key"]
