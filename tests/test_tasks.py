"""Where heavy tasks run: in process, a local pool, a local Ray instance; the same results in each."""

import os
import sys
import time

import numpy as np
import pytest

from flagcore.errors import FlagcoreError
from flagcore.training.tasks import Placement, run_tasks


def _affine(shared, item):
    if item == "boom":
        raise FlagcoreError("task boom failed")
    return shared * item + os.getpid() * 0


def require_ray():
    """Skip without Ray, or fail when FLAGCORE_REQUIRE_RAY is set (CI installs flagcore[test], with Ray)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("FLAGCORE_REQUIRE_RAY"):
            pytest.fail("FLAGCORE_REQUIRE_RAY is set but ray is not installed: pip install 'flagcore[ray]'")
        pytest.skip("ray is not installed (pip install 'flagcore[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for this module's tests that share it (starting one takes seconds),
    with the settings ``run_tasks`` starts its own with (``--ray-address local``)."""
    require_ray()
    import logging

    import ray

    import flagcore

    ray.shutdown()
    ray.init(
        num_cpus=os.cpu_count() or 1,
        object_store_memory=256 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env={"py_modules": [os.path.dirname(flagcore.__file__)]},
    )
    yield
    ray.shutdown()


@pytest.fixture
def no_ray():
    """No Ray instance in this process: ``run_tasks`` starts its own, or fails to join one."""
    require_ray()
    import ray

    ray.shutdown()  # the module's shared instance, if a test before started it
    yield ray


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"workers": 0}, "got 0"),
        ({"workers": True}, "got True"),
        ({"workers": 1.5}, "got 1.5"),
        ({"task_cpus": 0}, "got 0"),
        ({"ray_address": "  "}, "--ray-address is empty"),
    ],
)
def test_placement_rejects_bad_values(kw, match):
    with pytest.raises(FlagcoreError, match=match):
        Placement(**kw)


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_order_with_progress(workers):
    calls = []
    out = run_tasks(
        _affine,
        [5, 1, 4, 2],
        shared=3,
        placement=Placement(workers=workers),
        progress=lambda d, n: calls.append((d, n)),
    )
    assert out == [15, 3, 12, 6]
    assert calls[-1] == (4, 4) and [d for d, _ in calls] == [1, 2, 3, 4]
    assert run_tasks(_affine, [], placement=Placement(workers=workers)) == []


def test_a_failed_task_raises_its_own_error_in_the_caller():
    with pytest.raises(FlagcoreError, match="task boom failed"):
        run_tasks(_affine, [1, "boom", 2], shared=1, placement=Placement(workers=2))


def _step(folder, item):
    """Writes ``<name>.done`` when finished; returns (name, whether the item it waits for had finished)."""
    name, waits_for, seconds = item
    if name == "boom":
        raise FlagcoreError("task boom failed")
    saw = waits_for is None or os.path.exists(os.path.join(folder, f"{waits_for}.done"))
    time.sleep(seconds)
    open(os.path.join(folder, f"{name}.done"), "w").close()
    return name, saw


# item 1 waits for item 0, which is slow: without `after` the pool would start them together
AFTER_ITEMS = [("slow", None, 1.0), ("late", "slow", 0.0), ("free", None, 0.0)]


@pytest.mark.parametrize("workers", [1, 2])
def test_after_starts_a_dependent_item_once_its_dependency_finished(tmp_path, workers):
    calls = []
    out = run_tasks(
        _step,
        AFTER_ITEMS,
        shared=str(tmp_path),
        placement=Placement(workers=workers),
        after={1: 0},
        progress=lambda d, n: calls.append((d, n)),
    )
    assert out == [("slow", True), ("late", True), ("free", True)]  # in the items' order
    assert [d for d, _ in calls] == [1, 2, 3] and calls[-1] == (3, 3)


def _started(shared, item):
    """Sleeps ``item[1]`` seconds; returns when it started."""
    started = time.time()
    time.sleep(item[1])
    return started


def test_a_freed_worker_takes_an_item_that_became_ready_before_later_ones():
    # item 0 waits for item 1; when item 1 ends, the freed worker must take item 0 (first in the list)
    # before item 3: had every ready item gone into the pool's queue at the start, 3 and 4 would run first
    items = [("late", 0.0), ("first", 0.3), ("long", 1.5), ("next", 0.3), ("last", 0.3)]
    starts = run_tasks(_started, items, placement=Placement(workers=2), after={0: 1})
    assert starts[0] < starts[3] < starts[4]


def test_after_runs_items_in_process_in_order_except_those_that_wait():
    seen = []
    run_tasks(_record, [0, 1, 2, 3], shared=seen, after={0: 2})
    assert seen == [1, 2, 0, 3]


def _record(seen, item):
    seen.append(item)
    return item


@pytest.mark.parametrize("workers", [1, 2])
def test_an_item_waiting_for_a_failed_one_never_starts(tmp_path, workers):
    items = [("boom", None, 0.0), ("late", "boom", 0.0)]
    with pytest.raises(FlagcoreError, match="task boom failed"):
        run_tasks(_step, items, shared=str(tmp_path), placement=Placement(workers=workers), after={1: 0})
    assert not (tmp_path / "late.done").exists()


@pytest.mark.parametrize(
    "after, match",
    [
        ({0: 5}, "5 is not an item index"),
        ({-1: 0}, "-1 is not an item"),
        ({0: 0}, "item 0 waits for itself"),
        ({0: 1, 1: 2, 2: 0}, "waits for itself"),
    ],
)
def test_after_refuses_unknown_items_and_loops(after, match):
    with pytest.raises(FlagcoreError, match=match):
        run_tasks(_affine, [1, 2, 3], shared=1, after=after)


@pytest.mark.ray
def test_after_on_ray_starts_a_dependent_item_once_its_dependency_finished(tmp_path, no_ray):
    """`--ray-address local` starts Ray for the call and shuts it down after."""
    from ray import cloudpickle

    module = sys.modules[_step.__module__]
    cloudpickle.register_pickle_by_value(module)  # Ray's workers cannot import this test file
    try:
        out = run_tasks(
            _step, AFTER_ITEMS, shared=str(tmp_path), placement=Placement(ray_address="local"), after={1: 0}
        )
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert out == [("slow", True), ("late", True), ("free", True)]
    assert not no_ray.is_initialized()


def test_ray_address_without_ray_installed_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(
        FlagcoreError, match=r"--ray-address local: Ray is not installed; pip install 'flagcore\[ray\]'"
    ):
        run_tasks(_affine, [1], shared=1, placement=Placement(ray_address="local"))


def test_cli_refuses_zero_workers(tmp_path, capsys):
    from flagcore.cli.command import main

    rc = main(["validate", "--store", str(tmp_path / "s.duckdb"), "--retrain", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "workers must be a whole number >= 1, got 0" in err and len(err.splitlines()) == 1


@pytest.mark.ray
def test_retraining_cpcv_on_local_ray_matches_the_local_pool(small_demo, local_ray):
    """The splits as Ray tasks give the same path logits as the same splits in local processes."""
    from flagcore.models.flag_trader import PRESETS
    from flagcore.training.cpcv import retrain_cpcv
    from flagcore.training.loop import TrainConfig

    ds = small_demo["train"].slice(0, 2000)
    cfg = TrainConfig(loss="weighted", epochs=1, windows_per_epoch=256, patience=1)
    kw = {"n_groups": 3, "n_test_groups": 2, "embargo": 5}  # 3 splits, 2 paths
    pool = retrain_cpcv(ds, PRESETS["demo"], cfg, placement=Placement(workers=2), **kw)
    calls = []
    ray_res = retrain_cpcv(
        ds,
        PRESETS["demo"],
        cfg,
        placement=Placement(ray_address="local"),
        progress=lambda d, n: calls.append((d, n)),
        **kw,
    )
    assert ray_res.workers.startswith("ray (local") and pool.workers == "2 local worker processes"
    assert calls[-1] == (3, 3) and len(ray_res.split_provenance) == 3
    # one torch thread per task in both places: bit-for-bit the same training runs
    np.testing.assert_array_equal(ray_res.path_logits, pool.path_logits)
    best_epochs = [p["best_epoch"] for p in ray_res.split_provenance]
    assert best_epochs == [p["best_epoch"] for p in pool.split_provenance]


@pytest.mark.ray
def test_evaluate_with_inference_on_ray_writes_the_same_run(quick_demo, tmp_path, local_ray):
    """Batch inference of the demo's checkpoints as Ray tasks: the stored run equals the in-process one."""
    from conftest import dataset_rows

    from flagcore.pipeline.evaluate import evaluate
    from flagcore.store.store import Store

    root = quick_demo["root"]
    models = root / "models"
    # short periods, new to the inference cache: the test period's first 600 bars, the training's last 1,000
    test = dataset_rows(root / "test.parquet", tmp_path / "test.parquet", 0, 600)
    train = dataset_rows(root / "train.parquet", tmp_path / "train.parquet", -1000)
    kw = {
        "train_data": train,
        "partner": models / "cgdt" / "cgdt.safetensors",
        "retrained": [str(models / "weighted"), str(models / "focal")],
    }
    here = Store(tmp_path / "here.duckdb")
    want_id = evaluate(models / "ce", test, store=here, **kw)["run_id"]
    store = Store(tmp_path / "ray.duckdb")
    res = evaluate(models / "ce", test, store=store, placement=Placement(ray_address="local"), **kw)
    # 4 checkpoints (CE, weighted, focal, CGDT) on the test and training periods: 8 tasks, none cached
    assert res["inference"] == {"computed": 8, "cached": 0}
    want = here.option_results(want_id).set_index("option")
    got = store.option_results(res["run_id"]).set_index("option")
    assert list(got.index) == list(want.index)
    # Actions decide trades and shares: equal. Kelly sizes follow the probabilities, which another
    # thread count sums in another order (logits within 1e-5 below): the Sharpe moves by as much.
    for col in ("trades", "share_hold"):
        np.testing.assert_array_equal(got[col].to_numpy(float), want[col].to_numpy(float), err_msg=col)
    for col in ("sharpe", "total_return"):
        np.testing.assert_allclose(
            got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-4, atol=1e-4, err_msg=col
        )
    for option in ("baseline", "opt1_class_weights", "opt4_ensemble"):
        a = store.predictions(res["run_id"], option)
        b = here.predictions(want_id, option)
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a["action"].to_numpy(), b["action"].to_numpy())
        cols = ["logit_sell", "logit_hold", "logit_buy"]
        np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "address, match",
    [
        ("127.0.0.1:1", "nothing answers at 127.0.0.1:1"),
        ("ray://127.0.0.1:1", "nothing answers at 127.0.0.1:1"),
        ("no-port", "expected 'local', 'auto', host:port or ray://host:port"),
    ],
)
@pytest.mark.ray
def test_an_unreachable_ray_address_fails_at_once_with_one_line(address, match, no_ray):
    with pytest.raises(FlagcoreError, match=match):
        run_tasks(_affine, [1], shared=1, placement=Placement(ray_address=address))


SLOW_TASK = """
import os, time
def slow(folder, item):
    open(os.path.join(folder, f"{os.getpid()}.pid"), "w").close()
    time.sleep(120)
"""
CALLER = """
import sys
sys.path.insert(0, sys.argv[1])
import slowmod
from flagcore.training.tasks import Placement, run_tasks
if __name__ == "__main__":
    run_tasks(slowmod.slow, [1, 2], shared=sys.argv[1], placement=Placement(workers=2))
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_workers_exit_when_their_caller_is_killed(tmp_path):
    """SIGKILL to the caller leaves no worker computing on (they are forked from a server, not the caller)."""
    import signal
    import subprocess
    import time

    (tmp_path / "slowmod.py").write_text(SLOW_TASK)
    (tmp_path / "caller.py").write_text(CALLER)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "caller.py"), str(tmp_path)])
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    proc.send_signal(signal.SIGKILL)  # not reaped until the end: a zombie caller counts as dead too
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    gone = not any(_alive(p) for p in pids)
    proc.wait()
    assert gone, "workers outlived their caller"


@pytest.mark.ray
def test_cli_evaluate_passes_its_ray_address_on(quick_demo, tmp_path, capsys, no_ray):
    """`flagcore evaluate --ray-address` reaches the task runner: an address where nothing answers is
    reported in one line, and the store gets no run."""
    from flagcore.cli.command import main
    from flagcore.store.store import Store

    root = quick_demo["root"]
    store = tmp_path / "s.duckdb"
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(root / "models" / "ce"),
            "--data",
            str(root / "test.parquet"),
            "--retrained",
            str(root / "models" / "weighted"),
            "--ray-address",
            "127.0.0.1:1",
            "--store",
            str(store),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "--ray-address 127.0.0.1:1: nothing answers" in err
    assert not store.exists() or Store(store).list_runs().empty
