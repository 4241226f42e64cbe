"""The block permutation test of a trading signal, with its p-value that is never zero.

Reference: Phipson, B. and Smyth, G. (2010), "Permutation P-values Should Never Be Zero", Stat.
Appl. Genet. Mol. Biol.: p = (b + 1) / (m + 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from flagcore.analysis.checks import positive_int
from flagcore.analysis.sharpe import sharpe_from_sums, sharpe_ratio
from flagcore.errors import FlagcoreError


@dataclass
class PermutationResult:
    observed_sharpe: float  # per period
    null_sharpes: np.ndarray  # (m,) per period
    p_value: float  # (b + 1) / (m + 1)
    block: int
    n_permutations: int


def block_permutations(n_permutations: int, n_blocks: int, seed=0) -> np.ndarray:
    """(m, n_blocks) random permutations of the block ids, one row per permutation.

    A pure function of its arguments: for an integer seed the array is computed once and shared
    (read-only), so a dashboard slider that tests the same run at another threshold does not draw the
    same permutations again (about a quarter of its recompute).
    """
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return _seeded_permutations(int(n_permutations), int(n_blocks), int(seed))
    return _draw_permutations(n_permutations, n_blocks, seed)


def _draw_permutations(n_permutations: int, n_blocks: int, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(n_blocks), (n_permutations, 1)), axis=1)


@lru_cache(maxsize=8)  # a few (m, blocks, seed): one run's slider, a validation; ~3 MB each for m=1,000
def _seeded_permutations(n_permutations: int, n_blocks: int, seed: int) -> np.ndarray:
    perms = _draw_permutations(n_permutations, n_blocks, seed)
    perms.setflags(write=False)  # shared between callers: never changed in place
    return perms


def _permuted_cells(n_permutations: int, n_blocks: int, seed) -> np.ndarray:
    """(m, nb) flat indices ``j * nb + perms[:, j]`` of the cells each permutation sums: a gather
    with one flat index costs a third of indexing with two arrays (a slider step recomputes it);
    cached with the permutations for an integer seed."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return _seeded_cells(int(n_permutations), int(n_blocks), int(seed))
    return _cells(block_permutations(n_permutations, n_blocks, seed))


def _cells(perms: np.ndarray) -> np.ndarray:
    nb = perms.shape[1]
    return np.arange(nb) * nb + perms


@lru_cache(maxsize=8)  # as _seeded_permutations: ~3 MB each for m=1,000
def _seeded_cells(n_permutations: int, n_blocks: int, seed: int) -> np.ndarray:
    cells = _cells(block_permutations(n_permutations, n_blocks, seed))
    cells.setflags(write=False)
    return cells


def permutation_test(
    positions, returns, n_permutations=1000, block=24, seed=0, costs=None
) -> PermutationResult:
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
    m = positive_int("n_permutations", n_permutations)
    block = positive_int("block", block)
    n = r.size
    if n < 2 * block:
        raise FlagcoreError(f"{n} observations are too few for blocks of {block}")
    c = np.zeros(n) if costs is None else np.asarray(costs, dtype=np.float64)
    if c.shape != r.shape:
        raise FlagcoreError(f"costs must have the returns' shape {r.shape}, got {c.shape}")
    if not (np.isfinite(pos).all() and np.isfinite(r).all() and np.isfinite(c).all()):
        raise FlagcoreError("positions, returns and costs must be finite")
    observed = float(sharpe_ratio(pos * r - c))
    nb = n // block
    full = nb * block
    P, Rb, Cb = pos[:full].reshape(nb, block), r[:full].reshape(nb, block), c[:full].reshape(nb, block)
    A = P @ Rb.T  # (nb, nb)
    Q = (P**2) @ (Rb**2).T - 2 * (Cb * P) @ Rb.T
    tail = pos[full:] * r[full:] - c[full:]
    s1_fixed = float(tail.sum() - c[:full].sum())
    s2_fixed = float((tail**2).sum() + (c[:full] ** 2).sum())
    # (m, nb) flat indices into an (nb, nb) matrix: block j of positions meets return block perms[:, j]
    flat = _permuted_cells(m, nb, seed)
    s1 = A.ravel()[flat].sum(axis=1) + s1_fixed
    s2 = Q.ravel()[flat].sum(axis=1) + s2_fixed
    null = sharpe_from_sums(s1, s2, n)
    b_count = int((null >= observed - 1e-12).sum())
    return PermutationResult(observed, null, (b_count + 1) / (m + 1), block, m)
