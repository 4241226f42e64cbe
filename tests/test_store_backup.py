"""A damaged store says so in one line; ``flagcore store backup / restore / check``; the review log
gives back the reviews a backup lacks. Synthetic runs written straight into small stores: no demo."""

import json
import os

import pytest

from flagcore.cli import main
from flagcore.errors import FlagcoreError
from flagcore.store.backup import check, restore
from flagcore.store.connection import StoreDamaged
from flagcore.store.review_log import read_review_log
from flagcore.store.runs import RunRows
from flagcore.store.store import Store


def _run(store: Store, key: str = "k1") -> int:
    rows = RunRows(
        name="r",
        request_key=key,
        flagcore_version="0",
        model_id="m",
        dataset_id="d",
        train_dataset_id=None,
        settings={},
        summary={},
        datasets=[],
        models=[],
        tables={},
        author="carl",
    )
    return store.write_run(rows)


def _cli(capsys, *argv):
    rc = main(list(argv))
    return rc, capsys.readouterr()


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def _zero(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.write(b"\0" * size)


@pytest.mark.parametrize("damage", [_truncate, _zero], ids=["truncated", "zeroed"])
def test_a_store_damaged_after_two_reviews_is_restored_with_both(tmp_path, capsys, damage):
    path, bk = tmp_path / "s.duckdb", tmp_path / "backup"
    store = Store(path)
    rid = _run(store)
    rc, out = _cli(capsys, "store", "backup", "--to", str(bk), "--store", str(path))
    assert rc == 0 and "backed up 1 runs and 0 reviews" in out.out and (bk / "schema.sql").exists()
    for who in ("ann", "bob"):  # signed after the backup: only the review log has them
        assert _cli(capsys, "review", "--run", str(rid), "--reviewer", who, "--verdict", "approve")[0] == 1
        rc, out = _cli(capsys, "review", "--store", str(path), "--run", str(rid), "--reviewer", who,
                       "--verdict", "approve")  # fmt: skip
        assert rc == 0, out.err
    damage(path)
    # every command that reads the store: one line naming the file and the way back, exit 1
    for argv in (["runs"], ["runs", "--json"], ["gate", "--run", str(rid)], ["store", "check"]):
        rc, out = _cli(capsys, *argv, "--store", str(path))
        lines = out.err.strip().splitlines() or out.out.strip().splitlines()
        assert rc == 1 and len(lines) == 1, (argv, out)
        assert str(path) in lines[0] and "flagcore store restore --from" in lines[0]
        assert "internal error" not in lines[0] and f"{path}.reviews.jsonl" in lines[0]
    rc, out = _cli(capsys, "store", "restore", "--from", str(bk), "--store", str(path))
    assert rc == 0, out.err
    assert "1 runs, 2 reviews (2 of them from the review log)" in out.out and "damaged-" in out.out
    df = Store(path).reviews(rid)
    assert df["reviewer"].tolist() == ["ann", "bob"] and df["review_id"].tolist() == [1, 2]
    assert df["identity_source"].tolist() == ["typed", "typed"]
    assert Store(path).run(rid)["author"] == "carl"
    rc, out = _cli(capsys, "store", "check", "--store", str(path))
    assert rc == 0 and out.out.startswith("ok: ") and "the review log holds every review" in out.out
    # the next review takes the next id, and the log still has each review once
    assert Store(path).add_review(rid, "cid", "reject") == 3
    assert [r["review_id"] for r in read_review_log(Store(path).review_log)] == [1, 2, 3]
    assert len(list(tmp_path.glob("s.duckdb.damaged-*"))) == 1  # the damaged file is kept


def test_restoring_twice_adds_nothing_twice_and_never_onto_another_run(tmp_path):
    path, bk = tmp_path / "s.duckdb", tmp_path / "bk"
    store = Store(path)
    rid = _run(store)
    store.add_review(rid, "ann", "approve", "ok", identity_source="oidc")
    Store(path).ensure()
    from flagcore.store.backup import backup

    backup(store, bk)
    store.add_review(rid, "bob", "reject", "no")
    # a log line for a run the backup lacks, and one for another run that had the same id
    log = store.review_log
    lines = log.read_text().splitlines()
    other = {**json.loads(lines[-1]), "run_key": "another", "created_at": "2026-01-01T00:00:00+00:00"}
    lost = {**json.loads(lines[-1]), "run_id": 9, "review_id": 9}
    log.write_text("\n".join([*lines, json.dumps(other), json.dumps(lost)]) + "\n")
    _zero(path)
    res = restore(Store(path), bk)
    assert (res["reviews"], res["from_log"]) == (2, 1)
    assert any("run 9 is not in the backup" in s for s in res["skipped"])
    assert any("is another run" in s for s in res["skipped"])
    df = Store(path).reviews(rid)
    assert df["comment"].tolist() == ["ok", "no"] and df["identity_source"].tolist() == ["oidc", "typed"]
    # the log still holds reviews the store cannot take: check says so (restore would not refuse)
    assert not check(Store(path)).ok and "2 reviews of the review log" in check(Store(path)).line
    again = restore(Store(path), bk)
    assert again["reviews"] == 2 and again["from_log"] == 1
    assert len(Store(path).reviews(rid)) == 2


def test_a_lost_or_emptied_store_is_not_silently_replaced(tmp_path, capsys):
    path = tmp_path / "s.duckdb"
    store = Store(path)
    rid = _run(store)
    store.add_review(rid, "ann", "approve")
    path.write_bytes(b"")  # emptied
    with pytest.raises(StoreDamaged, match="the store file is empty but its review log holds reviews"):
        Store(path).list_runs()
    with pytest.raises(StoreDamaged, match="store restore"):
        _run(Store(path), "k2")  # a write does not start a new store over the lost one
    path.unlink()  # gone
    rc, out = _cli(capsys, "runs", "--store", str(path))
    assert rc == 1 and "the store file is gone but its review log holds reviews" in out.err
    assert not check(Store(path)).ok


def test_backup_and_restore_refuse_what_is_not_theirs(tmp_path, capsys):
    path = tmp_path / "s.duckdb"
    _run(Store(path))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    rc, out = _cli(capsys, "store", "backup", "--to", str(tmp_path / "full"), "--store", str(path))
    assert rc == 1 and "is not an empty folder" in out.err
    rc, out = _cli(capsys, "store", "restore", "--from", str(tmp_path / "full"), "--store", str(path))
    assert rc == 1 and "not a store backup" in out.err
    rc, out = _cli(capsys, "store", "check", "--store", str(path), "--json")
    data = json.loads(out.out)
    assert rc == 0 and data["ok"] and data["runs"] == 1
    # a healthy store is replaced only with --force (and kept beside the new one)
    bk = tmp_path / "bk"
    assert _cli(capsys, "store", "backup", "--to", str(bk), "--store", str(path))[0] == 0
    rc, out = _cli(capsys, "store", "restore", "--from", str(bk), "--store", str(path))
    assert rc == 1 and "the store is not damaged" in out.err and "--force" in out.err
    rc, out = _cli(capsys, "store", "restore", "--from", str(bk), "--store", str(path), "--force")
    assert rc == 0 and "kept as" in out.out


def test_a_cut_off_log_line_is_skipped_and_a_bad_one_named(tmp_path):
    log = tmp_path / "s.duckdb.reviews.jsonl"
    good = {"run_id": 1, "reviewer": "a", "verdict": "approve", "created_at": "2026-01-01T00:00:00+00:00"}
    log.write_text(json.dumps(good) + '\n{"run_id": 1, "rev')
    assert [r["reviewer"] for r in read_review_log(log)] == ["a"]
    # the next review after a cut-off line starts a line of its own
    from flagcore.store.review_log import append_review

    append_review(log, {**good, "reviewer": "b"})
    assert [r["reviewer"] for r in read_review_log(log)] == ["a", "b"]
    log.write_text('{"run_id": 1}\n' + json.dumps(good) + "\n")
    with pytest.raises(FlagcoreError, match="line 1 is not a review"):
        read_review_log(log)


def test_damage_met_while_reading_the_schema_version_is_damage_too(tmp_path, capsys, monkeypatch):
    """Where the cut lands decides which read fails first: a store whose meta table sits in a lost
    block failed in the schema check (seen on a truncated demo store), and restore gave an internal
    error instead of restoring."""
    import duckdb

    from flagcore.store import connection

    path, bk = tmp_path / "s.duckdb", tmp_path / "backup"
    rid = _run(Store(path))
    assert _cli(capsys, "store", "backup", "--to", str(bk), "--store", str(path))[0] == 0

    def lost_block(con):
        raise duckdb.IOException('IO Error: Could not read enough bytes from file "s.duckdb"')

    with monkeypatch.context() as m:
        m.setattr(connection, "read_schema_version", lost_block)
        rc, out = _cli(capsys, "store", "check", "--store", str(path))
        assert rc == 1 and "the store file is damaged" in out.err + out.out
        assert "internal error" not in out.err
        os.truncate(path, os.path.getsize(path) // 2)
        rc, out = _cli(capsys, "store", "restore", "--from", str(bk), "--store", str(path))
    assert rc == 0, out.err
    assert Store(path).run(rid)["author"] == "carl"
