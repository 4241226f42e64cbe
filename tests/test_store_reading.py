"""A dashboard session's shared read connection (``Store.reading``) against a write from another
session of the same server process: DuckDB refuses a read-write connection beside a read-only one
in one process, so the write must wait for the read to end, as it waits for another process's lock."""

from __future__ import annotations

import threading

import numpy as np

from flagcore.store.store import Store


def test_a_write_from_another_thread_waits_for_a_shared_read_and_lands(tmp_path):
    store = Store(tmp_path / "s.duckdb", busy_timeout=20)
    store.ensure()
    store.list_runs()
    reading, done = threading.Event(), threading.Event()

    def session_reads():
        with store.reading():
            store.list_runs()  # opens the block's read-only connection and keeps it to the block's end
            reading.set()
            done.wait(0.5)  # a page drawing its charts

    t = threading.Thread(target=session_reads)
    t.start()
    assert reading.wait(10)
    # without the retry this raised at once: "Can't open a connection to same database file with a
    # different configuration than existing connections"
    store.put_inference("m", "d", "s", np.zeros((2, 3), np.float32), np.zeros(2, bool))
    t.join()
    assert not t.is_alive()
    assert len(store.cached_logits("m", "d", "s")) == 2
