"""One sizing convention for every option, calibrated Kelly probabilities, the signal apart from sizing."""

import numpy as np
import pytest

from flagcore.analysis.backtest import (
    DIRECTION,
    BacktestConfig,
    kelly_fraction,
    kelly_probability,
    metrics,
    payoff_ratio,
    positions,
    simple_returns,
)
from flagcore.analysis.calibration import (
    MIN_CALIBRATION_TRADES,
    calibration_sample,
    fit_calibration,
    isotonic_fit,
    platt_fit,
)
from flagcore.analysis.diagnostics import softmax
from flagcore.analysis.remedies import PeriodInputs, compare_options
from flagcore.errors import FlagcoreError

SELL, HOLD, BUY = 0, 1, 2
PRIOR = np.array([0.2, 0.6, 0.2])
SIZING_KEYS = {"signals", "sized_zero", "sized_zero_share", "probability"}


def period(seed: int, n: int, n_trades: int, *, labels: bool = True) -> PeriodInputs:
    """A random walk, its triple-barrier labels, and baseline logits that say HOLD except on
    ``n_trades`` bars, half of them clearly directional and half barely (Kelly sizes those 0)."""
    from flagcore.data.labels import triple_barrier

    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    y = triple_barrier(close, np.full(n, 0.01), 24, 1.0)
    x = rng.normal(size=(n, 3)) * 0.3 + np.array([-2.0, 2.0, -2.0])
    bars = rng.choice(n, n_trades, replace=False)
    side = rng.choice([SELL, BUY], n_trades)
    strong = np.arange(n_trades) % 2 == 0
    x[bars, side] += np.where(strong, 6.0, 4.5)  # the chosen side tops HOLD
    x[bars, 2 - side] += np.where(strong, 0.0, 4.4)  # weak bars: the other side nearly as likely
    return PeriodInputs({"baseline": x}, y if labels else None, close, 8760.0, prior=PRIOR)


TEST = period(1, 600, 40)
TRAIN = period(2, 3000, 300)


def assert_same(a: dict, b: dict) -> None:
    """Two option results identical in actions, positions, returns and every metric."""
    assert np.array_equal(a["actions"], b["actions"])
    assert np.array_equal(a["kelly_p"], b["kelly_p"])
    for k in ("positions", "returns", "equity"):
        assert np.array_equal(a["backtest"][k], b["backtest"][k]), k
    scalars = {k for k, v in a["backtest"].items() if not isinstance(v, np.ndarray)}
    assert scalars == {k for k, v in b["backtest"].items() if not isinstance(v, np.ndarray)}
    for k in scalars:
        assert a["backtest"][k] == b["backtest"][k], k
    assert a["unit"] == b["unit"] and a["sizing"] == b["sizing"]
    assert a["action_counts"] == b["action_counts"]


CONFIGS = [BacktestConfig(), BacktestConfig(hold="keep"), BacktestConfig(sizing="unit")]


@pytest.mark.parametrize("calibration", ["none", "isotonic", "platt"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["kelly-flat", "kelly-keep", "unit"])
def test_hold_threshold_zero_and_tau_zero_reproduce_the_baseline(cfg, calibration):
    opts = ["baseline", "opt3_threshold", "logit_adjust"]
    t = compare_options(
        TEST, TRAIN, cfg=cfg, hold_threshold=0.0, tau=0.0, options=opts, calibration=calibration
    )
    base = t["baseline"]
    assert base["backtest"]["trades"] > 0  # something to compare: the baseline trades
    assert_same(t["opt3_threshold"], base)
    assert_same(t["logit_adjust"], base)
    want = "model" if calibration == "none" else calibration
    assert base["sizing"]["probability"] == want


def test_calibration_none_is_the_uncalibrated_result():
    plain = compare_options(TEST, TRAIN, hold_threshold=0.5, tau=1.0)
    none = compare_options(TEST, TRAIN, hold_threshold=0.5, tau=1.0, calibration="none")
    assert set(plain) == set(none)
    for k in plain:
        assert_same(plain[k], none[k])
        assert none[k]["sizing"]["probability"] == "model" and none[k]["sizing"]["calibration_note"] is None


def test_kelly_reads_q_from_the_options_probability_vector():
    r = compare_options(TEST, TRAIN, hold_threshold=0.9, options=["opt3_threshold"])["opt3_threshold"]
    p = softmax(TEST.logits["baseline"])
    a = r["actions"]
    traded = a != HOLD
    assert (traded & (p.argmax(1) == HOLD)).any()  # some flipped bars trade on the second-best class
    np.testing.assert_array_equal(r["kelly_p"], kelly_probability(p, a))
    np.testing.assert_allclose(
        r["kelly_p"][traded], p[traded, a[traded]] / (p[traded, SELL] + p[traded, BUY])
    )
    assert (r["kelly_p"][~traded] == 0).all()
    np.testing.assert_array_equal(r["confidence"], p[np.arange(a.size), a])  # the chosen action's probability


def test_unit_metrics_and_the_sizing_summary():
    kelly = compare_options(TEST, TRAIN, options=["baseline"])["baseline"]
    unit = compare_options(TEST, TRAIN, cfg=BacktestConfig(sizing="unit"), options=["baseline"])["baseline"]
    # the unit view of a Kelly run is the unit run's configured metrics
    assert kelly["unit"] == unit["unit"]
    assert unit["unit"] == {k: unit["backtest"][k] for k in unit["unit"]}
    assert not any(isinstance(v, np.ndarray) for v in kelly["unit"].values())
    r = simple_returns(TEST.close)
    assert set(kelly["unit"]) == set(metrics(r, np.ones(r.size + 1), 8760.0))
    a = kelly["actions"]
    n_signals = int((a != HOLD).sum())
    b = kelly["backtest"]["payoff_ratio"]
    sized_zero = int(((a != HOLD) & (kelly_fraction(kelly["kelly_p"], b) == 0)).sum())
    assert 0 < sized_zero < n_signals  # the weak bars are sized 0, the strong ones are not
    assert set(kelly["sizing"]) >= SIZING_KEYS
    assert kelly["sizing"]["signals"] == n_signals == unit["sizing"]["signals"]
    assert kelly["sizing"]["sized_zero"] == sized_zero
    assert kelly["sizing"]["sized_zero_share"] == pytest.approx(sized_zero / n_signals)
    assert unit["sizing"]["sized_zero"] == 0 and unit["sizing"]["sized_zero_share"] == 0.0
    assert kelly["unit"]["trades"] >= kelly["backtest"]["trades"]


def test_no_signals_give_a_zero_share():
    quiet = PeriodInputs({"baseline": np.tile([0.0, 5.0, 0.0], (50, 1))}, None, TEST.close[:50], 8760.0)
    s = compare_options(quiet, options=["baseline"])["baseline"]["sizing"]
    assert s["signals"] == 0 and s["sized_zero"] == 0 and s["sized_zero_share"] == 0.0


def test_hold_keep_estimates_the_payoff_under_the_carried_positions():
    # the training baseline buys once, then says HOLD while the market falls: carried, that is a loss
    close = np.array([100.0, 102, 101, 99, 98, 99, 100, 99])
    x = np.tile([0.0, 3.0, 0.0], (8, 1))
    x[0] = [0.0, 0.0, 3.0]  # BUY at bar 0
    x[5] = [3.0, 0.0, 0.0]  # SELL at bar 5
    train = PeriodInputs({"baseline": x}, np.full(8, HOLD), close, 8760.0)
    a = x.argmax(1)
    r = simple_returns(close)
    flat = compare_options(TEST, train, options=["baseline"])["baseline"]["backtest"]["payoff_ratio"]
    keep_cfg = BacktestConfig(hold="keep")
    keep = compare_options(TEST, train, cfg=keep_cfg, options=["baseline"])["baseline"]["backtest"][
        "payoff_ratio"
    ]
    assert flat == payoff_ratio(DIRECTION[a], r)
    carried = positions(a, cfg=BacktestConfig(sizing="unit", hold="keep"))
    assert carried.tolist() == [1, 1, 1, 1, 1, -1, -1, -1]
    assert keep == pytest.approx(payoff_ratio(carried, r))
    # by hand: long over bars 0-4 earns +2%, -0.98%, -1.98%, -1.01%, +1.02%, then short -1.01%, +1%
    pnl = np.array([2 / 100, -1 / 102, -2 / 101, -1 / 99, 1 / 98, -1 / 99, 1 / 100])
    np.testing.assert_allclose(carried[:-1] * r, pnl)
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    assert keep == pytest.approx(wins.mean() / -losses.mean()) and keep != flat


def test_calibration_needs_a_labelled_training_period():
    with pytest.raises(FlagcoreError, match="isotonic calibration needs a training period with labels"):
        compare_options(TEST, None, calibration="isotonic")
    with pytest.raises(FlagcoreError, match="platt calibration needs a training period with labels"):
        compare_options(TEST, period(2, 300, 30, labels=False), calibration="platt")
    unresolved = period(2, 300, 30)
    unresolved.labels = np.full(300, -1)
    with pytest.raises(FlagcoreError, match="with labels"):
        compare_options(TEST, unresolved, calibration="platt")
    with pytest.raises(FlagcoreError, match="'beta'"):
        compare_options(TEST, TRAIN, calibration="beta")


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibrated_q_is_fitted_on_the_training_trades(method):
    r = compare_options(TEST, TRAIN, options=["baseline"], calibration=method)["baseline"]
    plain = compare_options(TEST, TRAIN, options=["baseline"])["baseline"]
    tp = softmax(TRAIN.logits["baseline"])
    ta = tp.argmax(1)
    cal = fit_calibration(method, kelly_probability(tp, ta), ta, TRAIN.labels)
    assert cal.fitted and r["sizing"]["probability"] == method
    assert r["sizing"]["calibration_trades"] == cal.n_trades >= MIN_CALIBRATION_TRADES
    a = r["actions"]
    traded = a != HOLD
    np.testing.assert_allclose(r["kelly_p"][traded], cal(plain["kelly_p"])[traded])
    assert (r["kelly_p"][~traded] == 0).all()
    # the baseline's q is near 1 on strong bars but a random walk is right about half the time
    assert r["kelly_p"][traded].mean() < plain["kelly_p"][traded].mean() - 0.1
    assert r["sizing"]["sized_zero"] > plain["sizing"]["sized_zero"]
    assert np.array_equal(r["actions"], plain["actions"]) and r["unit"] == plain["unit"]


def test_too_few_training_trades_fall_back_to_the_models_probability():
    few = period(3, 400, 10)
    r = compare_options(TEST, few, options=["baseline", "opt5_labels"], calibration="isotonic")
    plain = compare_options(TEST, few, options=["baseline", "opt5_labels"])
    s = r["baseline"]["sizing"]
    assert s["probability"] == "model" and "fewer than 50" in s["calibration_note"]
    assert np.array_equal(r["baseline"]["kelly_p"], plain["baseline"]["kelly_p"])
    assert r["opt5_labels"]["sizing"]["probability"] == "model"
    assert "certain" in r["opt5_labels"]["sizing"]["calibration_note"]


# ----------------------------------------------------------------------------- the calibration maps


def test_calibration_sample_keeps_trades_with_a_directional_outcome():
    q, hit = calibration_sample(
        [0.9, 0.6, 0.7, 0.8, 0.55, 0.65], [BUY, HOLD, SELL, BUY, BUY, SELL], [BUY, BUY, BUY, HOLD, -1, SELL]
    )
    assert q.tolist() == [0.9, 0.7, 0.65] and hit.tolist() == [1.0, 0.0, 1.0]


def test_isotonic_fit_pools_violators_and_ties():
    kq, kp = isotonic_fit([0.6, 0.55, 0.6, 0.7, 0.8, 0.8], [0, 1, 1, 0, 1, 1])
    # tied q 0.6 pooled to 0.5 (weight 2); 1 at 0.55 > 0.5 at 0.6 > 0 at 0.7 violate: pooled, 2 / 4
    assert kq.tolist() == [0.55, 0.6, 0.7, 0.8]
    np.testing.assert_allclose(kp, [0.5, 0.5, 0.5, 1.0])
    assert (np.diff(kp) >= 0).all()


def test_platt_recovers_the_identity_on_a_calibrated_sample():
    rng = np.random.default_rng(4)
    q = rng.uniform(0.3, 0.95, 20000)
    hit = (rng.uniform(size=q.size) < q).astype(float)
    a, b = platt_fit(q, hit)
    assert a == pytest.approx(1.0, abs=0.1) and b == pytest.approx(0.0, abs=0.1)
    cal = fit_calibration("platt", q, np.full(q.size, BUY), np.where(hit == 1, BUY, SELL))
    np.testing.assert_allclose(cal(np.array([0.4, 0.6, 0.9])), [0.4, 0.6, 0.9], atol=0.03)


def test_fit_calibration_guards():
    q = np.full(80, 0.7)
    buys = np.full(80, BUY)
    right = fit_calibration("isotonic", q, buys, buys)
    assert (
        not right.fitted
        and right.probability == "model"
        and "all 80 training trades were right" in right.note
    )
    assert fit_calibration("none", q, buys, buys).probability == "model"
    small = fit_calibration("platt", q[:10], buys[:10], np.r_[buys[:5], np.zeros(5, int)])
    assert not small.fitted and small.n_trades == 10 and "fewer than 50" in small.note
    np.testing.assert_array_equal(small(q), q)
    with pytest.raises(FlagcoreError, match="calibration must be one of"):
        fit_calibration("beta", q, buys, buys)
    with pytest.raises(FlagcoreError, match=r"\[0, 1\]"):
        fit_calibration("isotonic", q + 0.5, buys, buys)
