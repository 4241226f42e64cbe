import numpy as np
import pytest

from flagcore.analysis.backtest import (
    BacktestConfig,
    backtest,
    kelly_fraction,
    kelly_probability,
    metrics,
    payoff_ratio,
    positions,
    signal_payoff_ratio,
    simple_returns,
    strategy_returns,
    unit_metrics,
)
from flagcore.errors import FlagcoreError

UNIT = BacktestConfig(sizing="unit", fee_bps=0, slippage_bps=0)
SELL, HOLD, BUY = 0, 1, 2


def test_kelly_seed_example():
    assert kelly_fraction(0.55, 1.0) == pytest.approx(0.10)
    assert kelly_fraction(0.40, 1.0) == 0.0  # negative edge: no bet
    assert kelly_fraction(0.5, 2.0) == pytest.approx(0.25)


def test_flat_strategy_never_trades_and_flags_undefined_sharpe():
    close = np.array([100.0, 101, 99, 102])
    r = backtest(np.full(4, HOLD), close, 8760, cfg=UNIT)
    assert r["trades"] == 0 and r["total_return"] == 0 and r["max_drawdown"] == 0
    assert r["sharpe"] == 0.0 and r["sharpe_defined"] is False and not np.isnan(r["sortino"])
    assert r["exposure"] == 0 and r["win_rate"] == 0


def test_always_long_by_hand():
    close = np.array([100.0, 110, 99, 118.8])
    r = backtest(np.full(4, BUY), close, 3, cfg=UNIT)  # 3 periods per "year" -> one year
    rets = np.array([0.10, -0.10, 0.20])
    np.testing.assert_allclose(r["returns"], rets)
    assert r["total_return"] == pytest.approx(1.188 - 1)
    assert r["annual_return"] == pytest.approx(0.188)
    assert r["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * np.sqrt(3))
    downside = np.sqrt(np.mean(np.minimum(rets, 0) ** 2))
    assert r["sortino"] == pytest.approx(rets.mean() / downside * np.sqrt(3))
    assert r["max_drawdown"] == pytest.approx(0.99 / 1.10 - 1)
    assert r["calmar"] == pytest.approx(0.188 / (1 - 0.99 / 1.10))
    assert r["trades"] == 1 and r["exposure"] == 1 and r["win_rate"] == 1.0


def test_costs_on_every_change_of_position():
    close = np.array([100.0, 110, 99, 118.8, 118.8])
    cfg = BacktestConfig(sizing="unit", fee_bps=7, slippage_bps=3)  # 10 bps
    acts = np.array([BUY, BUY, SELL, HOLD, BUY])
    r = backtest(acts, close, 4, cfg=cfg)
    # positions held: +1, +1, -1, 0 ; traded: 1, 0, 2, 1
    want = np.array([0.10 - 0.001, -0.10, -0.20 - 0.002, 0.0 - 0.001])
    np.testing.assert_allclose(r["returns"], want)
    assert r["trades"] == 2 and r["position_changes"] == 3
    assert r["turnover_per_year"] == pytest.approx(4.0)  # 4 units traded over one year


def test_hold_keep_carries_the_position():
    pos = positions(
        np.array([HOLD, BUY, HOLD, HOLD, SELL, HOLD]), cfg=BacktestConfig(sizing="unit", hold="keep")
    )
    assert pos.tolist() == [0, 1, 1, 1, -1, -1]


def test_kelly_sizing_uses_confidence_and_payoff():
    cfg = BacktestConfig(sizing="kelly", kelly_fraction=0.5, max_leverage=1.0)
    pos = positions(np.array([BUY, SELL, BUY, HOLD]), np.array([0.55, 0.7, 0.4, 0.9]), cfg, payoff_ratio=1.0)
    np.testing.assert_allclose(pos, [0.05, -0.2, 0.0, 0.0])
    with pytest.raises(FlagcoreError, match="payoff ratio"):
        backtest(np.array([BUY, BUY]), np.array([1.0, 2.0]), 10, confidence=np.ones(2))


def test_payoff_ratio():
    pos = np.array([1, -1, 1, 0, 1])
    rets = np.array([0.02, 0.01, -0.01, 0.5])  # pnl: +0.02, -0.01, -0.01, (flat)
    assert payoff_ratio(pos, rets) == pytest.approx(0.02 / 0.01)
    assert payoff_ratio(np.zeros(3), np.ones(2)) == 1.0


def test_signal_shifted_into_the_future_changes_the_result():
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 500)))
    r = simple_returns(close)
    # the perfect-foresight signal: the sign of the next return, known only with look-ahead
    oracle = np.append(np.where(r > 0, BUY, SELL), HOLD)
    lagged = np.roll(oracle, 1)  # what a model could know: the previous bar's outcome
    good = backtest(oracle, close, 8760, cfg=UNIT)
    late = backtest(lagged, close, 8760, cfg=UNIT)
    assert good["win_rate"] == 1.0 and good["sharpe"] > 20
    assert abs(late["sharpe"]) < 3


def test_metrics_refuse_bad_input():
    with pytest.raises(FlagcoreError, match="positions need"):
        strategy_returns(np.ones(3), np.ones(3), 0.0)
    with pytest.raises(FlagcoreError, match="periods per year"):
        metrics(np.ones(3) * 0.01, np.ones(4), 0)
    with pytest.raises(FlagcoreError, match="class ids"):
        positions(np.array([3]))


def test_kelly_resizing_is_not_a_new_trade_but_costs():
    close = np.array([100.0, 101, 102, 103, 104])
    cfg = BacktestConfig(sizing="kelly", kelly_fraction=1.0, fee_bps=10, slippage_bps=0)
    r = backtest(
        np.array([BUY, BUY, BUY, SELL, SELL]),
        close,
        4,
        confidence=np.array([0.6, 0.7, 0.8, 0.6, 0.6]),
        cfg=cfg,
        payoff=1.0,
    )
    # sizes 0.2, 0.4, 0.6, then -0.2: two trades (one long run, one short), four position changes
    assert r["trades"] == 2 and r["position_changes"] == 4
    np.testing.assert_allclose(r["positions"], [0.2, 0.4, 0.6, -0.2, -0.2])
    traded = np.array([0.2, 0.2, 0.2, 0.8])
    want = r["positions"][:-1] * np.diff(close) / close[:-1] - 0.001 * traded
    np.testing.assert_allclose(r["returns"], want)


def test_kelly_probability_is_the_direction_given_a_directional_outcome():
    probs = np.array([[0.1, 0.6, 0.3], [0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.0, 1.0, 0.0], [0.05, 0.9, 0.05]])
    q = kelly_probability(probs, np.array([BUY, HOLD, SELL, BUY, SELL]))
    np.testing.assert_allclose(q, [0.75, 0.0, 2 / 3, 0.0, 0.5])  # HOLD and 0 / 0: no bet
    # a one-hot vector is certain; the raw p_a would have been its own share of all three outcomes
    assert kelly_probability(np.eye(3), np.array([SELL, HOLD, BUY])).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(FlagcoreError, match=r"shape \(n, 3\)"):
        kelly_probability(np.ones((2, 2)), np.array([0, 1]))
    with pytest.raises(FlagcoreError, match="2 actions for 3"):
        kelly_probability(np.ones((3, 3)) / 3, np.array([0, 1]))


@pytest.mark.parametrize(
    "p_a, p_opp, b", [(0.3, 0.1, 1.0), (0.2, 0.15, 1.5), (0.05, 0.04, 0.8), (0.5, 0.4, 1.0)]
)
def test_kelly_on_q_maximises_the_three_outcome_log_growth(p_a, p_opp, b):
    # win b with p_a, lose 1 with p_opp, 0 at the time barrier: g(f) = p_a log(1 + f b) + p_opp log(1 - f)
    f = np.linspace(0, 0.999, 200001)
    g = p_a * np.log1p(f * b) + p_opp * np.log1p(-f)
    q = kelly_probability(np.array([[p_opp, 1 - p_a - p_opp, p_a]]), np.array([BUY]))[0]
    assert q == pytest.approx(p_a / (p_a + p_opp))
    assert kelly_fraction(q, b) == pytest.approx(f[g.argmax()], abs=1e-4)


def test_signal_payoff_ratio_holds_the_positions_like_the_backtest():
    acts = np.array([BUY, HOLD, HOLD, SELL, HOLD])
    rets = np.array([0.02, -0.01, -0.03, 0.01])
    # flat: only the BUY bar (+0.02) and the SELL bar (-0.01) are in the market
    assert signal_payoff_ratio(acts, rets, BacktestConfig()) == pytest.approx(0.02 / 0.01)
    # keep: long through the two HOLD bars (-0.01, -0.03), then short (-0.01)
    keep = signal_payoff_ratio(acts, rets, BacktestConfig(hold="keep"))
    assert keep == pytest.approx(0.02 / np.mean([0.01, 0.03, 0.01]))


def test_unit_metrics_keep_the_hold_rule_and_costs():
    close = np.array([100.0, 110, 99, 118.8, 118.8])
    acts = np.array([BUY, BUY, SELL, HOLD, BUY])
    r = simple_returns(close)
    cfg = BacktestConfig(sizing="kelly", hold="keep", fee_bps=7, slippage_bps=3)
    got = unit_metrics(acts, r, 4, cfg)
    want = backtest(acts, close, 4, cfg=BacktestConfig(sizing="unit", hold="keep", fee_bps=7, slippage_bps=3))
    assert got == {k: want[k] for k in got}
    assert got["exposure"] == 1.0  # HOLD kept the short
