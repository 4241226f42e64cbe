import contextlib
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
    """``flagcore demo --quick`` built once: its store, run id and artifact folder."""
    from flagcore.pipeline.demo import build_demo
    from flagcore.store.store import Store

    base = tmp_path_factory.mktemp("quick_demo")
    store = Store(base / "store.duckdb")
    res = build_demo(store, quick=True, root=base / "demo")
    return {"store": store, "run_id": res["run_id"], "root": base / "demo" / "quick", "result": res}


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


def pytest_collection_modifyitems(config, items):
    browser_dir = Path(__file__).resolve().parent / "browser"
    for item in items:
        if browser_dir in Path(item.path).parents:
            item.add_marker(pytest.mark.browser)
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)


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
