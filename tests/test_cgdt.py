"""CGDT: losses, causality, the batched autoregressive inference, determinism, checkpoints.

One small model is trained once per module on two years of demo bars (train from 2023, 1,500
test bars without the order-flow feed) with a reduced architecture and few windows, so that the
file runs in well under a minute on 2 CPU cores.
"""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from flagcore.data.dataset import load_dataset, write_dataset
from flagcore.errors import FlagcoreError
from flagcore.models.cgdt import CGDT, CGDTConfig
from flagcore.models.cgdt_file import FORMAT, load_cgdt, save_cgdt
from flagcore.models.cgdt_predict import predict_cgdt, predict_cgdt_sequential
from flagcore.training.cgdt import action_returns, guidance_loss, market_returns, rewards_to_go, train_cgdt

SMALL = CGDTConfig(
    context=8,
    d_model=32,
    num_layers=1,
    num_heads=2,
    ff_dim=64,
    critic_hidden=64,
    critic_epochs=2,
    epochs=4,
    windows_per_epoch=8192,
    calibration_bars=1024,
)
TINY = dataclasses.replace(SMALL, critic_epochs=1, epochs=1, windows_per_epoch=512, rtg_quantile=0.6)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from flagcore.data.features import build_datasets
    from flagcore.data.market import demo_market

    bars = demo_market(test_bars=1500, train_start=pd.Timestamp("2023-01-01", tz="UTC"))
    out = build_datasets(bars, test_start="2025-01-01")
    folder = tmp_path_factory.mktemp("cgdt")
    paths = {k: write_dataset(df, folder / f"{k}.parquet", **meta) for k, (df, meta) in out.items()}
    return load_dataset(paths["train"]), load_dataset(paths["test"])


@pytest.fixture(scope="module")
def model(data):
    return train_cgdt(data[0], SMALL)


@pytest.fixture(scope="module")
def test_preds(model, data):
    return predict_cgdt(model, data[1])


# ----------------------------------------------------------------------------- formulation


def test_rewards_to_go_match_a_direct_sum():
    rng = np.random.default_rng(0)
    n, H = 60, 5
    close = 100 * np.exp(np.cumsum(rng.normal(scale=0.01, size=n)))
    labels = rng.integers(0, 3, size=n).astype(np.int8)
    labels[30] = -1  # unresolved: every bar whose horizon covers it has no return-to-go
    R, valid = rewards_to_go(close, labels, H, vol_span=10)

    from flagcore.data.labels import ewm_volatility

    sigma = ewm_volatility(close, span=10)
    r = [
        (-1, 0, 1)[labels[t]] * np.log(close[t + 1] / close[t]) / sigma[t] if labels[t] >= 0 else 0.0
        for t in range(n - 1)
    ]
    for t in range(n):
        ok = t + H <= n - 1 and all(labels[t : t + H] >= 0) and np.isfinite(r[t : t + H]).all()
        assert valid[t] == ok, t
        if ok:
            assert R[t] == pytest.approx(sum(r[t : t + H]), abs=1e-12)
        else:
            assert np.isnan(R[t])
    assert not valid[26:31].any() and valid[25] and valid[31]


def test_counterfactual_returns_change_only_the_first_reward():
    rng = np.random.default_rng(2)
    n, H = 50, 4
    close = 100 * np.exp(np.cumsum(rng.normal(scale=0.01, size=n)))
    labels = rng.integers(0, 3, size=n).astype(np.int8)
    RA, valid = action_returns(close, labels, H, vol_span=10)
    R, valid2 = rewards_to_go(close, labels, H, vol_span=10)
    # no causal sigma at bars 0, 1
    assert np.array_equal(valid, valid2) and valid.sum() == n - H - 2 and not valid[:2].any()
    t = np.flatnonzero(valid)
    np.testing.assert_allclose(RA[t, labels[t]], R[t], atol=1e-12)  # the action taken: R_t itself
    m = market_returns(close, vol_span=10)
    np.testing.assert_allclose(RA[t, 2] - RA[t, 0], 2 * m[t], atol=1e-12)  # BUY vs SELL: +-m_t
    np.testing.assert_allclose(RA[t, 2] - RA[t, 1], m[t], atol=1e-12)
    assert np.isnan(RA[~valid]).all()


def test_guidance_is_asymmetric_and_follows_the_policy():
    mu = torch.tensor([[0.0, 0.0, 0.0]])
    sigma = torch.tensor([[1.0, 1.0, 2.0]])
    sure_buy = torch.tensor([[-30.0, -30.0, 30.0]])
    # target 2 above the expected return of BUY (sigma 2): shortfall u = 1, weight tau
    short = guidance_loss(sure_buy, torch.tensor([2.0]), mu, sigma, tau=0.8)
    excess = guidance_loss(sure_buy, torch.tensor([-2.0]), mu, sigma, tau=0.8)
    assert short.item() == pytest.approx(0.8) and excess.item() == pytest.approx(0.2)
    # the loss is the policy's expectation: a sure SELL at sigma 1 has u = 2, four times the cost
    sure_sell = torch.tensor([[30.0, -30.0, -30.0]])
    assert guidance_loss(sure_sell, torch.tensor([2.0]), mu, sigma, 0.8).item() == pytest.approx(3.2)


def test_policy_is_causal_token_by_token():
    """Step t's logits depend on R_<=t, s_<=t, a_<t only: changing a_t or anything later does nothing."""
    torch.manual_seed(0)
    net = CGDT(SMALL).eval()
    T = SMALL.context
    rtg, states = torch.randn(2, T), torch.randn(2, T, SMALL.state_dim)
    acts = torch.randint(0, 3, (2, T))
    with torch.no_grad():
        base = net(rtg, states, acts)
        for what in ("action", "rtg", "state"):
            r, s, a = rtg.clone(), states.clone(), acts.clone()
            t = 3
            if what == "action":
                a[:, t] = (a[:, t] + 1) % 3
            elif what == "rtg":
                r[:, t + 1] += 5.0
            else:
                s[:, t + 1] += 5.0
            out = net(r, s, a)
            assert torch.equal(out[:, : t + 1], base[:, : t + 1]), what
            assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :]), what


def _random_policy(num_layers: int, seed: int = 0) -> CGDT:
    """An untrained, seeded policy whose actions depend on the earlier ones (a cheap stand-in)."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(SMALL, num_layers=num_layers, state_dim=6, dropout=0.0)
    net = CGDT(cfg).eval()
    with torch.no_grad():  # a strong action embedding: the fixed point takes several rounds
        net.policy.embed_action.weight.mul_(50.0)
    return net


@pytest.mark.parametrize("num_layers", [1, 2])
def test_last_logits_equal_the_full_forward_at_the_last_step(num_layers):
    net = _random_policy(num_layers)
    T = net.config.context
    rtg, states = torch.randn(64, T), torch.randn(64, T, net.config.state_dim)
    acts = torch.randint(0, 4, (64, T))
    with torch.inference_mode():
        full = net(rtg, states, acts)[:, -1]
        last = net.last_logits(rtg, states, acts)
        acts[:, -1] = (acts[:, -1] + 1) % 4  # a_T comes after s_T: it changes nothing
        again = net.last_logits(rtg, states, acts)
    torch.testing.assert_close(last, full, atol=1e-5, rtol=0)
    assert torch.equal(again, last)


def test_fixed_point_equals_the_recursion_whatever_the_first_guess():
    """The batched prediction (last-token forward, no final pass, small batches padded) gives the
    bar-by-bar recursion's logits within 1e-5, from any first guess of the actions."""
    from flagcore.models.cgdt_predict import predict_features

    net = _random_policy(2)
    n, K = 160, net.config.context
    X = torch.randn(n, net.config.state_dim)
    target = torch.tensor(0.3)
    with torch.inference_mode():
        slow = torch.empty(n, 3)
        acts = torch.full((n,), 3)
        for t in range(n):  # the recursion, bar by bar, through the full forward
            lo = max(0, t - K + 1)
            a = acts[None, lo : t + 1].clone()
            a[0, -1] = 3
            slow[t] = net(target.expand(1, t + 1 - lo), X[None, lo : t + 1], a)[0, -1]
            acts[t] = slow[t].argmax()
        fast, short = predict_features(net, X, target, batch_size=64)
        guessed, _ = predict_features(net, X, target, batch_size=7, guess=torch.randint(0, 3, (n,)))
        again, _ = predict_features(net, X, target, batch_size=64)
    assert 0 < (acts == 1).float().mean() < 1  # not a constant policy
    for got in (fast, guessed):
        assert torch.equal(got.argmax(-1), acts)
        torch.testing.assert_close(got, slow, atol=1e-5, rtol=0)
    assert torch.equal(again, fast) and short.sum() == K - 1  # deterministic
    with pytest.raises(FlagcoreError, match="guess"):
        predict_features(net, X, target, guess=torch.zeros(n - 1, dtype=torch.long))


def test_the_sweep_computes_each_bar_about_once_with_the_same_bits(monkeypatch):
    """The first sweep over 32 stretches computes each bar once and fixes up the stretches' starts:
    under 1.5 windows a bar (Jacobi rounds from unknown actions computed every bar at least twice),
    and bit for bit the logits of one stretch (a sweep of single bars: the recursion itself)."""
    from flagcore.models import cgdt_predict

    net = _random_policy(2)
    n, K = 2000, net.config.context
    X, target = torch.randn(n, net.config.state_dim), torch.tensor(0.3)
    windows: list[int] = []
    window_logits = cgdt_predict._window_logits

    def counted(net, X, acts, ends, target, bs):
        windows.append(ends.numel())
        return window_logits(net, X, acts, ends, target, bs)

    monkeypatch.setattr(cgdt_predict, "_window_logits", counted)
    with torch.inference_mode():
        swept, _ = cgdt_predict.predict_features(net, X, target, batch_size=64)
        monkeypatch.setattr(cgdt_predict, "SEGMENTS", 1)
        windows_swept = sum(windows)
        one_by_one, _ = cgdt_predict.predict_features(net, X, target, batch_size=64)
    assert windows_swept < 1.5 * (n - K + 1)
    assert sum(windows) - windows_swept == n - K + 1  # one stretch: each bar once, nothing to fix
    assert torch.equal(swept, one_by_one)
    assert 0 < (swept.argmax(-1) != 1).float().mean() < 1  # not a constant policy


def test_critic_beats_the_unconditional_gaussian(model):
    # RTGs are standardised: the marginal N(0, 1) scores 0.5 on this NLL (constant dropped)
    nll = [h["nll"] for h in model.info["history"] if h["stage"] == "critic"]
    assert nll[0] > nll[-1] and nll[-1] < 0.45


# ----------------------------------------------------------------------------- behaviour


def test_predicts_all_three_classes_on_the_test_bars(model, data, test_preds):
    """Test labels are about 13% SELL, 63% HOLD, 24% BUY: 5% per class rules out a collapse."""
    test = data[1]
    e = test.eval_index
    assert len(test_preds) == test.n_bars
    action = test_preds.action[e:]
    shares = np.bincount(action, minlength=3) / action.size
    assert (shares >= 0.05).all(), shares
    # the calibrated target makes the policy hold about hold_share of the calibration bars
    assert model.info["calibration"]["hold_share"] == pytest.approx(SMALL.hold_share, abs=0.1)
    assert test_preds.short_history.sum() == SMALL.context - 1
    assert np.allclose(test_preds.probs.sum(1), 1, atol=1e-5)


def test_batched_inference_equals_the_bar_by_bar_recursion(model, data):
    ds = data[1].slice(0, 300)
    fast, slow = predict_cgdt(model, ds), predict_cgdt_sequential(model, ds)
    assert np.array_equal(fast.action, slow.action)
    np.testing.assert_allclose(fast.logits, slow.logits, atol=1e-5, rtol=0)


def test_no_look_ahead(model, data, test_preds):
    test = data[1]
    t = test.eval_index + 400
    rng = np.random.default_rng(1)
    features = test.features.copy()
    features[t + 1 :, : test.n_features] = rng.normal(size=(test.n_bars - t - 1, test.n_features))
    close = test.close.copy()
    close[t + 1 :] *= np.exp(rng.normal(scale=0.05, size=test.n_bars - t - 1))
    labels = test.labels.copy()
    labels[t + 1 :] = rng.permutation(labels[t + 1 :])
    perturbed = dataclasses.replace(test, features=features, close=close, labels=labels)
    got = predict_cgdt(model, perturbed)
    assert np.array_equal(got.logits[: t + 1], test_preds.logits[: t + 1])
    assert not np.array_equal(got.action[t + 1 :], test_preds.action[t + 1 :])  # the change is seen


def test_training_is_deterministic_for_a_seed(data):
    train, test = data
    ds = test.slice(0, 400)
    a = predict_cgdt(train_cgdt(train, TINY), ds).logits
    b = predict_cgdt(train_cgdt(train, TINY), ds).logits
    c = predict_cgdt(train_cgdt(train, dataclasses.replace(TINY, seed=1)), ds).logits
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_training_refuses_data_it_cannot_use(data):
    train = data[0]
    with pytest.raises(FlagcoreError, match="labels"):
        train_cgdt(dataclasses.replace(train, labels=None), TINY)
    with pytest.raises(FlagcoreError, match="close"):
        train_cgdt(dataclasses.replace(train, close=None), TINY)
    with pytest.raises(FlagcoreError, match="too few"):
        train_cgdt(train.slice(0, 60), TINY)


@pytest.mark.parametrize(
    "bad",
    [
        {"context": 0},
        {"asymmetry": 1.0},
        {"rtg_quantile": 0.0},
        {"dropout": 1.0},
        {"d_model": 30, "num_heads": 4},
        {"action_tokens": "oracle"},
        {"balance_classes": 1},
    ],
)
def test_config_refuses_bad_values(bad):
    with pytest.raises(FlagcoreError, match="CGDT config"):
        CGDTConfig(**bad)


def test_config_round_trips_and_refuses_unknown_fields():
    assert CGDTConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(FlagcoreError, match="unknown field"):
        CGDTConfig.from_dict({**SMALL.to_dict(), "gamma": 0.99})


# ----------------------------------------------------------------------------- checkpoints


def test_save_load_round_trip_is_exact(model, data, test_preds, tmp_path):
    path = save_cgdt(model, tmp_path / "sub" / "cgdt.safetensors")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    back = load_cgdt(path)
    assert back.config == model.config and not back.training
    assert back.info == model.info
    sd, sd2 = model.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    again = predict_cgdt(back, data[1])
    assert np.array_equal(again.logits, test_preds.logits)


def test_other_files_are_refused_naming_the_path(tmp_path, model):
    from flagcore.models.checkpoint import save_checkpoint
    from flagcore.models.flag_trader import FlagTraderConfig, build_model

    flag = save_checkpoint(
        build_model(
            FlagTraderConfig(
                d_model=16,
                num_layers=1,
                num_heads=2,
                ff_dim=32,
                max_length=8,
                window=4,
                lora_rank=2,
                lora_alpha=2.0,
            )
        ),
        tmp_path / "flagtrader.safetensors",
    )
    text = tmp_path / "notes.safetensors"
    text.write_text("not a checkpoint at all\n")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for path in (flag, text, empty, tmp_path / "missing.safetensors", tmp_path):
        with pytest.raises(FlagcoreError) as e:
            load_cgdt(path)
        assert str(path) in str(e.value)
    # a CGDT file whose tensors do not fit its config
    good = save_cgdt(model, tmp_path / "good.safetensors")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(good), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert meta["format"] == FORMAT
    tensors.pop("critic.head.bias")
    save_file(tensors, str(tmp_path / "broken.safetensors"), metadata=meta)
    with pytest.raises(FlagcoreError, match="critic.head.bias"):
        load_cgdt(tmp_path / "broken.safetensors")


def test_predict_command_reads_a_cgdt_checkpoint(model, data, tmp_path, capsys):
    import json

    from flagcore.cli.command import main
    from flagcore.data.predictions import load_predictions
    from flagcore.models.checkpoint import is_cgdt, load_checkpoint

    path = save_cgdt(model, tmp_path / "cgdt.safetensors")
    assert is_cgdt(path)
    with pytest.raises(FlagcoreError, match="a CGDT checkpoint, not FLAG-TRADER"):
        load_checkpoint(path)
    test = data[1]
    frame = pd.DataFrame({"timestamp": test.timestamps, "close": test.close})
    for j, name in enumerate(test.feature_names):
        frame[name] = test.features[:, j]
    write_dataset(frame, tmp_path / "test.parquet")
    out = tmp_path / "partner.parquet"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(path),
                "--data",
                str(tmp_path / "test.parquet"),
                "--out",
                str(out),
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["bars"] == test.n_bars
    partner = load_predictions(out)  # the file works as an ensemble partner
    np.testing.assert_allclose(partner.logits, predict_cgdt(model, test).logits, atol=1e-6)
