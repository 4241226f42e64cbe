"""The int8 CPU path, the batched short windows, and the cache's precisions (issue 18, item 1)."""

import threading
import time

import numpy as np
import pytest
import torch
from conftest import make_frame, with_trained_lora

from flagcore.data.dataset import load_dataset
from flagcore.errors import FlagcoreError
from flagcore.models.checkpoint import load_checkpoint, save_checkpoint
from flagcore.models.flag_trader import base_network, build_model, merged_copy
from flagcore.models.inference import BATCH_SIZE, in_order, predict, predict_bars
from flagcore.models.int8 import ENGINE, Int8FlagTrader, Int8Linear, smoothing
from flagcore.pipeline.inference_cache import (
    AGREEMENT_SAMPLE,
    INFERENCE_SETTINGS,
    InferenceStats,
    agreement_bars,
    cache_settings,
    flag_trader_logits,
    flag_trader_settings,
    settings_precision,
)
from flagcore.store.store import Store


@pytest.fixture(scope="module")
def model(request):
    from conftest import SMALL

    m = build_model(SMALL, seed=3)
    torch.manual_seed(3)  # the adapters' draw: the same numbers on every run
    with_trained_lora(m, 0.3)  # large adapters: logits spread well apart, like a trained model's
    return m.eval()


def features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 60)).astype(np.float32)


def test_fp32_full_windows_keep_their_bits(model):
    # the full windows run as they always did: unfolded, 256 per batch, last position only
    x = features(300)
    W = model.get_base_model().config.window
    net = merged_copy(model)
    with torch.inference_mode():
        windows = torch.from_numpy(x).unfold(0, W, 1).transpose(1, 2)
        want = torch.cat([net.last_logits(windows[s : s + 256]) for s in range(0, len(windows), 256)])
    got = predict(model, x)
    assert BATCH_SIZE["fp32"] == 256
    np.testing.assert_array_equal(got.logits[W - 1 :], want.numpy())


@pytest.mark.parametrize("batch_size", [3, 256])
def test_short_windows_batched_equal_one_by_one(model, batch_size):
    x = features(40, seed=1)
    W = model.get_base_model().config.window
    net = merged_copy(model)
    with torch.inference_mode():
        one = torch.stack([net.last_logits(torch.from_numpy(x[None, : t + 1]))[0] for t in range(W - 1)])
    got = predict(model, x, batch_size=batch_size)
    np.testing.assert_allclose(got.logits[: W - 1], one.numpy(), atol=1e-5)
    assert np.array_equal(got.action[: W - 1], one.numpy().argmax(1))
    assert got.short_history[: W - 1].all() and not got.short_history[W - 1 :].any()


def test_padded_windows_ignore_their_padding(model):
    net = merged_copy(model)
    x = torch.from_numpy(features(5, seed=2))
    padded = torch.zeros(2, 6, 60)
    padded[0, :3], padded[1, :5] = x[:3], x[:5]
    with torch.inference_mode():
        a = net.padded_last_logits(padded, torch.tensor([3, 5]))
        padded[0, 3:] = 9.0  # different padding: the same logits
        b = net.padded_last_logits(padded, torch.tensor([3, 5]))
        want = net.last_logits(x[None, :3])[0]
    np.testing.assert_allclose(a[0].numpy(), want.numpy(), atol=1e-5)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    with pytest.raises(FlagcoreError, match="lengths"):
        net.padded_last_logits(padded, torch.tensor([0, 5]))


def test_int8_agrees_with_fp32_and_is_deterministic(model):
    x = features(240, seed=4)
    ref = predict(model, x)
    a, b = (predict(model, x, precision="int8", batch_size=40) for _ in range(2))
    assert np.array_equal(a.logits, b.logits)  # same inputs and batch size: same bits
    diff = np.abs(a.logits - ref.logits)
    # quantised, not the same network; logits reach 1.6 here: per-channel weights, smoothed
    # activations and fused q/k/v give 0.05, per-tensor dynamic quantisation of each Linear 0.08
    assert np.isfinite(diff).all() and 0 < diff.max() < 0.15
    top2 = np.sort(ref.logits, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * diff.max()  # bars whose fp32 action is well separated
    assert clear.mean() > 0.5
    assert (a.action[clear] == ref.action[clear]).mean() >= 0.99
    assert (a.action == ref.action).mean() >= 0.9


def test_int8_batches_run_side_by_side_with_the_same_bits_on_any_thread_count(model):
    x = features(150, seed=5)
    before = torch.get_num_threads()
    done: list[int] = []
    try:
        torch.set_num_threads(1)  # every batch in the caller's thread
        one = predict(model, x, precision="int8", batch_size=24)
        torch.set_num_threads(2)  # two worker threads of one torch thread each
        two = predict(model, x, precision="int8", batch_size=24, progress=lambda d, n: done.append(d))
        assert torch.get_num_threads() == 2  # the workers' count is not left behind
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(one.logits, two.logits)
    assert done == sorted(done) and done[-1] == len(x)  # progress in the bars' order
    q = Int8FlagTrader(merged_copy(model))
    engines = {m.engine for m in q.modules() if isinstance(m, Int8Linear)}
    assert engines == {ENGINE or torch.backends.quantized.engine}


def test_in_order_keeps_the_order_and_gives_each_worker_one_torch_thread():
    seen: list[tuple[str, int, bool]] = []

    def run(i: int) -> torch.Tensor:
        seen.append(
            (threading.current_thread().name, torch.get_num_threads(), torch.is_inference_mode_enabled())
        )
        return torch.full((1,), float(i))

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        got = [float(t) for t in in_order(run, 9, threads=2)]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert got == [float(i) for i in range(9)]
    assert all(name != threading.current_thread().name and n == 1 and inf for name, n, inf in seen)
    assert [float(t) for t in in_order(run, 3, threads=1)] == [0.0, 1.0, 2.0]
    assert seen[-1][0] == threading.current_thread().name  # one thread: the caller's own


def test_in_order_stopped_early_leaves_the_remaining_jobs_unrun():
    ran: list[int] = []

    def run(i: int) -> torch.Tensor:
        time.sleep(0.2)  # slow jobs: the caller stops long before the last would start
        ran.append(i)
        return torch.zeros(1)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        jobs = in_order(run, 20, threads=2)
        next(jobs)
        jobs.close()  # what a caller's error or a cancelled run does to the generator
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert 1 <= len(ran) < 20  # the two running jobs finish, the queued ones are cancelled


def test_int8_linear_keeps_each_output_channel_and_smooths_wide_inputs():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(8, 32, generator=g), torch.zeros(8)
    w[0] *= 1000  # one wide output channel: a per-tensor scale would round the others to zero
    x = torch.randn(64, 32, generator=g)
    want = x @ w.T
    with torch.inference_mode():
        got = Int8Linear(w, b)(x)
    rest = (got - want)[:, 1:].abs().max() / want[:, 1:].abs().max()
    assert rest < 0.05  # per output channel: the narrow rows keep their precision

    x[:, 0] *= 100  # one wide input column sets the whole tensor's 7-bit activation scale
    want = x @ w.T
    reach = torch.ones(32)
    reach[0] = 100.0
    with torch.inference_mode():
        plain, smoothed = Int8Linear(w, b)(x), Int8Linear(w, b, smoothing(reach))(x)
    err_plain = (plain - want)[:, 1:].abs().mean()
    err_smoothed = (smoothed - want)[:, 1:].abs().mean()
    assert err_smoothed < err_plain / 2  # the wide column divided down before quantising
    # W x = (W diag(s)) (x / s): smoothing moves the scale, it does not change the product
    np.testing.assert_allclose(smoothed.numpy(), want.numpy(), atol=0.02 * float(want.abs().max()))


def test_int8_path_keeps_no_float32_copy_of_the_blocks(model):
    from flagcore.models.inference import _prepared

    q, _ = _prepared(model, "int8", None, torch.float32)
    floats = sum(p.numel() for p in q.parameters() if p.dtype == torch.float32)
    blocks = sum(p.numel() for p in base_network(model).transformer_blocks.parameters())
    assert len(q.net.transformer_blocks) == 0 and floats < blocks / 4  # embedding, norms and head
    kept = base_network(model)  # the caller's model is untouched
    assert len(kept.transformer_blocks) == kept.config.num_layers


def test_int8_network_merges_lora_and_reads_padded_windows(model):
    net = merged_copy(model)
    q = Int8FlagTrader(net)
    d = net.config.d_model
    assert [b.qkv.out_features for b in q.blocks] == [3 * d, 2 * d]  # q, k, v fused; the last: k, v
    assert q.blocks[0].q is None and q.blocks[-1].q is not None
    x = torch.from_numpy(features(12, seed=6))
    padded = torch.zeros(2, 8, 60)
    padded[0, :5], padded[1] = x[:5], x[:8]
    with torch.inference_mode():
        got = q.padded_last_logits(padded, torch.tensor([5, 8]))
        want = net.padded_last_logits(padded, torch.tensor([5, 8]))
        full = q.last_logits(x[None, :8])[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=0.1)
    np.testing.assert_allclose(got[1].numpy(), full.numpy(), atol=0.1)
    assert not any(p.requires_grad for p in q.parameters())


def test_int8_refused_off_the_cpu_and_unknown_precision(model):
    x = features(20)
    with pytest.raises(FlagcoreError, match="precision 'int8' runs on the CPU only.*cuda"):
        predict(model, x, precision="int8", device="cuda")
    with pytest.raises(FlagcoreError, match="int8.*float32"):
        predict(model, x, precision="int8", dtype=torch.bfloat16)
    with pytest.raises(FlagcoreError, match="precision must be one of fp32, int8, got 'fp16'"):
        predict(model, x, precision="fp16")
    with pytest.raises(FlagcoreError, match="precision 'int8' runs on the CPU only"):
        flag_trader_logits(None, model, "baseline", None, None, InferenceStats(), "cuda:0", precision="int8")


def test_predict_bars_equals_predict(model):
    x = features(60, seed=5)
    bars = np.array([0, 3, 7, 8, 30, 59])
    done: list[int] = []
    got = predict_bars(model, x, bars, batch_size=4, progress=lambda d, n: done.append(d))
    np.testing.assert_allclose(got, predict(model, x).logits[bars], atol=1e-5)
    assert len(done) >= 2 and done == sorted(done) and done[-1] == len(bars)  # bars done so far
    with pytest.raises(FlagcoreError, match=r"bars must be indices in \[0, 60\)"):
        predict_bars(model, x, np.array([60]))


def test_agreement_sample_covers_short_and_full_bars():
    bars = agreement_bars(9073, 64)
    assert len(bars) == 256 and (bars < 63).sum() == 16 and bars[0] == 0 and bars[-1] == 9072
    assert np.array_equal(agreement_bars(256, 64), np.arange(256))  # a short file: every bar
    assert len(agreement_bars(1000, 8)) == 7 + 240


def test_cache_keeps_precisions_apart(tmp_path, model):
    ckpt = load_checkpoint(save_checkpoint(model, tmp_path / "m.safetensors"))
    info = ckpt.checkpoint_info
    fp32, int8 = flag_trader_settings(info), flag_trader_settings(info, "int8")
    assert fp32 == f"{INFERENCE_SETTINGS};window={info.config.window}"  # existing caches still hit
    assert int8 != fp32 and "int8" in int8
    assert (settings_precision(fp32), settings_precision(int8)) == ("fp32", "int8")

    make_frame(n=120, n_features=49).to_csv(tmp_path / "d.csv", index=False)
    ds = load_dataset(tmp_path / "d.csv")
    store = Store(tmp_path / "s.duckdb")
    s1 = InferenceStats()
    seen: list[tuple[str, float]] = []
    m8 = flag_trader_logits(
        store, ckpt, "baseline", ds, None, s1, precision="int8", progress=lambda st, f: seen.append((st, f))
    )
    assert m8.precision == "int8" and s1.computed == 2  # the int8 logits and the fp32 sample
    # the fp32 sample reports its batches as it goes (an estimated time left), not only its start
    sample = [f for st, f in seen if st == "baseline: fp32 agreement sample"]
    assert sample[0] == 0.0 and any(0 < f < 1 for f in sample) and sample[-1] == 1.0
    ag = m8.agreement
    assert ag is not None and ag["bars_sampled"] == len(agreement_bars(ds.n_bars, info.config.window))
    assert ag["sample"] == AGREEMENT_SAMPLE and np.isfinite(ag["max_abs_logit_diff"])
    assert 0.9 <= ag["actions_equal_share"] <= 1.0

    s2 = InferenceStats()
    again = flag_trader_logits(store, ckpt, "baseline", ds, None, s2, precision="int8")
    assert s2.counts() == {"computed": 0, "cached": 2}  # neither int8 nor the fp32 sample rerun
    assert again.agreement == ag and np.array_equal(again.test, m8.test)

    s3 = InferenceStats()
    m32 = flag_trader_logits(store, ckpt, "baseline", ds, None, s3)
    assert s3.computed == 1 and m32.precision == "fp32" and m32.agreement is None
    assert not np.array_equal(m32.test, m8.test)  # its own entry, not the int8 one
    want = predict(ckpt, ds.features).logits[ds.eval_index :]
    np.testing.assert_array_equal(m32.test, want.astype(np.float64))
    assert store.cached_logits(info.sha256, ds.content_hash, cache_settings(int8, ds)) is not None


def test_prefetch_runs_the_precision_its_settings_name(tmp_path, model):
    from flagcore.pipeline.inference_cache import prefetch_inference
    from flagcore.training.tasks import Placement

    path = save_checkpoint(model, tmp_path / "m.safetensors")
    ckpt = load_checkpoint(path)
    info = ckpt.checkpoint_info
    make_frame(n=90, n_features=49, seed=1).to_csv(tmp_path / "d.csv", index=False)
    ds = load_dataset(tmp_path / "d.csv")
    store, stats = Store(tmp_path / "s.duckdb"), InferenceStats()
    int8 = flag_trader_settings(info, "int8")
    prefetch_inference(store, [("flag-trader", str(path), info.sha256, int8)], [ds], stats, Placement())
    got = store.cached_logits(info.sha256, ds.content_hash, cache_settings(int8, ds))
    want = predict(ckpt, ds.features, precision="int8").logits
    np.testing.assert_array_equal(got[["logit_sell", "logit_hold", "logit_buy"]].to_numpy(), want)
    fp32_key = cache_settings(flag_trader_settings(info), ds)
    assert store.cached_logits(info.sha256, ds.content_hash, fp32_key) is None
    with pytest.raises(FlagcoreError, match="precision 'int8' runs on the CPU only"):
        prefetch_inference(
            store, [("flag-trader", str(path), info.sha256, int8)], [ds], stats, Placement(), "cuda"
        )


def test_an_agreement_under_99_percent_says_to_confirm_with_fp32():
    from flagcore.dashboard.views import agreement_line

    def summary(share: float) -> dict:
        a = {"bars_sampled": 256, "actions_equal_share": share, "max_abs_logit_diff": 0.5}
        return {"inference": {"baseline": {"precision": "int8", "agreement": a}}}

    assert "confirm the verdict with an fp32 run" in agreement_line(summary(0.98))
    assert "confirm" not in agreement_line(summary(0.99))  # the issue's own bar: 99% is enough
    assert agreement_line({"inference": {"baseline": {"precision": "fp32"}}}) is None
