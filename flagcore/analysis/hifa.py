"""HIFA validation statistics: PSR/DSR, CPCV, permutation test, PBO. Pure numpy/scipy.

All Sharpe ratios here are per period (not annualised) unless a name says ``annual``; kurtosis is
the raw kurtosis (normal = 3). References:

- Bailey, D. and Lopez de Prado, M. (2012), "The Sharpe Ratio Efficient Frontier", J. of Risk:
  the probabilistic Sharpe ratio.
- Bailey, D. and Lopez de Prado, M. (2014), "The Deflated Sharpe Ratio: Correcting for Selection
  Bias, Backtest Overfitting, and Non-Normality", J. of Portfolio Management.
- Lopez de Prado, M. (2018), "Advances in Financial Machine Learning", Wiley, ch. 7 and 12:
  purging, embargo and combinatorial purged cross-validation.
- Phipson, B. and Smyth, G. (2010), "Permutation P-values Should Never Be Zero", Stat. Appl.
  Genet. Mol. Biol.: p = (b + 1) / (m + 1).
- Bailey, D., Borwein, J., Lopez de Prado, M. and Zhu, Q. (2017), "The Probability of Backtest
  Overfitting", J. of Computational Finance: CSCV and PBO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from math import comb
from typing import Any

import numpy as np
from scipy.stats import norm

from flagcore.analysis.sharpe import sharpe_defined
from flagcore.errors import FlagcoreError
from flagcore.vocab import CRITERION

EULER_GAMMA = 0.5772156649015329


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FlagcoreError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def probabilistic_sharpe_ratio(sr, n_obs, skew, kurtosis, sr_benchmark=0.0):
    r"""Probability that the true Sharpe ratio exceeds ``sr_benchmark`` (Bailey & Lopez de Prado 2012).

    .. math::

        PSR(SR^*) = \Phi\left( \frac{(\hat{SR} - SR^*) \sqrt{T - 1}}
                    {\sqrt{1 - \gamma_3 \hat{SR} + \frac{\gamma_4 - 1}{4} \hat{SR}^2}} \right)

    Parameters
    ----------
    sr : float
        Observed Sharpe ratio, per period.
    n_obs : int
        Number of return observations T (>= 2).
    skew : float
        Skewness of the returns, gamma_3.
    kurtosis : float
        Raw (not excess) kurtosis of the returns, gamma_4; 3 for normal returns.
    sr_benchmark : float, default 0.0
        Benchmark Sharpe ratio SR*, per period.

    Returns
    -------
    float
        A probability in [0, 1].
    """
    n_obs = _positive_int("n_obs", n_obs, 2)
    for name, v in (("sr", sr), ("skew", skew), ("kurtosis", kurtosis), ("sr_benchmark", sr_benchmark)):
        if not np.isfinite(v):
            raise FlagcoreError(f"{name} must be finite, got {v!r}")
    if kurtosis < 1:
        raise FlagcoreError(f"kurtosis is the raw kurtosis (normal = 3) and cannot be below 1, got {kurtosis!r}")
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2
    if var <= 0:
        raise FlagcoreError(f"the Sharpe ratio's variance term is not positive ({var:.4g}) for sr={sr}, skew={skew}")
    return float(norm.cdf((sr - sr_benchmark) * np.sqrt(n_obs - 1) / np.sqrt(var)))


def expected_max_sharpe(n_trials, trial_sr_variance):
    r"""Expected maximum Sharpe ratio of ``n_trials`` independent trials with zero true Sharpe.

    .. math::

        SR_0 = \sqrt{V} \left( (1 - \gamma) \Phi^{-1}\left(1 - \frac{1}{N}\right)
               + \gamma \Phi^{-1}\left(1 - \frac{1}{N e}\right) \right)

    with gamma the Euler-Mascheroni constant (Bailey & Lopez de Prado 2014, eq. 2). One trial
    means no selection: SR_0 = 0.

    Parameters
    ----------
    n_trials : int
        Number of independent trials N (>= 1).
    trial_sr_variance : float
        Variance V of the trials' Sharpe ratios, per period (>= 0).
    """
    n_trials = _positive_int("n_trials", n_trials)
    if not np.isfinite(trial_sr_variance) or trial_sr_variance < 0:
        raise FlagcoreError(f"trial_sr_variance must be finite and >= 0, got {trial_sr_variance!r}")
    if n_trials == 1:
        return 0.0
    z = (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n_trials) + EULER_GAMMA * norm.ppf(1 - 1 / (n_trials * np.e))
    return float(np.sqrt(trial_sr_variance) * z)


def deflated_sharpe_ratio(sr, n_obs, skew, kurtosis, n_trials, trial_sr_variance):
    """DSR = PSR(SR_0): the probability that the selected strategy's true Sharpe exceeds zero,
    once the number and dispersion of the trials are accounted for (Bailey & Lopez de Prado 2014).

    Parameters as in :func:`probabilistic_sharpe_ratio` and :func:`expected_max_sharpe`.
    """
    sr0 = expected_max_sharpe(n_trials, trial_sr_variance)
    return probabilistic_sharpe_ratio(sr, n_obs, skew, kurtosis, sr_benchmark=sr0)


def sharpe_moments(returns) -> tuple[float, int, float, float]:
    """(per-period Sharpe, n, skew, raw kurtosis) of a return series; Sharpe 0 when returns are constant."""
    from scipy.stats import kurtosis as _kurt
    from scipy.stats import skew as _skew

    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.size < 2 or not np.isfinite(r).all():
        raise FlagcoreError("returns must be a finite 1-d series of at least two observations")
    sd = r.std(ddof=1)
    if sd <= 1e-15:
        return 0.0, r.size, 0.0, 3.0
    return float(r.mean() / sd), r.size, float(_skew(r)), float(_kurt(r, fisher=False))


# ----------------------------------------------------------------------------- CPCV


def group_indices(n_samples: int, n_groups: int) -> list[np.ndarray]:
    """Contiguous groups; when N does not divide T the first T mod N groups get one more (np.array_split)."""
    return np.array_split(np.arange(n_samples), n_groups)


@dataclass
class CPCVSplit:
    train: np.ndarray  # indices, purged and embargoed
    test_groups: list[int]  # group ids tested in this split
    test: np.ndarray  # indices of the test groups


def cpcv_splits(n_samples, n_groups, n_test_groups, purge=0, embargo=0) -> list[CPCVSplit]:
    """Combinatorial purged cross-validation splits (Lopez de Prado 2018, ch. 12).

    T observations in time order are cut into ``n_groups`` contiguous groups (np.array_split:
    the first T mod N groups are one longer); each of the C(N, k) choices of ``n_test_groups`` is a
    test set. A label at observation i looks ``purge`` observations ahead, so its interval
    [i, i + purge] overlaps a test observation's when they are ``purge`` or fewer apart: purging
    drops the ``purge`` training observations before each test block and the ``purge`` after it;
    the embargo drops ``embargo`` more after it. The same rule as skfolio's
    ``CombinatorialPurgedCV``, whose groups differ only when N does not divide T (it gives the
    remainder to the last group).

    Parameters
    ----------
    n_samples : int
        Number of observations T.
    n_groups : int
        Number of groups N (2 <= N <= T).
    n_test_groups : int
        Groups per test set k (1 <= k < N).
    purge : int, default 0
        Label horizon in observations.
    embargo : int, default 0
        Observations dropped after each test block.

    Returns
    -------
    list of CPCVSplit, in the lexicographic order of the test-group combinations.
    """
    n_samples = _positive_int("n_samples", n_samples, 2)
    n_groups = _positive_int("n_groups", n_groups, 2)
    k = _positive_int("n_test_groups", n_test_groups)
    if n_groups > n_samples:
        raise FlagcoreError(f"n_groups {n_groups} exceeds n_samples {n_samples}")
    if k >= n_groups:
        raise FlagcoreError(f"n_test_groups {k} must be below n_groups {n_groups}")
    purge = _positive_int("purge", purge, 0)
    embargo = _positive_int("embargo", embargo, 0)
    groups = group_indices(n_samples, n_groups)
    out = []
    for test_groups in combinations(range(n_groups), k):
        keep = np.ones(n_samples, dtype=bool)
        for g in test_groups:
            lo, hi = groups[g][0], groups[g][-1] + 1
            keep[max(0, lo - purge) : min(n_samples, hi + purge + embargo)] = False
        test = np.concatenate([groups[g] for g in test_groups])
        out.append(CPCVSplit(np.flatnonzero(keep), list(test_groups), test))
    return out


def cpcv_paths(n_groups, n_test_groups) -> np.ndarray:
    """(phi, N) array: entry [p, g] is the split whose test set supplies group g to path p.

    Each group is tested in phi = C(N-1, k-1) splits; path p takes, for every group, the p-th
    split (in lexicographic order) that tests it, so every path covers every observation once.
    """
    n_groups = _positive_int("n_groups", n_groups, 2)
    k = _positive_int("n_test_groups", n_test_groups)
    if k >= n_groups:
        raise FlagcoreError(f"n_test_groups {k} must be below n_groups {n_groups}")
    phi = comb(n_groups - 1, k - 1)
    paths = np.empty((phi, n_groups), dtype=np.int64)
    seen = np.zeros(n_groups, dtype=np.int64)
    for s, test_groups in enumerate(combinations(range(n_groups), k)):
        for g in test_groups:
            paths[seen[g], g] = s
            seen[g] += 1
    return paths


# ----------------------------------------------------------------------------- permutation test


def _sharpe_rows(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=-1, ddof=1)
    return np.where(sd > 1e-15, x.mean(axis=-1) / np.where(sd > 1e-15, sd, 1.0), 0.0)


@dataclass
class PermutationResult:
    observed_sharpe: float  # per period
    null_sharpes: np.ndarray  # (m,) per period
    p_value: float  # (b + 1) / (m + 1)
    block: int
    n_permutations: int


def block_permutations(n_permutations: int, n_blocks: int, seed=0) -> np.ndarray:
    """(m, n_blocks) random permutations of the block ids, one row per permutation."""
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(n_blocks), (n_permutations, 1)), axis=1)


def permutation_test(positions, returns, n_permutations=1000, block=24, seed=0, costs=None) -> PermutationResult:
    """Block permutation test of a trading signal (Phipson & Smyth 2010 for the p-value).

    Null hypothesis: the positions carry no information about the returns that follow them.
    The positions stay in place; the returns are cut into ``n // block`` full blocks (keeping
    their autocorrelation within blocks) that are shuffled among themselves, m times; a last
    partial block, if any, stays in place. The statistic is the per-period Sharpe of
    ``positions * returns - costs``. p = (b + 1) / (m + 1), b the number of permuted Sharpes
    >= the observed one; never 0. A strategy without trades has Sharpe 0 everywhere, so p = 1.

    Each permuted Sharpe needs only sums over blocks: with A[j, k] = <pos_j, r_k>,
    B[j, k] = <pos_j^2, r_k^2> and C[j, k] = <c_j pos_j, r_k> computed once, a permutation pi gives
    sum(net) = sum_j A[j, pi_j] - sum(c) and sum(net^2) = sum_j (B - 2C)[j, pi_j] + sum(c^2), so the
    m permutations cost O(m n / block) after one O(n^2 / block) product.

    Parameters
    ----------
    positions : ndarray (n,)
        Position held over each period (decided before its return).
    returns : ndarray (n,)
        The periods' returns.
    n_permutations : int, default 1000
    block : int, default 24
        Block length; 1 is an i.i.d. shuffle, which rejects too often on autocorrelated data.
    seed : int, default 0
    costs : ndarray (n,), optional
        Trading costs per period, subtracted unchanged under every permutation.
    """
    pos = np.asarray(positions, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    if pos.shape != r.shape or pos.ndim != 1:
        raise FlagcoreError(f"positions and returns must be 1-d of one length, got {pos.shape}, {r.shape}")
    m = _positive_int("n_permutations", n_permutations)
    block = _positive_int("block", block)
    n = r.size
    if n < 2 * block:
        raise FlagcoreError(f"{n} observations are too few for blocks of {block}")
    c = np.zeros(n) if costs is None else np.asarray(costs, dtype=np.float64)
    if c.shape != r.shape:
        raise FlagcoreError(f"costs must have the returns' shape {r.shape}, got {c.shape}")
    if not (np.isfinite(pos).all() and np.isfinite(r).all() and np.isfinite(c).all()):
        raise FlagcoreError("positions, returns and costs must be finite")
    observed = float(_sharpe_rows(pos * r - c))
    nb = n // block
    full = nb * block
    P, Rb, Cb = pos[:full].reshape(nb, block), r[:full].reshape(nb, block), c[:full].reshape(nb, block)
    A = P @ Rb.T  # (nb, nb)
    Q = (P**2) @ (Rb**2).T - 2 * (Cb * P) @ Rb.T
    tail = pos[full:] * r[full:] - c[full:]
    s1_fixed = float(tail.sum() - c[:full].sum())
    s2_fixed = float((tail**2).sum() + (c[:full] ** 2).sum())
    perms = block_permutations(m, nb, seed)  # (m, nb): block j of positions meets return block perms[:, j]
    rows = np.arange(nb)
    s1 = A[rows, perms].sum(axis=1) + s1_fixed
    s2 = Q[rows, perms].sum(axis=1) + s2_fixed
    mean = s1 / n
    var = np.maximum((s2 - n * mean**2) / (n - 1), 0.0)
    sd = np.sqrt(var)
    null = np.where(sd > 1e-15, mean / np.where(sd > 1e-15, sd, 1.0), 0.0)
    b_count = int((null >= observed - 1e-12).sum())
    return PermutationResult(observed, null, (b_count + 1) / (m + 1), block, m)


# ----------------------------------------------------------------------------- PBO


@dataclass
class PBOResult:
    pbo: float  # share of combinations whose in-sample best is below the out-of-sample median
    logits: np.ndarray  # lambda_c for each combination
    n_combinations: int
    n_blocks: int


def probability_of_backtest_overfitting(returns_matrix, n_blocks=16) -> PBOResult:
    """PBO by combinatorially symmetric cross-validation (Bailey, Borwein, Lopez de Prado, Zhu 2017).

    The T x N matrix of per-period returns (N configurations) is cut into ``n_blocks`` (even)
    contiguous blocks. For each of the C(S, S/2) halvings, the configuration with the best
    in-sample Sharpe is located in the out-of-sample ranking: w = rank / (N + 1) (rank 1 = worst),
    lambda = ln(w / (1 - w)). PBO is the share of lambda <= 0.
    """
    X = np.asarray(returns_matrix, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] < 2:
        raise FlagcoreError(f"returns_matrix must be T x N with N >= 2 configurations, got {X.shape}")
    if not np.isfinite(X).all():
        raise FlagcoreError("returns_matrix must be finite")
    S = _positive_int("n_blocks", n_blocks, 2)
    if S % 2:
        raise FlagcoreError(f"n_blocks must be even, got {S}")
    T, N = X.shape
    if T < 2 * S:
        raise FlagcoreError(f"{T} observations are too few for {S} blocks")
    blocks = np.array_split(np.arange(T), S)
    cnt = np.array([len(b) for b in blocks], dtype=np.float64)  # (S,)
    s1 = np.stack([X[b].sum(0) for b in blocks])  # (S, N)
    s2 = np.stack([(X[b] ** 2).sum(0) for b in blocks])
    combos = np.array(list(combinations(range(S), S // 2)))  # (C, S/2)
    is_mask = np.zeros((len(combos), S), dtype=bool)
    is_mask[np.arange(len(combos))[:, None], combos] = True

    def sharpe(mask):
        n = mask @ cnt  # (C,)
        m1 = (mask @ s1) / n[:, None]
        var = ((mask @ s2) - n[:, None] * m1**2) / (n[:, None] - 1)
        sd = np.sqrt(np.maximum(var, 0))
        return np.where(sd > 1e-15, m1 / np.where(sd > 1e-15, sd, 1), 0.0)  # (C, N)

    is_sr, oos_sr = sharpe(is_mask.astype(float)), sharpe((~is_mask).astype(float))
    best = is_sr.argmax(axis=1)
    oos_best = oos_sr[np.arange(len(combos)), best]
    # rank 1 = worst; ties share the average rank
    below = (oos_sr < oos_best[:, None]).sum(1)
    equal = (oos_sr == oos_best[:, None]).sum(1)
    rank = below + (equal + 1) / 2.0
    w = rank / (N + 1)
    lam = np.log(w / (1 - w))
    return PBOResult(float((lam <= 0).mean()), lam, len(combos), S)


# ----------------------------------------------------------------------------- post-hoc CPCV


@dataclass
class PostHocCPCV:
    """Post-hoc CPCV of one option: a parameter fitted per split, paths scored out of sample."""

    mode: str  # always "post-hoc": the model is fixed, only the option's parameter is refitted
    parameter: str
    fitted: list  # (n_splits,) the value chosen on each split's purged, embargoed training groups
    path_returns: np.ndarray  # (phi, T) out-of-sample returns of each path
    path_sharpes: np.ndarray  # (phi,) per period
    n_groups: int
    n_test_groups: int
    purge: int
    embargo: int


def posthoc_cpcv(strategy_returns, grid, *, n_groups=6, n_test_groups=2, purge=0, embargo=0,
                 parameter: str = "parameter") -> PostHocCPCV:
    """CPCV of a post-hoc rule over the evaluation period (AFML ch. 12, with nothing retrained).

    ``strategy_returns`` is a (G, T) array: the per-period net returns of the rule at each of
    the G grid values (for example the HOLD threshold). On every split the grid value with the
    best Sharpe on the purged and embargoed training observations is chosen and its returns on the
    split's test groups are kept; the paths of ``cpcv_paths`` then assemble, group by group, the
    test returns of the splits that cover them, and each path's Sharpe is reported. With one grid
    value every path equals the plain backtest: CPCV adds information only where something is
    fitted (validation-math.md).
    """
    R = np.asarray(strategy_returns, dtype=np.float64)
    if R.ndim != 2:
        raise FlagcoreError(f"strategy_returns must be (grid values, periods), got shape {R.shape}")
    grid = list(grid)
    if len(grid) != R.shape[0]:
        raise FlagcoreError(f"{len(grid)} grid values for {R.shape[0]} return series")
    if not np.isfinite(R).all():
        raise FlagcoreError("strategy_returns must be finite")
    T = R.shape[1]
    splits = cpcv_splits(T, n_groups, n_test_groups, purge, embargo)
    paths = cpcv_paths(n_groups, n_test_groups)
    groups = group_indices(T, n_groups)
    chosen = np.empty(len(splits), dtype=np.int64)
    for s, split in enumerate(splits):
        chosen[s] = int(np.argmax(_sharpe_rows(R[:, split.train])))
    path_returns = np.empty((paths.shape[0], T))
    for p, row in enumerate(paths):
        for g, s in enumerate(row):
            path_returns[p, groups[g]] = R[chosen[s], groups[g]]
    return PostHocCPCV("post-hoc", parameter, [grid[i] for i in chosen], path_returns,
                       _sharpe_rows(path_returns), n_groups, n_test_groups, purge, embargo)


# ----------------------------------------------------------------------------- verdicts


DEFAULT_CRITERIA = {
    # the seed's HIFA gate (FINDINGS_MODEL_COLLAPSE.md)
    "cpcv_mean_sharpe_min": 1.5,  # annualised
    "deflated_sharpe_min": 1.0,  # annualised Sharpe left after the selection haircut, SR - SR0
    "dsr_probability_min": 0.95,  # the conventional bar for the DSR as a probability (shown, not gating)
    "permutation_p_max": 0.05,
    "n_permutations": 10000,
    "permutation_block": 24,
    "cpcv_groups": 6,
    "cpcv_test_groups": 2,
}


def load_criteria(path=None) -> dict:
    """The HIFA thresholds: the seed's values, overridden by a TOML file's ``[hifa]`` table."""
    import tomllib

    out = dict(DEFAULT_CRITERIA)
    if path is None:
        return out
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise FlagcoreError(f"{path}: no such criteria file") from None
    except tomllib.TOMLDecodeError as e:
        raise FlagcoreError(f"{path}: not valid TOML ({e})") from None
    table = data.get("hifa", data)
    unknown = sorted(set(table) - set(DEFAULT_CRITERIA))
    if unknown:
        raise FlagcoreError(f"{path}: unknown HIFA setting {unknown[0]!r}; known: {', '.join(DEFAULT_CRITERIA)}")
    for k, v in table.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise FlagcoreError(f"{path}: {k} must be a number, got {v!r}")
        out[k] = type(DEFAULT_CRITERIA[k])(v)
    return out


@dataclass
class CriterionResult:
    """One HIFA criterion judged for one option: its value against its threshold, with its inputs."""

    criterion: str  # a key of ``vocab.CRITERION``
    value: float
    threshold: float
    rule: str  # ">=" or "<"
    passed: bool
    inputs: dict[str, Any] = field(default_factory=dict)  # what the value was computed from


@dataclass
class HifaVerdict:
    """The HIFA criteria of one option, in ``vocab.CRITERIA`` order; it passes when all of them do."""

    criteria: dict[str, CriterionResult]

    def __getitem__(self, criterion: str) -> CriterionResult:
        return self.criteria[criterion]

    @property
    def passed_all(self) -> bool:
        return bool(self.criteria) and all(c.passed for c in self.criteria.values())

    @property
    def n_passed(self) -> int:
        return sum(c.passed for c in self.criteria.values())


def judge(criterion: str, value: float, criteria: dict, inputs: dict | None = None) -> CriterionResult:
    """``value`` judged by ``criterion``'s rule against its threshold in ``criteria``."""
    c = CRITERION[criterion]
    threshold = float(criteria[c.threshold_key])
    return CriterionResult(criterion, float(value), threshold, c.rule, c.passes(value, threshold), dict(inputs or {}))


def hifa_verdict(*, cpcv_path_sharpes, returns, n_trials: int, trial_sharpes, permutation_p: float,
                 periods_per_year: float, criteria: dict | None = None) -> HifaVerdict:
    """The three HIFA criteria for one option, each with value, threshold, pass/fail and inputs.

    - CPCV mean Sharpe: mean of the paths' per-period Sharpes, annualised.
    - Deflated Sharpe: the seed's ">= 1.0" cannot be a probability, so it is read as the
      annualised Sharpe left after the selection haircut, (SR - SR0) x sqrt(ppy), with SR0 the
      expected maximum Sharpe of ``n_trials`` trials whose Sharpes vary as ``trial_sharpes`` do;
      the DSR probability PSR(SR0) is reported beside it.
    - Permutation p-value below the threshold.
    A strategy without trades has Sharpe 0, p = 1, and fails all three.
    """
    c = criteria or DEFAULT_CRITERIA
    ann = np.sqrt(periods_per_year)
    sr, n, skew, kurt = sharpe_moments(returns)
    trials = np.asarray(trial_sharpes, dtype=np.float64)
    var = float(trials.var(ddof=1)) if trials.size > 1 else 0.0
    sr0 = expected_max_sharpe(max(int(n_trials), 1), var)
    undefined = not sharpe_defined(returns)  # never trades: no Sharpe
    dsr = 0.0 if undefined else probabilistic_sharpe_ratio(sr, n, skew, kurt, sr0)
    cpcv_mean = float(np.mean(cpcv_path_sharpes) * ann)
    deflated = float((sr - sr0) * ann)
    return HifaVerdict({
        "cpcv_mean_sharpe": judge("cpcv_mean_sharpe", cpcv_mean, c,
                                  {"paths": len(cpcv_path_sharpes), "annualised_with": periods_per_year}),
        "deflated_sharpe": judge("deflated_sharpe", deflated, c,
                                 {"sharpe_annual": sr * ann, "sharpe_defined": not undefined,
                                  "sr0_annual": sr0 * ann, "n_trials": int(n_trials),
                                  "trial_sharpe_variance": var, "dsr_probability": dsr,
                                  "dsr_probability_threshold": c["dsr_probability_min"],
                                  "skew": skew, "kurtosis": kurt, "n_obs": n}),
        "permutation_p": judge("permutation_p", float(permutation_p), c),
    })
