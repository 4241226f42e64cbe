"""Property-based tests: random valid inputs never crash and keep their invariants."""

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flagcore.analysis.backtest import BacktestConfig, backtest
from flagcore.data.dataset import load_dataset
from flagcore.data.labels import ewm_volatility, triple_barrier

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def frames(draw):
    n = draw(st.integers(2, 60))
    k = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2021-01-01", tz="UTC") + pd.Timedelta(hours=draw(st.integers(0, 10_000)))
    steps = rng.integers(1, 5, n)
    ts = start + pd.to_timedelta(np.cumsum(steps), unit="h")
    df = pd.DataFrame({"timestamp": ts, "close": np.exp(rng.normal(0, 0.01, n).cumsum()) * 100})
    for j in range(k):
        df[f"x{j}"] = rng.normal(0, 1, n)
    labels = rng.choice(["SELL", "HOLD", "BUY", ""], n)
    df["label"] = labels
    return df, k


@SETTINGS
@given(frames(), st.sampled_from(["csv", "parquet"]))
def test_loader_keeps_its_invariants(tmp_path, case, fmt):
    df, k = case
    path = tmp_path / f"d.{fmt}"
    (df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path))
    ds = load_dataset(path, state_dim=60)
    assert ds.n_bars == len(df) and ds.features.shape == (len(df), 60)
    assert ds.padded_inputs == list(range(k, 60)) and not ds.features[:, k:].any()
    assert np.allclose(ds.features[:, :k], df[[f"x{j}" for j in range(k)]].to_numpy(), atol=1e-6)
    assert ds.timestamps.is_monotonic_increasing and str(ds.timestamps.tz) == "UTC"
    shares = ds.label_shares()
    assert abs(sum(shares.values()) - 1) < 1e-9 or sum(shares.values()) == 0
    assert set(np.unique(ds.labels)) <= {-1, 0, 1, 2}


@SETTINGS
@given(st.integers(0, 2**31 - 1), st.integers(60, 400), st.integers(2, 30), st.floats(0.3, 3.0))
def test_labels_never_look_past_their_horizon(seed, n, h, width):
    rng = np.random.default_rng(seed)
    close = np.exp(rng.standard_t(4, n).cumsum() * 0.01) * 100
    sigma = ewm_volatility(close)
    y = triple_barrier(close, sigma, h, width)
    assert y.shape == (n,) and set(np.unique(y)) <= {-1, 0, 1, 2}
    # a bar whose time barrier lies inside the data is resolved, once a causal volatility exists (bar 2)
    assert (y[2 : n - h] >= 0).all() and (y[:2] == -1).all()
    t = int(rng.integers(0, n - h - 1))
    # prices after t + h cannot change the label of bar t
    changed = close.copy()
    changed[t + h + 1 :] *= np.exp(rng.normal(0, 0.2, n - t - h - 1))
    assert triple_barrier(changed, ewm_volatility(changed), h, width)[t] == y[t]


@SETTINGS
@given(
    st.integers(0, 2**31 - 1),
    st.integers(3, 300),
    st.sampled_from(["kelly", "unit"]),
    st.sampled_from(["flat", "keep"]),
    st.floats(0, 50),
)
def test_backtest_equity_matches_returns_and_has_no_look_ahead(seed, n, sizing, hold, cost_bps):
    rng = np.random.default_rng(seed)
    close = np.exp(rng.normal(0, 0.01, n).cumsum()) * 100
    actions = rng.integers(0, 3, n).astype(np.int8)
    conf = rng.uniform(0.34, 1.0, n)
    cfg = BacktestConfig(sizing=sizing, hold=hold, fee_bps=cost_bps, slippage_bps=0.0)
    bt = backtest(actions, close, 8766.0, confidence=conf, payoff=float(rng.uniform(0.5, 2.0)), cfg=cfg)
    assert np.allclose(bt["equity"], np.cumprod(1 + bt["returns"]))
    assert np.isclose(bt["total_return"], bt["equity"][-1] - 1)
    assert np.isfinite(bt["sharpe"]) and (bt["sharpe_defined"] or bt["sharpe"] == 0.0)
    assert bt["trades"] >= 0 and 0 <= bt["exposure"] <= 1 and bt["max_drawdown"] <= 0
    # the result up to bar t depends on nothing after t's close
    t = int(rng.integers(1, n - 1))
    later = close.copy()
    later[t + 1 :] *= np.exp(rng.normal(0, 0.05, n - t - 1))
    bt2 = backtest(actions, later, 8766.0, confidence=conf, payoff=bt["payoff_ratio"], cfg=cfg)
    assert np.array_equal(bt2["positions"], bt["positions"])
    assert np.allclose(bt2["returns"][:t], bt["returns"][:t])
