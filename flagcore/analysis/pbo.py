"""The probability of backtest overfitting (PBO) of a set of trials, by combinatorially symmetric
cross-validation (CSCV).

Reference: Bailey, D., Borwein, J., Lopez de Prado, M. and Zhu, Q. (2017), "The Probability of
Backtest Overfitting", J. of Computational Finance.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from flagcore.analysis.checks import positive_int
from flagcore.analysis.sharpe import sharpe_from_sums
from flagcore.errors import FlagcoreError


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
    S = positive_int("n_blocks", n_blocks, 2)
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

    def sharpe(mask):  # (C, N): each configuration's Sharpe over the blocks a combination picks
        return sharpe_from_sums(mask @ s1, mask @ s2, (mask @ cnt)[:, None])

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
