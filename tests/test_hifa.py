from math import comb

import numpy as np
import pytest
from skfolio.measures import deflated_sharpe_ratio as sk_dsr
from skfolio.measures import probabilistic_sharpe_ratio as sk_psr
from skfolio.model_selection import CombinatorialPurgedCV

from flagcore.analysis.cpcv import cpcv_paths, cpcv_splits
from flagcore.analysis.dsr import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_moments,
)
from flagcore.analysis.pbo import probability_of_backtest_overfitting
from flagcore.analysis.permutation import permutation_test
from flagcore.errors import FlagcoreError


def test_paper_worked_example():
    """Bailey & Lopez de Prado (2014): SR 2.5 a year over 1250 days, 100 trials, V = 0.5 a year."""
    sr = 2.5 / np.sqrt(250)
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-4)
    dsr = deflated_sharpe_ratio(sr, 1250, -3, 10, 100, 0.5 / 250)
    assert dsr == pytest.approx(0.9004, abs=1e-3)


def test_psr_edge_cases():
    assert expected_max_sharpe(1, 0.3) == 0.0  # one trial: no selection
    assert expected_max_sharpe(50, 0.0) == 0.0  # identical trials
    assert deflated_sharpe_ratio(0.1, 500, 0, 3, 1, 0.2) == probabilistic_sharpe_ratio(0.1, 500, 0, 3)
    assert probabilistic_sharpe_ratio(0.0, 100, 0, 3) == pytest.approx(0.5)
    lo, hi = probabilistic_sharpe_ratio(0.05, 1000, -1, 8), probabilistic_sharpe_ratio(0.05, 1000, 0, 3)
    assert lo < hi  # negative skew and fat tails lower the confidence
    for bad in (dict(n_obs=1), dict(kurtosis=0.5), dict(sr=np.nan)):
        kw = dict(sr=0.1, n_obs=100, skew=0.0, kurtosis=3.0) | bad
        with pytest.raises(FlagcoreError):
            probabilistic_sharpe_ratio(**kw)
    assert sharpe_moments(np.zeros(10)) == (0.0, 10, 0.0, 3.0)  # zero-variance returns


def test_agrees_with_skfolio():
    rng = np.random.default_rng(0)
    r = rng.standard_t(5, 2000) * 0.01 + 0.0008
    sr, n, sk, ku = sharpe_moments(r)
    assert probabilistic_sharpe_ratio(sr, n, sk, ku) == pytest.approx(sk_psr(r), rel=1e-6)
    assert probabilistic_sharpe_ratio(sr, n, sk, ku, 0.02) == pytest.approx(sk_psr(r, 0.02), rel=1e-6)
    trials = rng.normal(0.01, 0.03, 40)
    got = deflated_sharpe_ratio(sr, n, sk, ku, len(trials), trials.var(ddof=1))
    assert got == pytest.approx(sk_dsr(r, trials), rel=1e-4)


@pytest.mark.parametrize(
    "n, N, k, purge, embargo", [(600, 6, 2, 5, 3), (1000, 5, 2, 10, 0), (603, 6, 3, 4, 2)]
)
def test_cpcv_invariants(n, N, k, purge, embargo):
    splits = cpcv_splits(n, N, k, purge, embargo)
    assert len(splits) == comb(N, k)
    groups = np.array_split(np.arange(n), N)
    for s in splits:
        assert not np.intersect1d(s.train, s.test).size
        for g in s.test_groups:
            lo, hi = groups[g][0], groups[g][-1] + 1
            zone = np.arange(max(0, lo - purge), min(n, hi + purge + embargo))
            assert not np.intersect1d(s.train, zone).size
        # everything outside the zones is kept
        assert s.train.size + s.test.size <= n
    paths = cpcv_paths(N, k)
    assert paths.shape == (comb(N - 1, k - 1), N)
    for p in paths:
        covered = np.concatenate([groups[g] for g in range(N) if g in splits[p[g]].test_groups])
        assert np.array_equal(np.sort(covered), np.arange(n))  # every observation exactly once
    # each split tests k groups, each appearing in exactly one path slot per group
    assert sorted(np.bincount(paths.ravel(), minlength=len(splits)).tolist()) == [k] * len(splits)


def test_cpcv_equals_skfolio_when_groups_agree():
    n, N, k, purge, embargo = 600, 6, 2, 7, 4
    cv = CombinatorialPurgedCV(n_folds=N, n_test_folds=k, purged_size=purge, embargo_size=embargo)
    sk = list(cv.split(np.zeros((n, 1))))
    ours = cpcv_splits(n, N, k, purge, embargo)
    sk_by_test = {}
    for i, test_groups in enumerate(cv.test_set_index):
        sk_by_test[tuple(int(g) for g in test_groups)] = sk[i][0]
    for s in ours:
        assert np.array_equal(s.train, sk_by_test[tuple(s.test_groups)])


def test_permutation_p_value_is_never_zero_and_flat_is_one():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, 1000)
    strong = permutation_test(np.sign(r), r, n_permutations=199, block=10)
    assert strong.p_value == pytest.approx(1 / 200)  # the smallest possible, never 0
    flat = permutation_test(np.zeros(1000), r, n_permutations=99, block=10)
    assert flat.observed_sharpe == 0 and flat.p_value == 1.0


def test_permutation_size_on_noise_and_power_on_an_edge():
    rng = np.random.default_rng(2)
    n, seeds = 1500, 300
    p_noise, p_edge = [], []
    for s in range(seeds):
        r = rng.normal(0, 0.01, n)
        ar = np.convolve(rng.normal(size=n + 20), np.ones(20) / 20, "valid")[:n]  # a persistent signal
        pos = np.sign(ar)
        p_noise.append(permutation_test(pos, r, 199, block=24, seed=s).p_value)
        if s < 40:
            edge = r + 0.002 * pos  # returns that follow the positions
            p_edge.append(permutation_test(pos, edge, 199, block=24, seed=s).p_value)
    rate = np.mean(np.array(p_noise) < 0.05)
    se = np.sqrt(0.05 * 0.95 / seeds)
    assert abs(rate - 0.05) < 3 * se + 0.01, rate
    assert np.mean(np.array(p_edge) < 0.05) > 0.95


def test_pbo_noise_and_real_edge():
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.01, (2000, 20))
    assert 0.3 < probability_of_backtest_overfitting(noise, 10).pbo < 0.7
    edge = noise.copy()
    edge[:, 7] += 0.003
    res = probability_of_backtest_overfitting(edge, 10)
    assert res.pbo < 0.05 and res.n_combinations == comb(10, 5)
    with pytest.raises(FlagcoreError, match="even"):
        probability_of_backtest_overfitting(noise, 7)


def test_posthoc_cpcv_single_value_equals_the_backtest_and_fits_per_split():
    from flagcore.analysis.cpcv import posthoc_cpcv

    rng = np.random.default_rng(4)
    T = 1200
    base = rng.normal(0.0002, 0.01, T)
    one = posthoc_cpcv(base[None, :], [0.9], n_groups=6, n_test_groups=2, purge=10)
    assert one.path_returns.shape == (5, T) and np.allclose(one.path_returns, base)  # nothing fitted
    # a grid whose best value switches halfway: in-sample choice differs across splits
    good_first = np.where(np.arange(T) < T // 2, np.abs(base), -np.abs(base))
    res = posthoc_cpcv(
        np.stack([good_first, -good_first]),
        ["a", "b"],
        n_groups=6,
        n_test_groups=2,
        purge=10,
        parameter="rule",
    )
    assert res.mode == "post-hoc" and set(res.fitted) == {"a", "b"} and len(res.fitted) == 15
    # out of sample the choice made on other groups is often wrong: paths earn less than the oracle
    oracle = np.maximum(good_first, -good_first)
    assert (res.path_returns.sum(1) < oracle.sum()).all()


def test_collapsed_model_fails_all_three_criteria_as_in_the_seed():
    from flagcore.analysis.gate import hifa_verdict

    flat = np.zeros(9072)
    p = permutation_test(flat, np.random.default_rng(0).normal(0, 0.01, 9072), 99).p_value
    v = hifa_verdict(
        cpcv_path_sharpes=np.zeros(5),
        returns=flat,
        trades=0,
        n_trials=10,
        trial_sharpes=np.zeros(10),
        permutation_p=p,
        periods_per_year=8766,
    )
    assert v["cpcv_mean_sharpe"].value == 0 and v["deflated_sharpe"].value == 0 and p == 1.0
    assert not any(
        v[k].passed for k in ("min_trades", "cpcv_mean_sharpe", "deflated_sharpe", "permutation_p")
    )
    assert v.passed_all is False and v.n_passed == 0


def test_verdict_on_a_strong_strategy_and_the_haircut():
    from flagcore.analysis.gate import hifa_verdict

    rng = np.random.default_rng(5)
    r = rng.normal(0.001, 0.01, 9000)  # about 9.4 a year
    one = hifa_verdict(
        cpcv_path_sharpes=np.full(5, 0.1),
        returns=r,
        trades=400,
        n_trials=1,
        trial_sharpes=[0.1],
        permutation_p=0.001,
        periods_per_year=8766,
    )
    many = hifa_verdict(
        cpcv_path_sharpes=np.full(5, 0.1),
        returns=r,
        trades=400,
        n_trials=200,
        trial_sharpes=rng.normal(0, 0.02, 200),
        permutation_p=0.001,
        periods_per_year=8766,
    )
    assert one.passed_all and one["deflated_sharpe"].inputs["sr0_annual"] == 0
    assert many["deflated_sharpe"].value < one["deflated_sharpe"].value  # more trials, bigger haircut
    assert 0 < many["deflated_sharpe"].inputs["dsr_probability"] <= 1


def _exact_sharpe(n: int, sharpe_annual: float, ppy: float, seed: int = 0) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal(n)
    z = (z - z.mean()) / z.std(ddof=1)
    return 0.01 * (z + sharpe_annual / np.sqrt(ppy))  # per-period Sharpe exactly sharpe_annual / sqrt(ppy)


def test_one_lucky_position_cannot_pass_the_gate():
    """The issue's example: one 24-bar long position chosen with hindsight on 1,755 hourly bars
    cleared all three of the seed's criteria; the minimum-trades criterion stops it."""
    from flagcore.analysis.gate import hifa_verdict, why_not

    r = np.random.default_rng(3).normal(0, 0.01, 1754)
    best = int(np.argmax(np.convolve(r, np.ones(24), "valid")))  # hindsight: the best day to be long
    held = np.zeros(1754)
    held[best : best + 24] = 1.0
    net = held * r
    perm = permutation_test(held, r, 999, block=24)
    v = hifa_verdict(
        cpcv_path_sharpes=[float(net.mean() / net.std(ddof=1))] * 5,
        returns=net,
        trades=1,
        n_trials=1,
        trial_sharpes=[0.0],
        permutation_p=perm.p_value,
        periods_per_year=8766,
    )
    # the Sharpe-based criteria are fooled by the hindsight pick ...
    assert v["cpcv_mean_sharpe"].passed and v["permutation_p"].passed
    # ... the count of independent bets is not, and the verdict says why
    assert not v["min_trades"].passed and not v.passed_all
    assert "1 trades, below 30" in why_not(v["min_trades"])


def test_deflated_sharpe_needs_the_probability_and_the_haircut():
    """500 bars at annualised Sharpe 5 clear the haircut, but the DSR probability is below 0.95;
    43,830 bars at Sharpe 3 reach a DSR of 0.97 while the haircut is below 1: both readings are
    reported, and passing needs both."""
    from flagcore.analysis.gate import DEFAULT_CRITERIA, deflated_verdict, rule_text, why_not

    short = deflated_verdict(_exact_sharpe(500, 5.0, 8766), 1, [0.0], 8766, DEFAULT_CRITERIA)
    assert short.value == pytest.approx(5.0) and short.inputs["haircut_passed"]
    assert 0.8 < short.inputs["dsr_probability"] < 0.95 and not short.passed
    assert short.inputs["min_track_record_bars"] > 500  # how far it is from passing, in bars
    assert "DSR probability" in why_not(short) and "needs" in why_not(short)
    # many trials with dispersed Sharpes: SR0 about 2.2 a year
    trials = np.random.default_rng(1).normal(0, 1, 400)
    trials = trials / trials.std(ddof=1) * 2.16 / 3.07 / np.sqrt(8766)  # scaled so SR0 ~ 2.16 annualised
    long = deflated_verdict(_exact_sharpe(43830, 3.0, 8766), 400, trials, 8766, DEFAULT_CRITERIA)
    assert long.inputs["dsr_probability"] > 0.95 and long.inputs["probability_passed"]
    assert long.value < 1.0 and not long.passed and "SR - SR0" in why_not(long)
    assert rule_text(long) == "DSR probability >= 0.95 and SR - SR0 >= 1 (annualised)"
    # the track record it would need is shorter than the one it has: the probability passes
    assert long.inputs["min_track_record_bars"] < 43830


def test_min_track_record_and_backtest_length_match_the_papers():
    from flagcore.analysis.dsr import min_backtest_length, min_track_record_length, probabilistic_sharpe_ratio

    # at MinTRL observations the PSR is exactly the confidence asked for
    sr, skew, kurt, sr0 = 0.05, -0.5, 6.0, 0.01
    n = min_track_record_length(sr, skew, kurt, sr0, 0.95)
    assert probabilistic_sharpe_ratio(sr, int(np.ceil(n)), skew, kurt, sr0) >= 0.95
    assert probabilistic_sharpe_ratio(sr, int(np.floor(n)), skew, kurt, sr0) < 0.95
    assert min_track_record_length(0.01, 0.0, 3.0, 0.02) == float("inf")
    # Bailey et al. (2014): about 5 years allow no more than 45 trials at Sharpe 1, bound 2 ln N
    assert min_backtest_length(45, 1.0) == pytest.approx(5.0, abs=0.05)
    assert min_backtest_length(45, 1.0) < 2 * np.log(45)
    assert min_backtest_length(1, 1.0) == 0.0 and min_backtest_length(10, 0.0) == float("inf")


def test_criteria_from_toml(tmp_path):
    from flagcore.analysis.gate import DEFAULT_CRITERIA, load_criteria

    assert load_criteria() == DEFAULT_CRITERIA and DEFAULT_CRITERIA["cpcv_mean_sharpe_min"] == 1.5
    assert DEFAULT_CRITERIA["min_trades"] == 30 and DEFAULT_CRITERIA["dsr_probability_min"] == 0.95
    f = tmp_path / "hifa.toml"
    f.write_text("[hifa]\ncpcv_mean_sharpe_min = 1.0\nn_permutations = 2000\n")
    c = load_criteria(f)
    assert c["cpcv_mean_sharpe_min"] == 1.0 and c["n_permutations"] == 2000 and c["permutation_p_max"] == 0.05
    f.write_text("[hifa]\nmin_trades = 29.5\n")
    with pytest.raises(FlagcoreError, match="min_trades must be a whole number, got 29.5"):
        load_criteria(f)
    f.write_text("[hifa]\ncpcv_min = 1.0\n")
    with pytest.raises(FlagcoreError, match="unknown HIFA setting 'cpcv_min'"):
        load_criteria(f)
    f.write_text("[hifa\n")
    with pytest.raises(FlagcoreError, match="not valid TOML"):
        load_criteria(f)


def test_permutation_fast_path_equals_explicit_shuffles():
    from flagcore.analysis.permutation import block_permutations

    rng = np.random.default_rng(9)
    n, block, m = 1003, 25, 50  # a partial last block of 3
    pos, r, c = rng.normal(size=n), rng.normal(0, 0.01, n), np.abs(rng.normal(0, 1e-4, n))
    res = permutation_test(pos, r, m, block=block, seed=4, costs=c)
    perms = block_permutations(m, n // block, seed=4)
    full = (n // block) * block
    for i in range(m):
        shuffled = np.concatenate([r[:full].reshape(-1, block)[perms[i]].ravel(), r[full:]])
        net = pos * shuffled - c
        assert res.null_sharpes[i] == pytest.approx(net.mean() / net.std(ddof=1), rel=1e-9, abs=1e-12)
    net = pos * r - c
    assert res.observed_sharpe == pytest.approx(net.mean() / net.std(ddof=1))


def test_sharpe_from_sums_is_the_guarded_sharpe():
    from flagcore.analysis.sharpe import ratio_or_zero, sharpe_from_sums, sharpe_ratio

    rng = np.random.default_rng(12)
    x = rng.normal(0.001, 0.01, (7, 300))
    x[3] = 0.0  # never trades: no Sharpe ratio, 0
    got = sharpe_from_sums(x.sum(1), (x**2).sum(1), x.shape[1])
    np.testing.assert_allclose(got, sharpe_ratio(x), rtol=1e-9, atol=1e-12)
    assert got[3] == 0.0 and sharpe_ratio(x)[3] == 0.0
    assert ratio_or_zero(1.0, 0.0) == 0.0 and ratio_or_zero(1.0, 2.0) == 0.5
