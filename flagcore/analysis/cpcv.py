"""Combinatorial purged cross-validation: groups, splits, paths, and post-hoc CPCV of a fitted rule.

Reference: Lopez de Prado, M. (2018), "Advances in Financial Machine Learning", Wiley, ch. 7 and
12: purging, embargo and combinatorial purged cross-validation. Retraining CPCV (a model retrained
on each split) lives in ``flagcore.training``; it takes its splits and paths from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

from flagcore.analysis.checks import positive_int
from flagcore.analysis.sharpe import sharpe_ratio
from flagcore.errors import FlagcoreError


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
    n_samples = positive_int("n_samples", n_samples, 2)
    n_groups = positive_int("n_groups", n_groups, 2)
    k = positive_int("n_test_groups", n_test_groups)
    if n_groups > n_samples:
        raise FlagcoreError(f"n_groups {n_groups} exceeds n_samples {n_samples}")
    if k >= n_groups:
        raise FlagcoreError(f"n_test_groups {k} must be below n_groups {n_groups}")
    purge = positive_int("purge", purge, 0)
    embargo = positive_int("embargo", embargo, 0)
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
    n_groups = positive_int("n_groups", n_groups, 2)
    k = positive_int("n_test_groups", n_test_groups)
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
    # (phi,) cost of switching grid values at group boundaries, charged on top of the grid's own
    # returns (0 without positions, or where a path keeps one value)
    switching_costs: np.ndarray | None = None


def _cost_inputs(positions, cost_rate, shape: tuple[int, ...]) -> np.ndarray | None:
    """``positions`` as a (G, T) float array checked against ``shape``; None without positions."""
    if isinstance(cost_rate, bool) or not isinstance(cost_rate, (int, float, np.floating, np.integer)):
        raise FlagcoreError(f"cost_rate must be a number, got {cost_rate!r}")
    if not (np.isfinite(cost_rate) and cost_rate >= 0):
        raise FlagcoreError(f"cost_rate must be finite and >= 0, got {cost_rate!r}")
    if positions is None:
        if cost_rate > 0:
            raise FlagcoreError(
                f"cost_rate {cost_rate!r} needs the positions of each grid value to charge switching costs"
            )
        return None
    P = np.asarray(positions, dtype=np.float64)
    if P.shape != shape:
        raise FlagcoreError(
            f"positions must have the shape of strategy_returns (grid values, periods) {shape}, got {P.shape}"
        )
    if not np.isfinite(P).all():
        raise FlagcoreError("positions must be finite")
    return P


def _grid_returns(strategy_returns, grid) -> tuple[np.ndarray, list]:
    """``strategy_returns`` as a finite (G, T) float array with one row per grid value."""
    R = np.asarray(strategy_returns, dtype=np.float64)
    if R.ndim != 2:
        raise FlagcoreError(f"strategy_returns must be (grid values, periods), got shape {R.shape}")
    grid = list(grid)
    if len(grid) != R.shape[0]:
        raise FlagcoreError(f"{len(grid)} grid values for {R.shape[0]} return series")
    if not np.isfinite(R).all():
        raise FlagcoreError("strategy_returns must be finite")
    return R, grid


def _assemble_paths(
    R: np.ndarray,
    P: np.ndarray | None,
    cost_rate: float,
    paths: np.ndarray,
    groups: list[np.ndarray],
    chosen: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each path's returns, group by group from the value its split chose, and the extra cost it pays
    where it switches value at a group boundary (see :func:`posthoc_cpcv`)."""
    path_returns = np.empty((paths.shape[0], R.shape[1]))
    switching = np.zeros(paths.shape[0])
    for p, row in enumerate(paths):
        for g, s in enumerate(row):
            path_returns[p, groups[g]] = R[chosen[s], groups[g]]
            if P is None or g == 0 or chosen[s] == chosen[row[g - 1]]:
                continue
            # the row charged its own change at t0; the path changes from the previous group's value
            t0, new, old = groups[g][0], chosen[s], chosen[row[g - 1]]
            extra = cost_rate * (abs(P[new, t0] - P[old, t0 - 1]) - abs(P[new, t0] - P[new, t0 - 1]))
            path_returns[p, t0] -= extra
            switching[p] += extra
    return path_returns, switching


def posthoc_cpcv(
    strategy_returns,
    grid,
    *,
    n_groups=6,
    n_test_groups=2,
    purge=0,
    embargo=0,
    parameter: str = "parameter",
    positions=None,
    cost_rate: float = 0.0,
) -> PostHocCPCV:
    r"""CPCV of a post-hoc rule over the evaluation period (AFML ch. 12, with nothing retrained).

    ``strategy_returns`` is a (G, T) array: the per-period net returns of the rule at each of
    the G grid values (for example the HOLD threshold). On every split the grid value with the
    best Sharpe on the purged and embargoed training observations is chosen and its returns on the
    split's test groups are kept; the paths of ``cpcv_paths`` then assemble, group by group, the
    test returns of the splits that cover them, and each path's Sharpe is reported. With one grid
    value every path equals the plain backtest: CPCV adds information only where something is
    fitted (validation-math.md).

    A path that takes group g from grid value c_new and group g - 1 from c_old changes position at
    the group's first period t0. Each row of ``strategy_returns`` charged its own change
    :math:`\kappa |P_{c_{new}, t_0} - P_{c_{new}, t_0 - 1}|`; with ``positions`` the path is
    charged the change it really makes instead:

    .. math::

        r^{path}_{t_0} = R_{c_{new}, t_0} + \kappa |P_{c_{new}, t_0} - P_{c_{new}, t_0 - 1}|
                         - \kappa |P_{c_{new}, t_0} - P_{c_{old}, t_0 - 1}|

    with :math:`\kappa` = ``cost_rate`` (the backtest's (fee + slippage) / 1e4). Where the path keeps
    its value across the boundary nothing changes.

    Parameters
    ----------
    strategy_returns : array_like, (G, T)
        Per-period net returns of each grid value.
    grid : sequence
        The G grid values, reported as each split's fitted value.
    n_groups, n_test_groups, purge, embargo : int
        As in :func:`cpcv_splits`.
    parameter : str
        The fitted parameter's name, for the record.
    positions : array_like, (G, T), optional
        The position each grid value holds over each period (the backtest's ``positions[:-1]``).
        Without it no switching cost is charged (the rows' own costs only).
    cost_rate : float, default 0
        Cost per unit of position traded; > 0 needs ``positions``.

    Returns
    -------
    PostHocCPCV

    Examples
    --------
    >>> import numpy as np
    >>> P = np.array([[1.0] * 8, [-1.0] * 8])  # value 0 long, value 1 short throughout
    >>> m = np.repeat([1.0, -1.0], 4) * np.tile([0.010, 0.011], 4)  # up 4 periods, then down 4
    >>> R = P * m  # each value's own returns (no costs inside a value here)
    >>> res = posthoc_cpcv(R, ["long", "short"], n_groups=4, n_test_groups=1, positions=P,
    ...                    cost_rate=0.001)
    >>> res.fitted, float(res.switching_costs[0])  # one switch, short to long: 2 units traded
    (['short', 'short', 'long', 'long'], 0.002)
    """
    R, grid = _grid_returns(strategy_returns, grid)
    P = _cost_inputs(positions, cost_rate, R.shape)
    T = R.shape[1]
    splits = cpcv_splits(T, n_groups, n_test_groups, purge, embargo)
    paths = cpcv_paths(n_groups, n_test_groups)
    groups = group_indices(T, n_groups)
    # each split's choice: the grid value with the best Sharpe on its training observations
    chosen = np.array([int(np.argmax(sharpe_ratio(R[:, sp.train]))) for sp in splits], dtype=np.int64)
    path_returns, switching = _assemble_paths(R, P, cost_rate, paths, groups, chosen)
    fitted, sharpes = [grid[i] for i in chosen], np.asarray(sharpe_ratio(path_returns))
    layout = (n_groups, n_test_groups, purge, embargo)
    return PostHocCPCV("post-hoc", parameter, fitted, path_returns, sharpes, *layout, switching)
