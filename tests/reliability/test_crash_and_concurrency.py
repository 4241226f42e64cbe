"""`flagcore evaluate` killed with SIGKILL at random moments, and the dashboard read by several
sessions while CLI processes write runs and reviews."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import dataset_rows, streamlit_server

from flagcore.store.store import Store
from flagcore.vocab import CRITERIA

FLAGCORE = [sys.executable, "-m", "flagcore"]


def _fast_criteria(tmp: Path) -> Path:
    p = tmp / "fast.toml"
    p.write_text("[hifa]\nn_permutations = 2000\n")
    return p


def _check_complete(store: Store) -> None:
    """Every stored run is whole: its options, their per-bar predictions and criteria."""
    for rid in store.list_runs()["run_id"]:
        opts = store.option_results(int(rid))
        assert len(opts) >= 1
        n_bars = store.run(int(rid))["summary"]["evaluated_bars"]
        n = len(store.equity_curves(int(rid)))  # one row per option and test bar
        assert n == len(opts) * n_bars
        assert len(store.hifa(int(rid))) == len(CRITERIA) * len(opts)


# One process pays for the imports (torch, peft, scipy: seconds each time); every evaluate is a child
# forked from it, which runs the CLI's main and SIGKILLs itself at a chosen point. SIGKILL cannot be
# caught: nothing is rolled back, flushed or closed, as when the kill comes from outside. A point the
# code no longer reaches leaves the child alive, and the test fails on its exit status.
KILLER = r"""
import json, os, signal, sys, threading
import flagcore.cli.command, flagcore.cli.runs, flagcore.models.checkpoint, flagcore.models.inference
import flagcore.pipeline.evaluate, flagcore.pipeline.run, flagcore.store.store
# what an evaluate imports on its way (no torch op runs here: the children start their own threads)
import flagcore.analysis.cpcv, flagcore.analysis.dsr, flagcore.analysis.gate, flagcore.analysis.permutation
import flagcore.data.dataset, scipy.stats

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def arm(point):
    st, run = flagcore.store.store, flagcore.pipeline.run
    kind, _, arg = point.partition(":")
    real_validate, real_insert, real_write = run.validate_option, st.insert_frame, st.Store.write_run
    killer = threading.Thread(target=die)
    calls = []

    def validate_option(*a, **kw):  # "validate_option:N": the compute, before the N-th option's checks
        calls.append(1)
        if len(calls) == int(arg):
            die()
        return real_validate(*a, **kw)

    def insert_frame(con, table, df):  # in a write's transaction, once the table's rows went in
        real_insert(con, table, df)
        if table == arg and kind == "table":
            die()
        if table == arg and kind == "commit":  # from another thread, while the commit starts
            killer.start()

    def write_run(self, *a, **kw):  # the run committed
        out = real_write(self, *a, **kw)
        if kind == "written":
            die()
        if kind == "commit":
            killer.join()  # the kill lands before this process is through
        return out

    if kind == "validate_option":
        run.validate_option = validate_option
    elif kind in ("table", "commit", "written"):
        st.insert_frame, st.Store.write_run = insert_frame, write_run
    elif kind != "none":
        raise SystemExit(f"unknown kill point {point}")

for line in sys.stdin:
    point, argv = json.loads(line)
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        arm(point)
        os._exit(flagcore.cli.command.main(argv))
    _, status = os.waitpid(pid, 0)
    killed_by = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    print(json.dumps([killed_by, os.WEXITSTATUS(status) if os.WIFEXITED(status) else None]), flush=True)
"""


@pytest.mark.slow  # seven evaluate processes, six of them killed
def test_sigkill_never_leaves_a_partial_run(quick_demo, tmp_path):
    store_path = tmp_path / "store.duckdb"
    shutil.copy(quick_demo["store"].path, store_path)
    store = Store(store_path)
    rid0 = quick_demo["run_id"]
    earlier = store.reviews(rid0)["comment"].tolist()  # other tests may have signed off already
    store.add_review(rid0, "Ann", "reject", "before the crashes")
    root = quick_demo["root"]
    # the test period's first 700 bars: data no model has seen, so the first evaluate infers and fills
    # the inference cache (the Parquet metadata, label horizon and calendar, comes along)
    data = dataset_rows(root / "test.parquet", tmp_path / "test_head.parquet", 0, 700)
    argv = [
        "evaluate",
        "--checkpoint",
        str(root / "models" / "ce"),
        "--data",
        str(data),
        "--retrained",
        str(root / "models" / "weighted"),
        "--store",
        str(store_path),
        "--quiet",
        "--criteria",
        str(_fast_criteria(tmp_path)),
    ]
    # (kill point, a new run allowed): each evaluate asks for another calendar, so that none can
    # reuse a stored run: every one computes its run and writes it
    points = [
        ("table:inference_cache", False),  # the first model's logits going into the cache
        ("none", True),  # one whole run: the store still takes runs; it fills the cache
        ("validate_option:2", False),  # the compute, halfway through the options' validation
        ("table:run_bars", False),  # the run's write: its models and bars in, the rest not
        ("table:predictions", False),  # ... its predictions in too
        ("commit:sweeps", True),  # the last table in, the commit starting
        ("written", True),  # committed, the process not finished
    ]
    with open(tmp_path / "killer.log", "w") as log:
        killer = subprocess.Popen(
            [sys.executable, "-c", KILLER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    runs_before = set(store.list_runs()["run_id"])
    try:
        for i, (point, may_write) in enumerate(points):
            killer.stdin.write(json.dumps([point, [*argv, "--periods-per-year", str(8766 + i)]]) + "\n")
            killer.stdin.flush()
            signal_, code = json.loads(killer.stdout.readline() or "[null, null]")
            if point == "none":
                assert code == 0, (tmp_path / "killer.log").read_text()[-3000:]
            else:  # the kill point was reached: the code still passes there
                assert signal_ == signal.SIGKILL, (point, code, (tmp_path / "killer.log").read_text()[-3000:])
            runs = set(store.list_runs()["run_id"])  # the store opens after every kill
            assert runs_before <= runs and len(runs - runs_before) <= int(may_write), point
            if point in ("none", "written"):
                assert len(runs - runs_before) == 1, point
            runs_before = runs
            _check_complete(store)
    finally:
        killer.stdin.close()
        killer.wait(timeout=60)
    reviews = store.reviews(rid0)
    assert reviews["comment"].tolist() == [*earlier, "before the crashes"]
    assert len(store.option_results(rid0)) == len(Store(quick_demo["store"].path).option_results(rid0))


@pytest.mark.slow  # a server, three browser sessions and eight CLI processes
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
        loads = during = 0
        contexts = [browser.new_context() for _ in range(3)]  # three separate browser sessions
        sessions = [c.new_page() for c in contexts]
        # the sessions take the pages in turn for as long as any writer runs, and at least until
        # every session has read a page and every page has been read (two rounds of three); a
        # writer that hangs fails below, after at most 90 reads

        def running() -> bool:
            return any(w.poll() is None for w in writers + reviewers)

        while loads < 2 * len(sessions) or (running() and loads < 90):
            for i, pg in enumerate(sessions):
                during += running()
                pg.goto(f"{url}/{pages[(loads + i) % len(pages)]}?run={quick_demo['run_id']}")
                pg.wait_for_selector(
                    "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000
                )
                assert pg.locator("[data-testid='stException']").count() == 0
            loads += len(sessions)
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
        assert during >= len(sessions)  # every session read a page while the CLI wrote
        df = store.reviews(quick_demo["run_id"])
        for i in range(6):  # every write present once
            assert (df["comment"] == f"comment {i}").sum() == 1
    text = log.read_text()
    assert "Error" not in text, text[-3000:]  # no traceback either: streamlit_server checks that
