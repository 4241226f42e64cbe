"""The probabilistic and deflated Sharpe ratios and the moments they read. Pure numpy/scipy.

All Sharpe ratios here are per period (not annualised); kurtosis is the raw kurtosis (normal = 3).
References:

- Bailey, D. and Lopez de Prado, M. (2012), "The Sharpe Ratio Efficient Frontier", J. of Risk:
  the probabilistic Sharpe ratio.
- Bailey, D. and Lopez de Prado, M. (2014), "The Deflated Sharpe Ratio: Correcting for Selection
  Bias, Backtest Overfitting, and Non-Normality", J. of Portfolio Management.
"""

from __future__ import annotations

import numpy as np

from flagcore.analysis.checks import positive_int
from flagcore.analysis.sharpe import sharpe_defined, sharpe_ratio
from flagcore.errors import FlagcoreError

EULER_GAMMA = 0.5772156649015329


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
    n_obs = positive_int("n_obs", n_obs, 2)
    for name, v in (("sr", sr), ("skew", skew), ("kurtosis", kurtosis), ("sr_benchmark", sr_benchmark)):
        if not np.isfinite(v):
            raise FlagcoreError(f"{name} must be finite, got {v!r}")
    if kurtosis < 1:
        raise FlagcoreError(
            f"kurtosis is the raw kurtosis (normal = 3) and cannot be below 1, got {kurtosis!r}"
        )
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2
    if var <= 0:
        raise FlagcoreError(
            f"the Sharpe ratio's variance term is not positive ({var:.4g}) for sr={sr}, skew={skew}"
        )
    from scipy.stats import norm  # here: scipy.stats takes a second to import, and every page imports this

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
    n_trials = positive_int("n_trials", n_trials)
    if not np.isfinite(trial_sr_variance) or trial_sr_variance < 0:
        raise FlagcoreError(f"trial_sr_variance must be finite and >= 0, got {trial_sr_variance!r}")
    if n_trials == 1:
        return 0.0
    from scipy.stats import norm

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
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.size < 2 or not np.isfinite(r).all():
        raise FlagcoreError("returns must be a finite 1-d series of at least two observations")
    if not sharpe_defined(r):
        return 0.0, r.size, 0.0, 3.0
    from scipy.stats import kurtosis as _kurtosis
    from scipy.stats import skew as _skew

    return float(sharpe_ratio(r)), r.size, float(_skew(r)), float(_kurtosis(r, fisher=False))


def min_track_record_length(sr, skew, kurtosis, sr_benchmark=0.0, probability=0.95) -> float:
    r"""Minimum track record length: the observations needed for PSR(SR*) >= ``probability``
    at the observed Sharpe, skew and kurtosis (Bailey & Lopez de Prado 2012, eq. 11).

    .. math::

        MinTRL = 1 + \left(1 - \gamma_3 \hat{SR} + \frac{\gamma_4 - 1}{4} \hat{SR}^2\right)
                 \left(\frac{Z_{p}}{\hat{SR} - SR^*}\right)^2

    Parameters
    ----------
    sr, skew, kurtosis, sr_benchmark : float
        As in :func:`probabilistic_sharpe_ratio` (per period, raw kurtosis).
    probability : float, default 0.95
        The confidence the track record must reach, in (0, 1).

    Returns
    -------
    float
        Observations (bars); ``inf`` when ``sr <= sr_benchmark``: no length of this track record
        reaches the confidence.

    Examples
    --------
    >>> round(min_track_record_length(0.1, 0.0, 3.0), 1)  # 1 + (1 + 0.005) (1.645 / 0.1)^2
    272.9
    """
    if not 0 < probability < 1:
        raise FlagcoreError(f"probability must lie in (0, 1), got {probability!r}")
    for name, v in (("sr", sr), ("skew", skew), ("kurtosis", kurtosis), ("sr_benchmark", sr_benchmark)):
        if not np.isfinite(v):
            raise FlagcoreError(f"{name} must be finite, got {v!r}")
    if sr <= sr_benchmark:
        return float("inf")
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2
    if var <= 0:
        raise FlagcoreError(
            f"the Sharpe ratio's variance term is not positive ({var:.4g}) for sr={sr}, skew={skew}"
        )
    from scipy.stats import norm

    return float(1.0 + var * (norm.ppf(probability) / (sr - sr_benchmark)) ** 2)


def min_backtest_length(n_trials, sharpe_annual) -> float:
    r"""Minimum backtest length in years (Bailey, Borwein, Lopez de Prado & Zhu 2014, "Pseudo-
    mathematics and financial charlatanism", Notices of the AMS, eq. 6).

    With ``n_trials`` independent trials of zero true skill and unit annual Sharpe variance, a
    backtest shorter than this many years is expected to show a best annualised Sharpe of
    ``sharpe_annual`` by chance alone:

    .. math::

        MinBTL \approx \left( \frac{(1 - \gamma) Z^{-1}[1 - \frac{1}{N}]
                 + \gamma Z^{-1}[1 - \frac{1}{N e}]}{E[\max_N]} \right)^2 < \frac{2 \ln N}{E[\max_N]^2}

    Parameters
    ----------
    n_trials : int
        Number of trials N (>= 1). One trial means no selection: 0 years.
    sharpe_annual : float
        The annualised Sharpe ratio that selection must not explain (the observed one).

    Returns
    -------
    float
        Years; ``inf`` for a Sharpe <= 0, which any backtest length can show by chance.

    Examples
    --------
    >>> round(min_backtest_length(45, 1.0), 2)  # the paper: 5 years allow no more than 45 trials
    5.0
    """
    n_trials = positive_int("n_trials", n_trials)
    if not np.isfinite(sharpe_annual):
        raise FlagcoreError(f"sharpe_annual must be finite, got {sharpe_annual!r}")
    if n_trials == 1:
        return 0.0
    if sharpe_annual <= 0:
        return float("inf")
    z = expected_max_sharpe(n_trials, 1.0)
    return float((z / sharpe_annual) ** 2)
