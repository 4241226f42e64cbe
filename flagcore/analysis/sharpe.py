"""The per-period Sharpe ratio with its zero-variance guard, written once for every caller.

A strategy whose returns never vary (it never trades, or holds one position in a constant market)
has no Sharpe ratio: mean / std is 0 / 0. flagcore reports 0 for it and says so where it matters
(``sharpe_defined``); every Sharpe in the package goes through :func:`sharpe_ratio`.
"""

from __future__ import annotations

import numpy as np

# a standard deviation at or below this is treated as zero: returns that never vary
ZERO_STD = 1e-15


def sharpe_ratio(returns, axis: int = -1) -> np.ndarray | float:
    """Per-period Sharpe ratio mean / std (ddof 1) along ``axis``, 0 where the returns never vary.

    Parameters
    ----------
    returns : array_like
        Per-period returns; a 1-d array gives a float, an n-d array one ratio per other index.
    axis : int
        The axis that runs over time.

    Returns
    -------
    float or numpy.ndarray
        Not annualised: multiply by sqrt(periods per year) for the annual figure (Lo, 2002).

    Examples
    --------
    >>> sharpe_ratio([0.01, 0.03])
    1.4142135623730951
    >>> sharpe_ratio([0.0, 0.0, 0.0])
    0.0
    """
    x = np.asarray(returns, dtype=np.float64)
    if x.shape[axis] < 2:
        out = np.zeros(np.delete(x.shape, axis % x.ndim)) if x.ndim > 1 else np.float64(0.0)
    else:
        sd = x.std(axis=axis, ddof=1)
        out = np.where(sd > ZERO_STD, x.mean(axis=axis) / np.where(sd > ZERO_STD, sd, 1.0), 0.0)
    return float(out) if np.ndim(out) == 0 else out


def sharpe_defined(returns) -> bool:
    """Whether the returns vary at all, so that a Sharpe ratio exists."""
    x = np.asarray(returns, dtype=np.float64)
    return x.size > 1 and float(x.std(ddof=1)) > ZERO_STD
