"""The per-period Sharpe ratio with its zero-variance guard, written once for every caller.

A strategy whose returns never vary (it never trades, or holds one position in a constant market)
has no Sharpe ratio: mean / std is 0 / 0. flagcore reports 0 for it and says so where it matters
(``sharpe_defined``); every Sharpe in the package goes through :func:`sharpe_ratio`, or, where only
the sums of the returns are at hand (the permutation null, PBO), :func:`sharpe_from_sums`; both
guard with :func:`ratio_or_zero`.
"""

from __future__ import annotations

import numpy as np

# a standard deviation at or below this is treated as zero: returns that never vary
ZERO_STD = 1e-15


def ratio_or_zero(mean, scale):
    """``mean / scale`` elementwise where ``scale > ZERO_STD``, else 0: the zero-variance guard.

    Parameters
    ----------
    mean, scale : array_like
        Numerators and (non-negative) scales of one shape, e.g. mean and standard deviation.

    Returns
    -------
    numpy.ndarray
        Of the broadcast shape (0-d for scalars).
    """
    ok = scale > ZERO_STD
    return np.where(ok, mean / np.where(ok, scale, 1.0), 0.0)


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
        out = ratio_or_zero(x.mean(axis=axis), x.std(axis=axis, ddof=1))
    return float(out) if np.ndim(out) == 0 else out


def sharpe_from_sums(total, total_sq, n) -> np.ndarray:
    """Per-period Sharpe ratios from the sums of the returns and of their squares over ``n`` periods.

    The variance is (sum(r^2) - n mean^2) / (n - 1), clipped at 0 against rounding; the same guard
    as :func:`sharpe_ratio`. Used where many Sharpe ratios share one product of sums (the
    permutation null, the combinations of PBO).

    Parameters
    ----------
    total, total_sq : array_like
        sum(r) and sum(r^2) of each series.
    n : array_like
        Number of periods of each series (>= 2), broadcast against ``total``.

    Returns
    -------
    numpy.ndarray
        One ratio per series.
    """
    mean = total / n
    var = np.maximum((total_sq - n * mean**2) / (n - 1), 0.0)
    return ratio_or_zero(mean, np.sqrt(var))


def sharpe_defined(returns) -> bool:
    """Whether the returns vary at all, so that a Sharpe ratio exists."""
    x = np.asarray(returns, dtype=np.float64)
    return x.size > 1 and float(x.std(ddof=1)) > ZERO_STD
