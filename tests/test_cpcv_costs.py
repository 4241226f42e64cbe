"""CPCV paths pay for what they do: switching grid values at group boundaries costs a trade, and a
retraining path is sized with payoff ratios estimated on each split's training observations only."""

import numpy as np
import pytest

from flagcore.analysis.backtest import (
    BacktestConfig,
    kelly_probability,
    payoff_ratio,
    positions,
    simple_returns,
)
from flagcore.analysis.cpcv import cpcv_paths, cpcv_splits, group_indices, posthoc_cpcv
from flagcore.errors import FlagcoreError

COST = 0.0006  # (4 + 2) bps, the backtest's default


def _row_returns(P: np.ndarray, m: np.ndarray, cost: float) -> np.ndarray:
    """Each grid value's own net returns, as the backtest charges them (the book starts flat)."""
    traded = np.abs(np.diff(np.concatenate([np.zeros((P.shape[0], 1)), P], axis=1), axis=1))
    return P * m - cost * traded


def _up_then_down(T: int = 400, seed: int = 0) -> np.ndarray:
    """A market that rises over its first half and falls over its second, with noise."""
    rng = np.random.default_rng(seed)
    drift = np.where(np.arange(T) < T // 2, 0.002, -0.002)
    return drift + rng.normal(0, 0.001, T)


def test_a_switch_between_opposite_positions_costs_the_position_change():
    T = 400
    m = _up_then_down(T)
    P = np.vstack([np.ones(T), -np.ones(T)])  # value 0 long throughout, value 1 short throughout
    R = _row_returns(P, m, COST)
    kw = {"n_groups": 4, "n_test_groups": 1}
    free = posthoc_cpcv(R, ["long", "short"], **kw)
    paid = posthoc_cpcv(R, ["long", "short"], **kw, positions=P, cost_rate=COST)
    # k = 1: one path; each split trains on the other three groups, so the rise (groups 0, 1) is
    # learnt where the fall dominates the training set and the other way round: short, short, long, long
    assert paid.fitted == free.fitted == ["short", "short", "long", "long"]
    t0 = group_indices(T, 4)[2][0]  # the one boundary where the path switches value
    diff = paid.path_returns - free.path_returns
    # the row "long" charged nothing at t0 (long before and after); the path goes from -1 to +1
    assert diff[0, t0] == pytest.approx(-COST * 2.0, abs=1e-15)
    assert np.count_nonzero(diff) == 1
    assert paid.switching_costs.tolist() == pytest.approx([2 * COST])
    assert paid.path_returns.sum() == pytest.approx(free.path_returns.sum() - 2 * COST, abs=1e-14)


def test_the_switching_cost_uses_the_positions_at_the_boundary():
    """Paths that keep a value pay nothing extra; those that switch pay |P_new - P_old| less what
    the new value's row already charged, at every switching boundary."""
    T = 600
    rng = np.random.default_rng(3)
    m = _up_then_down(T, seed=3)
    # three values with time-varying positions (sizes, flats and sign changes)
    P = np.vstack([np.sign(rng.normal(size=T)) * rng.uniform(0, 1, T) for _ in range(2)] + [np.ones(T)])
    P[0, ::7] = 0.0
    R = _row_returns(P, m, COST)
    kw = {"n_groups": 6, "n_test_groups": 2, "purge": 3, "embargo": 2}
    free = posthoc_cpcv(R, [0, 1, 2], **kw)
    paid = posthoc_cpcv(R, [0, 1, 2], **kw, positions=P, cost_rate=COST)
    chosen = np.array(free.fitted)
    groups, paths = group_indices(T, 6), cpcv_paths(6, 2)
    want = free.path_returns.copy()
    switches = 0
    for p, row in enumerate(paths):
        for g in range(1, 6):
            new, old = chosen[row[g]], chosen[row[g - 1]]
            if new != old:
                t0 = groups[g][0]
                want[p, t0] -= COST * (abs(P[new, t0] - P[old, t0 - 1]) - abs(P[new, t0] - P[new, t0 - 1]))
                switches += 1
    assert switches > 0  # the case exercises at least one switch
    np.testing.assert_allclose(paid.path_returns, want, rtol=0, atol=1e-15)


def test_a_single_value_grid_is_unchanged_by_the_costs():
    T = 300
    m = _up_then_down(T, seed=1)
    P = np.sign(np.sin(np.arange(T) / 9.0))[None, :]
    R = _row_returns(P, m, COST)
    one = posthoc_cpcv(R, [0.5], n_groups=6, n_test_groups=2, positions=P, cost_rate=COST)
    np.testing.assert_array_equal(one.path_returns, np.repeat(R, 5, axis=0))
    assert not one.switching_costs.any()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"positions": np.ones((2, 99))}, r"positions must have the shape of strategy_returns .* \(2, 100\)"),
        ({"positions": np.ones(100)}, r"got \(100,\)"),
        ({"positions": np.full((2, 100), np.nan)}, "positions must be finite"),
        ({"positions": np.ones((2, 100)), "cost_rate": -0.1}, "cost_rate must be finite and >= 0, got -0.1"),
        ({"cost_rate": 0.001}, "cost_rate 0.001 needs the positions"),
    ],
)
def test_cost_inputs_are_checked_up_front(kw, match):
    R = np.zeros((2, 100))
    with pytest.raises(FlagcoreError, match=match):
        posthoc_cpcv(R, [0, 1], n_groups=4, n_test_groups=1, **kw)


# ----------------------------------------------------------------------------- retraining CPCV sizing


def _synthetic_retrain(n: int = 240, n_groups: int = 4, k: int = 2, purge: int = 3, seed: int = 0):
    """A ``RetrainCPCV`` as ``retrain_cpcv`` would return it, with random logits instead of models."""
    from flagcore.training.cpcv import RetrainCPCV

    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    splits = cpcv_splits(n, n_groups, k, purge=purge, embargo=2)
    groups, paths = group_indices(n, n_groups), cpcv_paths(n_groups, k)
    split_logits = [rng.normal(0, 1.5, (n, 3)).astype(np.float32) for _ in splits]  # each split's model
    path_logits = np.empty((paths.shape[0], n, 3), dtype=np.float32)
    for p, row in enumerate(paths):
        for g, s in enumerate(row):
            path_logits[p, groups[g]] = split_logits[s][groups[g]]
    res = RetrainCPCV(
        "retraining",
        [sp.test_groups for sp in splits],
        paths,
        path_logits,
        groups,
        [{} for _ in splits],
        0.0,
        "synthetic",
        [sp.train for sp in splits],
        [split_logits[s][sp.train] for s, sp in enumerate(splits)],
        [sp.test for sp in splits],
    )
    return res, close, splits


def test_each_split_payoff_comes_from_its_own_training_observations():
    from flagcore.training.cpcv import split_payoff_ratios

    res, close, splits = _synthetic_retrain()
    b = split_payoff_ratios(res, close)
    r = simple_returns(close)
    for s, sp in enumerate(splits):
        keep = sp.train[(sp.train + 1 < close.size) & ~np.isin(sp.train + 1, sp.test)]
        direction = np.array([-1.0, 0.0, 1.0])[res.split_train_logits[s].argmax(1)]
        direction = direction[np.isin(sp.train, keep)]
        assert b[s] == pytest.approx(payoff_ratio(direction, r[keep]))
    assert np.unique(np.round(b, 12)).size > 1  # one ratio per split, not one for every path
    # nothing of the test groups enters: any other prices there leave every ratio as it was
    for s, sp in enumerate(splits):
        other = close.copy()
        other[sp.test] *= np.exp(np.random.default_rng(s).normal(0, 0.2, sp.test.size))
        assert split_payoff_ratios(res, other)[s] == pytest.approx(b[s], rel=1e-12)


def test_hold_keep_estimates_the_payoff_under_the_same_rule():
    from flagcore.training.cpcv import split_payoff_ratio

    close = np.array([100.0, 101.0, 103.0, 102.0, 99.0, 100.0])
    # BUY, HOLD, HOLD, SELL, HOLD: "keep" holds long over bars 1-2 and short over bar 4
    logits = np.eye(3)[[2, 1, 1, 0, 1]]
    flat = split_payoff_ratio(logits, np.arange(5), close, hold="flat")
    keep = split_payoff_ratio(logits, np.arange(5), close, hold="keep")
    r = simple_returns(close)
    assert flat == pytest.approx(payoff_ratio(np.array([1.0, 0, 0, -1, 0]), r))
    assert keep == pytest.approx(payoff_ratio(np.array([1.0, 1, 1, -1, -1]), r))
    assert flat != pytest.approx(keep)


def test_each_path_group_is_sized_with_its_splits_payoff():
    from flagcore.pipeline.validate import retrain_path_sharpes
    from flagcore.training.cpcv import path_positions, split_payoff_ratios

    res, close, _ = _synthetic_retrain(seed=5)
    cfg = BacktestConfig(sizing="kelly", kelly_fraction=1.0, max_leverage=5.0)
    b = split_payoff_ratios(res, close, cfg.hold)
    pos = path_positions(res.path_logits, res.paths, res.groups, b, cfg)
    for p, row in enumerate(res.paths):
        lg = res.path_logits[p].astype(np.float64)
        probs = np.exp(lg - lg.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        for g, s in enumerate(row):
            a = probs.argmax(1)
            want = positions(a, kelly_probability(probs, a), cfg, float(b[s]))[res.groups[g]]
            np.testing.assert_allclose(pos[p, res.groups[g]], want, rtol=1e-12)
    sharpes, payoffs = retrain_path_sharpes(res, close, 8766.0, cfg)
    assert len(sharpes) == res.paths.shape[0] and np.isfinite(sharpes).all()
    np.testing.assert_array_equal(payoffs, b)
    # the same paths sized with one whole-period ratio give other Sharpes: the sizing is per split
    one = path_positions(res.path_logits, res.paths, res.groups, np.full(b.size, 1.0), cfg)
    assert not np.allclose(one, pos)


def test_payoff_inputs_are_checked():
    from flagcore.training.cpcv import path_positions, split_payoff_ratio, split_payoff_ratios

    close = np.linspace(100, 110, 10)
    with pytest.raises(FlagcoreError, match=r"train_logits must be \(training bars, 3\) = \(4, 3\)"):
        split_payoff_ratio(np.zeros((3, 3)), np.arange(4), close)
    with pytest.raises(FlagcoreError, match="sorted bars of the 10 closes"):
        split_payoff_ratio(np.zeros((2, 3)), np.array([3, 12]), close)
    res, close, _ = _synthetic_retrain()
    res.split_train_logits = []
    with pytest.raises(FlagcoreError, match="0 splits carry training logits, 6 were run"):
        split_payoff_ratios(res, close)
    with pytest.raises(FlagcoreError, match="3 payoff ratios for splits up to 5"):
        path_positions(res.path_logits, res.paths, res.groups, [1.0, 1.0, 1.0], BacktestConfig())
