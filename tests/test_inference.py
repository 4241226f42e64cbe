import json
import platform
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_frame, with_trained_lora

from flagcore.cli.command import main
from flagcore.data.dataset import load_dataset
from flagcore.errors import FlagcoreError
from flagcore.models.checkpoint import save_checkpoint
from flagcore.models.flag_trader import PRESETS, build_model
from flagcore.models.inference import predict


@pytest.fixture(scope="module")
def model():
    m = build_model(PRESETS["demo"], seed=7)
    with_trained_lora(m, 0.05)
    return m.eval()


def test_shapes_and_probabilities(model):
    x = np.random.default_rng(0).normal(size=(100, 60)).astype(np.float32)
    pred = predict(model, x, batch_size=16)
    assert pred.logits.shape == (100, 3) and pred.probs.shape == (100, 3)
    assert pred.action.shape == (100,) and pred.confidence.shape == (100,)
    np.testing.assert_allclose(pred.probs.sum(1), 1, atol=1e-6)
    assert np.array_equal(pred.action, pred.logits.argmax(1))
    np.testing.assert_allclose(pred.confidence, pred.probs.max(1), atol=1e-7)


def test_each_bar_is_the_last_position_of_its_window(model):
    W = PRESETS["demo"].window
    x = np.random.default_rng(1).normal(size=(70, 60)).astype(np.float32)
    pred = predict(model, x, batch_size=7)
    with torch.inference_mode():
        for t in (W - 1, 40, 69):
            want = model(torch.from_numpy(x[None, t - W + 1 : t + 1]))[0, -1].numpy()
            np.testing.assert_allclose(pred.logits[t], want, atol=1e-5)
        # short history: bar 5 sees bars 0..5 only
        want = model(torch.from_numpy(x[None, :6]))[0, -1].numpy()
    np.testing.assert_allclose(pred.logits[5], want, atol=1e-5)
    assert pred.short_history[: W - 1].all() and not pred.short_history[W - 1 :].any()


def test_no_look_ahead(model):
    x = np.random.default_rng(2).normal(size=(90, 60)).astype(np.float32)
    y = x.copy()
    y[60:] += 5.0  # change the future
    a, b = predict(model, x), predict(model, y)
    np.testing.assert_array_equal(a.logits[:60], b.logits[:60])
    assert not np.allclose(a.logits[60:], b.logits[60:])


def test_deterministic_and_batch_size_independent(model):
    x = np.random.default_rng(3).normal(size=(120, 60)).astype(np.float32)
    a, b = predict(model, x, batch_size=32), predict(model, x, batch_size=32)
    assert np.array_equal(a.logits, b.logits)
    c = predict(model, x, batch_size=5)
    np.testing.assert_allclose(a.logits, c.logits, atol=1e-5)


def test_progress_reaches_total_and_model_untouched(model):
    x = np.zeros((50, 60), np.float32)
    calls = []
    predict(model, x, batch_size=8, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (50, 50) and all(t == 50 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert any("lora_A" in n for n, _ in model.named_parameters())  # not merged in place


def test_bad_inputs(model):
    with pytest.raises(FlagcoreError, match="do not fit the model's state_dim 60"):
        predict(model, np.zeros((10, 49)))
    with pytest.raises(FlagcoreError, match="NaN"):
        predict(model, np.full((10, 60), np.nan))
    with pytest.raises(FlagcoreError, match="window 65"):
        predict(model, np.zeros((10, 60)), window=65)


def test_predict_command_on_padded_dataset(tmp_path, model, capsys):
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    df = make_frame(n=60, n_features=49)
    df.to_csv(tmp_path / "d.csv", index=False)
    out = tmp_path / "pred.parquet"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--data",
                str(tmp_path / "d.csv"),
                "--out",
                str(out),
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    s = json.loads(capsys.readouterr().out)
    assert s["bars"] == 60 and s["padded_inputs"] == list(range(49, 60))
    assert s["short_history_bars"] == PRESETS["demo"].window - 1
    assert abs(sum(s["action_shares"].values()) - 1) < 1e-9
    got = pd.read_parquet(out)
    ds = load_dataset(tmp_path / "d.csv")
    want = predict(model, ds.features)
    np.testing.assert_array_equal(got[["logit_sell", "logit_hold", "logit_buy"]].to_numpy(), want.logits)
    assert set(got["action"]) <= {"SELL", "HOLD", "BUY"}


# one process, as the setting lasts for the process: int8 inference with glibc's defaults, then
# with the freed memory kept (what ``predict`` sets); minor page faults and logits of each
KEPT_MEMORY_SCRIPT = """
import json, resource
import numpy as np
import flagcore.models.inference as inference
from flagcore.models.flag_trader import build_model
from flagcore.models.flag_trader_config import FlagTraderConfig
from flagcore.models.malloc import keep_freed_memory

cfg = FlagTraderConfig(d_model=256, num_layers=2, num_heads=4, ff_dim=1024, max_length=64, window=64)
model = build_model(cfg, seed=0).eval()
x = np.random.default_rng(0).normal(size=(63 + 256, cfg.state_dim)).astype(np.float32)

def faults_and_logits():
    inference.predict(model, x[:80], precision="int8")  # the worker threads' heaps set up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    logits = inference.predict(model, x, precision="int8").logits
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, logits.tolist()

inference.keep_freed_memory = lambda: False  # glibc's defaults first
default = faults_and_logits()
applied = keep_freed_memory()
kept = faults_and_logits()
print(json.dumps({"applied": applied, "default": default, "kept": kept}))
"""


@pytest.mark.slow
@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)
def test_inference_reuses_freed_memory_and_keeps_its_bits():
    # the int8 batches' activations (4 MB each here) came from fresh pages every batch: a quarter
    # of the `full` preset's int8 time went to the kernel's page faults
    r = subprocess.run([sys.executable, "-c", KEPT_MEMORY_SCRIPT], capture_output=True, text=True, check=True)
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["applied"] is True
    (default_faults, default_logits), (kept_faults, kept_logits) = out["default"], out["kept"]
    assert kept_faults * 3 < default_faults, (kept_faults, default_faults)  # 5x to 100x here
    assert kept_logits == default_logits  # the same bits: only where the memory comes from changed


# worker threads allocating side by side, then glibc's report of its arenas on stderr
ARENAS_SCRIPT = """
import ctypes, sys, threading
import numpy as np
from flagcore.models.malloc import keep_freed_memory
if sys.argv[1] == "kept":
    keep_freed_memory()
go = threading.Barrier(3)
def work():
    go.wait()
    for _ in range(20):
        np.ones(1 << 20).sum()  # 8 MB from malloc
threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)
def test_threads_share_one_arena_once_freed_memory_is_kept():
    # a worker thread's own arena unmaps its 64 MB heaps once empty: int8 batches spilled into
    # fresh heaps in some runs, 0.5-3.2 million faults per 800 windows
    def arenas(mode: str) -> int:
        r = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT, mode], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stderr.count("Arena ")

    assert arenas("default") >= 2  # glibc's default: an arena per thread
    assert arenas("kept") == 1


def test_keep_freed_memory_applies_once():
    from flagcore.models import malloc

    first = malloc.keep_freed_memory()
    assert first == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert malloc.keep_freed_memory() is first and malloc.keep_freed_memory.cache_info().hits >= 1
