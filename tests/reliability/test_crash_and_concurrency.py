"""`flagcore evaluate` killed with SIGKILL at random moments, and the dashboard read by several
sessions while CLI processes write runs and reviews."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import streamlit_server

from flagcore.store.store import Store
from flagcore.vocab import CRITERIA

FLAGCORE = [sys.executable, "-m", "flagcore"]


def _fast_criteria(tmp: Path) -> Path:
    p = tmp / "fast.toml"
    p.write_text("[hifa]\nn_permutations = 2000\n")
    return p


def _check_complete(store: Store, n_bars: int) -> None:
    """Every stored run is whole: its options, their per-bar predictions and criteria."""
    for rid in store.list_runs()["run_id"]:
        opts = store.option_results(int(rid))
        assert len(opts) >= 1
        n = len(store.equity_curves(int(rid)))  # one row per option and test bar
        assert n == len(opts) * n_bars
        assert len(store.hifa(int(rid))) == len(CRITERIA) * len(opts)


@pytest.mark.slow  # six evaluate processes, each killed or finished
def test_sigkill_never_leaves_a_partial_run(quick_demo, tmp_path):
    store_path = tmp_path / "store.duckdb"
    shutil.copy(quick_demo["store"].path, store_path)
    store = Store(store_path)
    rid0 = quick_demo["run_id"]
    earlier = store.reviews(rid0)["comment"].tolist()  # other tests may have signed off already
    store.add_review(rid0, "Ann", "reject", "before the crashes")
    n_bars = store.run(rid0)["summary"]["evaluated_bars"]
    root = quick_demo["root"]
    cmd = FLAGCORE + [
        "evaluate",
        "--checkpoint",
        str(root / "models" / "ce"),
        "--data",
        str(root / "test.parquet"),
        "--retrained",
        str(root / "models" / "weighted"),
        "--store",
        str(store_path),
        "--quiet",
        "--criteria",
        str(_fast_criteria(tmp_path)),
    ]
    # Each process asks for another calendar, so that none can reuse a stored run: every one computes
    # its run (the logits come from the inference cache the first call fills) and writes it.
    subprocess.run([*cmd, "--periods-per-year", "8766"], check=True, capture_output=True, timeout=300)
    t = time.perf_counter()
    subprocess.run([*cmd, "--periods-per-year", "8767"], check=True, capture_output=True, timeout=300)
    full = time.perf_counter() - t  # a whole run with cached logits: imports, compute, write
    runs_before = set(store.list_runs()["run_id"])
    rng = np.random.default_rng(7)
    finished = 0
    kills = 6
    for i in range(kills):
        proc = subprocess.Popen(
            [*cmd, "--periods-per-year", str(8768 + i)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # kills land anywhere from the imports to just past the run's usual end: during the
        # compute, during the write, or after it
        time.sleep(rng.uniform(0.3, 1.05) * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        finished += proc.returncode == 0
        runs = set(store.list_runs()["run_id"])  # the store opens after every kill
        assert runs_before <= runs and len(runs - runs_before) <= 1
        runs_before = runs
        _check_complete(store, n_bars)
    reviews = store.reviews(rid0)
    assert reviews["comment"].tolist() == [*earlier, "before the crashes"]
    assert len(store.option_results(rid0)) == len(Store(quick_demo["store"].path).option_results(rid0))
    assert finished < kills  # at least one kill hit a running evaluate


@pytest.mark.slow  # until the writers finish, 20 s at least
@pytest.mark.browser
def test_dashboard_reads_while_the_cli_writes(quick_demo, tmp_path, browser):
    store_path = tmp_path / "store.duckdb"
    shutil.copy(quick_demo["store"].path, store_path)
    store = Store(store_path)
    root = quick_demo["root"]
    log = tmp_path / "server.log"
    with streamlit_server(store_path, log) as url:
        writers = [
            subprocess.Popen(
                FLAGCORE
                + [
                    "evaluate",
                    "--checkpoint",
                    str(root / "models" / "ce"),
                    "--data",
                    str(root / "test.parquet"),
                    "--store",
                    str(store_path),
                    "--quiet",
                    "--name",
                    f"concurrent-{i}",
                    "--criteria",
                    str(_fast_criteria(tmp_path)),
                ],
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        reviewers = [
            subprocess.Popen(
                FLAGCORE
                + [
                    "review",
                    "--store",
                    str(store_path),
                    "--run",
                    str(quick_demo["run_id"]),
                    "--reviewer",
                    f"r{i}",
                    "--verdict",
                    "needs-work",
                    "--comment",
                    f"comment {i}",
                ],
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(6)
        ]
        pages = ["", "solutions", "hifa", "reviews"]
        loads = 0
        contexts = [browser.new_context() for _ in range(3)]  # three separate browser sessions
        sessions = [c.new_page() for c in contexts]
        t0 = time.time()
        while time.time() - t0 < 20 or loads < 12 or any(w.poll() is None for w in writers + reviewers):
            for i, pg in enumerate(sessions):
                pg.goto(f"{url}/{pages[(loads + i) % len(pages)]}?run={quick_demo['run_id']}")
                pg.wait_for_selector(
                    "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000
                )
                assert pg.locator("[data-testid='stException']").count() == 0
                loads += 1
            if time.time() - t0 > 240:
                break
        for w in writers + reviewers:
            _, err = w.communicate(timeout=300)
            assert w.returncode == 0, err
        # a refresh shows the new runs
        runs = store.list_runs()
        new_ids = runs[runs["name"].str.startswith("concurrent-")]["run_id"].tolist()
        assert len(new_ids) == 2
        pg = sessions[0]
        for rid in new_ids:
            pg.goto(f"{url}/?run={rid}")
            pg.wait_for_selector(
                "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000
            )
            assert pg.get_by_text(f"Run {rid}", exact=True).count() == 1
        for c in contexts:
            c.close()
        assert loads >= 12  # every session read every page at least once while the writers ran
        df = store.reviews(quick_demo["run_id"])
        for i in range(6):  # every write present once
            assert (df["comment"] == f"comment {i}").sum() == 1
    text = log.read_text()
    assert "Error" not in text, text[-3000:]  # no traceback either: streamlit_server checks that
