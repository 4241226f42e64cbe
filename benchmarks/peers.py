"""The peers section of the benchmark suite: flagcore's CPCV splits, PSR/DSR, permutation test and
backtest metrics against skfolio, a naive loop and empyrical-reloaded, on the same inputs in one run."""

from __future__ import annotations

import numpy as np
from timing import timed


def section_peers(res: dict) -> None:
    """flagcore against skfolio, a naive loop and empyrical on the same inputs, in the same run."""
    n = 9072
    rng = np.random.default_rng(0)
    r = rng.standard_t(5, n) * 0.01 + 0.0005
    trials = rng.normal(0.01, 0.02, 48)
    pos = np.sign(rng.standard_normal(n))
    res["peers"] = {
        "cpcv": _peer_cpcv(n),
        "psr_dsr": _peer_psr_dsr(r, trials),
        "permutation": _peer_permutation(r, pos),
        "backtest": _peer_backtest(r, pos),
    }


def _peer_cpcv(n: int) -> dict:
    """CPCV splits against skfolio's CombinatorialPurgedCV, and whether their train sets are the same."""
    from skfolio.model_selection import CombinatorialPurgedCV

    from flagcore.analysis.cpcv import cpcv_splits

    N, k, h = 6, 2, 24
    cv = CombinatorialPurgedCV(n_folds=N, n_test_folds=k, purged_size=h, embargo_size=h)
    X = np.zeros((n, 1))
    ours = cpcv_splits(n, N, k, h, h)
    sk = list(cv.split(X))
    by_test = {tuple(int(g) for g in tg): sk[i][0] for i, tg in enumerate(cv.test_set_index)}
    same = all(np.array_equal(s.train, by_test[tuple(s.test_groups)]) for s in ours)
    return {
        "ours": timed(lambda: cpcv_splits(n, N, k, h, h), 10),
        "skfolio": timed(lambda: list(cv.split(X)), 10),
        "identical": same,
    }


def _peer_psr_dsr(r: np.ndarray, trials: np.ndarray) -> dict:
    """The probabilistic and deflated Sharpe ratios against skfolio.measures."""
    from skfolio.measures import deflated_sharpe_ratio as sk_dsr
    from skfolio.measures import probabilistic_sharpe_ratio as sk_psr

    from flagcore.analysis.dsr import deflated_sharpe_ratio, probabilistic_sharpe_ratio, sharpe_moments

    def ours_psr():
        s, m, a, b = sharpe_moments(r)
        return probabilistic_sharpe_ratio(s, m, a, b), deflated_sharpe_ratio(
            s, m, a, b, 48, trials.var(ddof=1)
        )

    p1, d1 = ours_psr()
    p2, d2 = sk_psr(r), sk_dsr(r, trials)
    return {
        "ours": timed(ours_psr, 20),
        "skfolio": timed(lambda: (sk_psr(r), sk_dsr(r, trials)), 20),
        "max_abs_diff": float(max(abs(p1 - p2), abs(d1 - d2))),
    }


def _peer_permutation(r: np.ndarray, pos: np.ndarray) -> dict:
    """The vectorised block-permutation test against a plain Python loop over the same permutations."""
    from flagcore.analysis.permutation import block_permutations, permutation_test

    n = len(r)
    block, m = 24, 1000
    fast = permutation_test(pos, r, m, block, seed=3)

    def naive():
        perms = block_permutations(m, n // block, 3)
        rb = r[: (n // block) * block].reshape(-1, block)
        null = []
        for p in perms:
            rr = np.concatenate([rb[p].ravel(), r[(n // block) * block :]])
            x = pos * rr
            null.append(x.mean() / x.std(ddof=1))
        return np.asarray(null)

    slow_null = naive()
    return {
        "ours": timed(lambda: permutation_test(pos, r, m, block, seed=3), 5),
        "naive_loop": timed(naive, 3),
        "max_abs_diff": float(np.abs(fast.null_sharpes - slow_null).max()),
        "permutations": m,
    }


def _peer_backtest(r: np.ndarray, pos: np.ndarray) -> dict:
    """Sharpe, Sortino, max drawdown and volatility against empyrical-reloaded."""
    import empyrical as ep

    from flagcore.analysis.backtest import metrics

    ppy = 8766.0
    net = r * 0.3

    def theirs() -> dict:
        return {
            "sharpe": ep.sharpe_ratio(net, annualization=ppy),
            "sortino": ep.sortino_ratio(net, annualization=ppy),
            "max_drawdown": ep.max_drawdown(net),
            "annual_volatility": ep.annual_volatility(net, annualization=ppy),
        }

    mine = metrics(net, np.append(pos, 0.0), ppy)
    return {
        "ours": timed(lambda: metrics(net, np.append(pos, 0.0), ppy), 20),
        "empyrical": timed(theirs, 20),
        "diffs": {k: float(abs(mine[k] - v)) for k, v in theirs().items()},
        "empyrical_version": ep.__version__,
    }
