import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from flagcore.models.flag_trader import FlagTraderConfig

# pytest-xdist's worker name ("gw0", ...) in its worker processes; None in a plain run
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    # the workers share the cores: one torch thread each, before torch runs anything, and one BLAS/
    # OpenMP thread in the processes they start (CLI commands, servers, pool workers)
    torch.set_num_threads(1)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

# A small architecture with every structural feature of the full one; r=8 with the reviewed
# alpha of 16 gives LoRA scaling 2, so a wrong scaling cannot hide behind 1.0.
SMALL = FlagTraderConfig(
    d_model=32, num_layers=2, num_heads=4, ff_dim=64, max_length=16, window=8, lora_rank=8, lora_alpha=16.0
)


@pytest.fixture
def small_cfg():
    return SMALL


def reviewed_state_dict(cfg: FlagTraderConfig, seed: int = 0) -> dict:
    """Random weights in the reviewed system's key layout (reviewed-model.md), LoRA B non-zero."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    d, f, r = cfg.d_model, cfg.ff_dim, cfg.lora_rank
    sd = {
        "state_embedding.weight": rnd(d, cfg.state_dim),
        "state_embedding.bias": rnd(d),
        "pos_embedding": rnd(1, cfg.max_length, d),
    }
    for i in range(cfg.num_layers):
        b = f"transformer_blocks.{i}"
        layers = {f"{b}.attention.{n}": (d, d) for n in ("q_proj", "k_proj", "v_proj", "out_proj")}
        layers[f"{b}.ffn.0"] = (d, f)
        layers[f"{b}.ffn.3"] = (f, d)
        for name, (fan_in, fan_out) in layers.items():
            sd[f"{name}.base.weight"] = rnd(fan_out, fan_in)
            sd[f"{name}.base.bias"] = rnd(fan_out)
            sd[f"{name}.lora.lora_A"] = rnd(fan_in, r)  # (in, r)
            sd[f"{name}.lora.lora_B"] = rnd(r, fan_out)  # (r, out)
        for n in ("norm1", "norm2"):
            sd[f"{b}.{n}.weight"] = 1 + rnd(d)
            sd[f"{b}.{n}.bias"] = rnd(d)
    sd["output_norm.weight"] = 1 + rnd(d)
    sd["output_norm.bias"] = rnd(d)
    sd["action_head.weight"] = rnd(cfg.action_dim, d, scale=0.5)
    sd["action_head.bias"] = rnd(cfg.action_dim)
    return sd


def reference_forward(sd: dict, states: torch.Tensor, num_heads: int, lora_alpha: float = 16.0):
    """The reviewed network written from reviewed-model.md alone, in eval mode (no dropout)."""
    import math

    def lora_linear(name, x):
        A, B = sd[f"{name}.lora.lora_A"], sd[f"{name}.lora.lora_B"]
        y = x @ sd[f"{name}.base.weight"].T + sd[f"{name}.base.bias"]
        return y + (x @ A @ B) * (lora_alpha / A.shape[1])

    def layer_norm(name, x):
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + 1e-5) * sd[f"{name}.weight"] + sd[f"{name}.bias"]

    Bsz, T, _ = states.shape
    x = states @ sd["state_embedding.weight"].T + sd["state_embedding.bias"] + sd["pos_embedding"][:, :T]
    n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks."))
    for i in range(n_layers):
        b = f"transformer_blocks.{i}"
        d = x.shape[-1]
        hd = d // num_heads
        q, k, v = (
            lora_linear(f"{b}.attention.{n}", x).view(Bsz, T, num_heads, hd).transpose(1, 2)
            for n in ("q_proj", "k_proj", "v_proj")
        )
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        a = (att @ v).transpose(1, 2).reshape(Bsz, T, d)
        x = layer_norm(f"{b}.norm1", x + lora_linear(f"{b}.attention.out_proj", a))
        h = lora_linear(f"{b}.ffn.0", x)
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
        x = layer_norm(f"{b}.norm2", x + lora_linear(f"{b}.ffn.3", h))
    x = layer_norm("output_norm", x)
    return x @ sd["action_head.weight"].T + sd["action_head.bias"]


def make_frame(n=80, n_features=49, seed=0, start="2025-01-01", freq="h", labels=True):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"timestamp": pd.date_range(start, periods=n, freq=freq, tz="UTC")})
    for j in range(n_features):
        df[f"f{j:02d}"] = rng.normal(size=n)
    df["close"] = 100 * np.exp(np.cumsum(rng.normal(scale=0.01, size=n)))
    if labels:
        df["label"] = rng.choice(["SELL", "HOLD", "BUY"], size=n, p=[0.2, 0.6, 0.2])
    return df


SMALL_TRAIN_START = "2023-07-01"  # 18 months of training bars instead of five years
SMALL_TEST_BARS = 1500


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """A fast version of the embedded demo: bars, and train/test datasets written to Parquet."""
    from flagcore.data.dataset import load_dataset, write_dataset
    from flagcore.data.features import build_datasets
    from flagcore.data.market import demo_market

    root = tmp_path_factory.mktemp("demo")
    bars = demo_market(train_start=pd.Timestamp(SMALL_TRAIN_START, tz="UTC"), test_bars=SMALL_TEST_BARS)
    bars_path = write_dataset(bars, root / "market.parquet")
    sets = build_datasets(bars, test_start="2025-01-01")
    paths = {k: write_dataset(df, root / f"{k}.parquet", **meta) for k, (df, meta) in sets.items()}
    return {
        "root": root,
        "bars": bars,
        "bars_path": bars_path,
        "meta": {k: m for k, (_, m) in sets.items()},
        "train": load_dataset(paths["train"]),
        "test": load_dataset(paths["test"]),
        "train_path": paths["train"],
        "test_path": paths["test"],
    }


def dataset_rows(src: Path, out: Path, start: int, stop: int | None = None) -> Path:
    """Rows ``start:stop`` of a Parquet dataset written to ``out``, its metadata (label horizon,
    calendar) kept: a shorter test or training period of the demo, new to every inference cache."""
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    start = start % table.num_rows if start < 0 else start
    stop = table.num_rows if stop is None else stop
    pq.write_table(table.slice(start, stop - start), out)
    return out


def with_trained_lora(model, std: float = 0.05):
    """Give every LoRA B non-zero weights (B starts at zero), so that the adapters change outputs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std)
    return model


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """``flagcore demo --quick`` built once: its store, run id and artifact folder. Under pytest-xdist
    the first worker that needs it builds it in the run's shared temporary folder, under a file lock,
    and the others wait for it and reuse it (read only: writers take ``quick_demo_copy``)."""
    from filelock import FileLock

    from flagcore.pipeline.demo import build_demo
    from flagcore.store.store import Store

    if not WORKER:
        base = tmp_path_factory.mktemp("quick_demo")
        res = build_demo(Store(base / "store.duckdb"), quick=True, root=base / "demo")
    else:
        base = tmp_path_factory.getbasetemp().parent / "quick_demo"  # pytest-N/, shared by the workers
        done = base / "result.json"
        with FileLock(f"{base}.lock"):
            if not done.exists():
                shutil.rmtree(base, ignore_errors=True)  # what a worker that failed to build left
                base.mkdir()
                res = build_demo(Store(base / "store.duckdb"), quick=True, root=base / "demo")
                done.write_text(json.dumps(res))
        res = json.loads(done.read_text())
    store = Store(base / "store.duckdb")
    built = store.version()
    yield {"store": store, "run_id": res["run_id"], "root": base / "demo" / "quick", "result": res}
    # a test that wrote here changed what every later test (and every other worker) reads
    assert store.version() == built, "a test wrote into the shared quick demo store: use quick_demo_copy"


def copy_demo_store(quick_demo: dict, folder: Path) -> dict:
    """``quick_demo`` with its store copied into ``folder``: what a test writes there (reviews, runs)
    stays out of the shared store. For session or module fixtures, such as a server's store."""
    from flagcore.store.store import Store

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "store.duckdb"
    shutil.copy(quick_demo["store"].path, path)
    return {**quick_demo, "store": Store(path)}


@pytest.fixture
def quick_demo_copy(quick_demo, tmp_path):
    """The quick demo on this test's own copy of the store (same keys as ``quick_demo``): for every
    test that writes reviews or runs. The artifact folder (``root``) is shared: read it, never write."""
    return copy_demo_store(quick_demo, tmp_path / "own_store")


# ----------------------------------------------------------------------------- markers
#
# Registered in pyproject.toml, with --strict-markers. The fast subset,
#     .venv/bin/python -m pytest -m "not slow and not browser and not ray"
# runs every test file's unit tests, and leaves out what trains real models or builds the demo. Tests
# under tests/reliability/ and the Ray tests in tests/test_tasks.py carry their markers as decorators;
# every other test gets them here, by these rules:
#   browser: every test under tests/browser/ (a real `streamlit run` driven in chromium);
#   slow:    every test that needs the quick demo (the `quick_demo` fixture, directly or through
#            another fixture): building it takes a minute or more on 2 cores;
#   slow:    every test that uses a fixture in SLOW_FIXTURES (a module-scoped fixture that trains);
#   slow:    the tests in SLOW (all their parameters): over about 5 s each in a --durations=0 run on
#            2 cores, and no unit check.
# The determinism tests of training (FLAG-TRADER, CGDT, retraining CPCV in worker processes) stay in
# the fast subset, on a few months of bars: they are its only run of those training loops.
SLOW_FIXTURES = {
    ("test_train.py", "trained"),  # three FLAG-TRADER models
    ("test_cgdt.py", "model"),  # a CGDT model
}
SLOW = {
    "tests/test_train.py::test_reviewed_per_position_loss_leaks_the_future",
    "tests/test_train.py::test_further_losses_train_and_trade",
    "tests/test_train.py::test_train_command_writes_checkpoint_with_provenance",
    "tests/test_cli.py::test_info_full_preset_in_a_real_process",  # builds the 88M-parameter preset
    # a calibration over many markets, not a unit check (the subset keeps the gate's unit tests)
    "tests/test_gate_calibration.py::test_noise_markets_do_not_pass_and_a_planted_edge_does",
    # 88M random weights saved and read back; test_model.py counts the full preset in the subset
    "tests/test_checkpoint.py::test_full_size_reviewed_checkpoint_counts",
}


def _is_slow(item) -> bool:
    if "quick_demo" in item.fixturenames or item.nodeid.split("[")[0] in SLOW:
        return True
    return any((Path(item.path).name, name) in SLOW_FIXTURES for name in item.fixturenames)


# Seconds each of the longest tests (file::function) took, setup included, in CI's run of the whole suite
# on 2 cores under pytest-xdist (`--durations=30`, 2026-12-02; others: 0.5 s): the workers take the
# longest work first, so that no long test is left for the end.
LONG = {
    "test_crash_and_concurrency.py::test_dashboard_reads_while_the_cli_writes": 65,
    "test_train.py::test_reviewed_per_position_loss_leaks_the_future": 59,
    "test_crash_and_concurrency.py::test_sigkill_never_leaves_a_partial_run": 43,
    "test_tasks.py::test_retraining_cpcv_on_local_ray_matches_the_local_pool": 37,
    "test_pipeline.py::test_validate_retrain_adds_a_labelled_cpcv_mode": 27,
    "test_tasks.py::test_after_on_ray_starts_a_dependent_item_once_its_dependency_finished": 19,
    "test_train.py::test_plain_cross_entropy_collapses_to_hold": 16,  # the `trained` fixture
    "test_root_cause_in_browser.py::test_the_live_ablation_runs_in_the_browser": 16,
    "test_dashboard.py::test_every_page_from_the_sidebar": 13,
    "test_train.py::test_retraining_cpcv_in_worker_processes": 12,
    "test_review_identity.py::test_two_reviewers_sign_through_the_header_and_the_run_turns_approved": 11,
    "test_cgdt.py::test_critic_beats_the_unconditional_gaussian": 10,  # the module's model
    "test_tasks.py::test_workers_exit_when_their_caller_is_killed": 10,
    "test_tasks.py::test_evaluate_with_inference_on_ray_writes_the_same_run": 10,
    "test_dashboard.py::test_slider_moves_the_numbers": 9,
    "test_launcher.py::test_the_launchers_server_shows_a_page_on_its_first_visit": 9,
    "test_dashboard.py::test_a_shared_url_reopens_the_threshold": 8,
    "test_review_identity.py::test_the_comparison_page_shows_both_runs": 7,
    "test_store.py::test_two_writers_and_a_reader_at_once": 7,
    "test_dashboard.py::test_no_metric_is_cut_off_on_a_laptop": 6,  # each of its pages
    "test_cli.py::test_info_full_preset_in_a_real_process": 6,
    "test_dashboard.py::test_the_model_configuration_has_a_label": 6,
    "test_cgdt.py::test_the_sweep_computes_each_bar_about_once_with_the_same_bits": 5,
    "test_root_cause_in_browser.py::test_the_page_shows_the_stored_verdict_table": 5,
    "test_train.py::test_further_losses_train_and_trade": 4,  # each of its three losses
    "test_train.py::test_train_command_writes_checkpoint_with_provenance": 4,
    "test_gate_calibration.py::test_noise_markets_do_not_pass_and_a_planted_edge_does": 4,
    "test_store.py::test_six_reviewers_at_the_same_moment_each_land_once": 4,
}


def _xdist_order(items: list) -> list:
    """The tests in the order pytest-xdist's workers take them (``--dist loadfile``: a file is one unit
    of work, so its module fixtures, trained models, servers and the Ray cluster start once): the
    longest file that needs the quick demo first, so that one worker builds it at once while the
    other takes the longest files that do not need it; then the files that need it, longest first.
    (Not --dist loadgroup: under pytest 9, pytest-xdist 3.8 never sees its groups.)"""
    units: dict[Path, list] = {}
    for item in items:
        units.setdefault(Path(item.path), []).append(item)

    def cost(unit: list) -> float:
        return sum(LONG.get(f"{Path(i.path).name}::{i.originalname}", 0.5) for i in unit)

    def demo(unit: list) -> bool:
        return any("quick_demo" in i.fixturenames for i in unit)

    order = sorted(units.values(), key=cost, reverse=True)
    first = [u for u in order if demo(u)][:1]
    order = first + [u for u in order if not demo(u)] + [u for u in order if demo(u) and u not in first]
    return [item for unit in order for item in unit]


def pytest_configure(config):
    # the workers take the files in the order _xdist_order gives them, not by their number of tests
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    browser_dir = Path(__file__).resolve().parent / "browser"
    for item in items:
        if browser_dir in Path(item.path).parents:
            item.add_marker(pytest.mark.browser)
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
    if WORKER:
        items[:] = _xdist_order(items)


# ---------------------------------------------------------------------------- browser (Playwright + chromium)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FLAGCORE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def require_browser() -> None:
    """Skip without playwright or chromium, or fail when FLAGCORE_REQUIRE_BROWSER is set (CI)."""
    why = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "playwright is not installed"
    if why is None and not Path(CHROMIUM).exists():
        why = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if why:
        if os.environ.get("FLAGCORE_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="session")
def browser():
    """One headless chromium for the session (Playwright's sync API allows one per thread)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
            ],
        )
        yield b
        b.close()


@contextlib.contextmanager
def streamlit_server(store_path, log_path, env: dict | None = None):
    """A real ``streamlit run app.py`` on a free local port over ``store_path``; yields its URL and
    on exit stops it and checks its log holds no traceback. ``env`` adds environment variables (a
    team config file, for example)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FLAGCORE_STORE": str(store_path), **(env or {})}
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(REPO / "app.py"),
                "--server.headless",
                "true",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"streamlit did not come up: {Path(log_path).read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = Path(log_path).read_text()
    assert "Traceback" not in text, text[-3000:]
