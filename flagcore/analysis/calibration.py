"""Calibrating Kelly's win probability on the training period: isotonic or Platt. Pure numpy/scipy.

Kelly sizing reads q = p_a / (p_SELL + p_BUY), the model's probability that a trade's direction is
right given that the triple-barrier outcome is not HOLD (``backtest.kelly_probability``). A model's
softmax is rarely calibrated (Guo et al. 2017), and a miscalibrated q sizes every bet wrong. The
calibration map is fitted, per option, on the training period, where the labels are known: each bar
where the option trades SELL or BUY and the outcome is SELL or BUY is one observation, its target 1
when the label equals the action (the direction was right) and 0 otherwise. The map is then applied
to the test period's q. Bars whose outcome is HOLD (the time barrier) are left out: q is conditional
on the outcome not being HOLD.

Two maps:
- isotonic: the non-decreasing step function of q that best fits the targets in least squares, by
  pool-adjacent-violators (Zadrozny and Elkan 2002), interpolated linearly between the fitted q
  values and held constant beyond them;
- Platt: P(right) = sigmoid(a logit(q) + b), fitted by maximum likelihood on Platt's (1999)
  smoothed targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2); a = 1, b = 0 is the identity.

Small samples: below ``MIN_CALIBRATION_TRADES`` (50) training trades, or when they were all right or
all wrong, the map is the identity and ``Calibration.note`` says why. With 50 trades the hit rate
alone has a standard error of 0.5 / sqrt(50) = 0.07, as large as the edges Kelly sizes; a map
fitted on fewer would size on noise. Falling back (rather than raising) keeps the dashboard's sliders
usable where a swept value trades rarely; the result records that the model's q was used.

The training period is in-sample for the retrained models: their q is fitted there, so their
training hit rate is optimistic and the calibrated q errs towards larger bets. That is the
configured choice's cost; a held-out stretch of the training period would remove it.

References
----------
Platt, J. (1999). Probabilistic outputs for support vector machines and comparisons to regularized
likelihood methods. In Advances in Large Margin Classifiers, MIT Press, 61-74.
Zadrozny, B. and Elkan, C. (2002). Transforming classifier scores into accurate multiclass
probability estimates. KDD '02, 694-699.
Guo, C., Pleiss, G., Sun, Y. and Weinberger, K. Q. (2017). On calibration of modern neural
networks. ICML 2017.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flagcore.errors import FlagcoreError
from flagcore.vocab import BUY, CALIBRATIONS, HOLD, SELL

MIN_CALIBRATION_TRADES = 50  # below it the identity: see the module docstring
_EPS = 1e-9  # q is clipped to [eps, 1 - eps] before its logit: a one-hot q of 1 stays finite


@dataclass(frozen=True, eq=False)
class Calibration:
    """A fitted map from Kelly's q to a calibrated probability (the identity when not fitted)."""

    method: str  # what was asked: "none", "isotonic" or "platt"
    fitted: bool  # False: the identity (method "none", or too few training trades)
    n_trades: int  # training trades with a SELL/BUY outcome it was fitted on (0 for "none")
    hit_rate: float | None  # their share whose direction was right; None without trades
    note: str | None = None  # why the identity was used in place of the method asked for
    knots_q: np.ndarray | None = None  # isotonic: the distinct training q, ascending
    knots_p: np.ndarray | None = None  # isotonic: the fitted probability at each
    slope: float | None = None  # Platt's a
    intercept: float | None = None  # Platt's b

    @property
    def probability(self) -> str:
        """The probability Kelly reads: ``"model"`` (q itself), ``"isotonic"`` or ``"platt"``."""
        return self.method if self.fitted else "model"

    def __call__(self, q) -> np.ndarray:
        """The calibrated probability of each q (the identity when not fitted)."""
        x = _check_q(q)
        if not self.fitted:
            return x
        if self.method == "isotonic":
            assert self.knots_q is not None and self.knots_p is not None
            return np.interp(x, self.knots_q, self.knots_p)
        assert self.slope is not None and self.intercept is not None
        from scipy.special import expit, logit  # scipy on first use: a page's first visit skips it

        return expit(self.slope * logit(np.clip(x, _EPS, 1 - _EPS)) + self.intercept)


def _check_q(q) -> np.ndarray:
    x = np.asarray(q, dtype=np.float64)
    if x.ndim != 1:
        raise FlagcoreError(f"Kelly probabilities must be 1-d, got shape {x.shape}")
    if np.any(~np.isfinite(x) | (x < 0) | (x > 1)):
        raise FlagcoreError("Kelly probabilities must lie in [0, 1]")
    return x


def _check_hits(q, hit) -> tuple[np.ndarray, np.ndarray]:
    x = _check_q(q)
    y = np.asarray(hit, dtype=np.float64)
    if y.shape != x.shape:
        raise FlagcoreError(f"{y.size} targets for {x.size} probabilities")
    if np.any((y != 0) & (y != 1)):
        raise FlagcoreError("calibration targets must be 0 or 1")
    if x.size == 0:
        raise FlagcoreError("no training trades to calibrate on")
    return x, y


def calibration_sample(q, actions, labels) -> tuple[np.ndarray, np.ndarray]:
    """The training observations: q and the target (1: direction right) of each trade with a
    SELL or BUY outcome.

    Parameters
    ----------
    q : array_like, shape (n,)
        Kelly's win probability of each bar's action on the training period.
    actions : array_like, shape (n,)
        The option's class ids on the training period.
    labels : array_like, shape (n,)
        The training labels: class ids, -1 where unresolved.

    Returns
    -------
    (q, hit) : tuple of np.ndarray
        On the bars where the action is SELL or BUY and the label SELL or BUY: q, and 1.0 where the
        label equals the action, else 0.0.

    Examples
    --------
    >>> q, hit = calibration_sample([0.6, 0.0, 0.7, 0.8, 0.9], [2, 1, 0, 2, 0], [2, 2, 2, 1, -1])
    >>> q.tolist(), hit.tolist()
    ([0.6, 0.7], [1.0, 0.0])
    """
    x = _check_q(q)
    a, y = np.asarray(actions), np.asarray(labels)
    if a.shape != x.shape or y.shape != x.shape:
        raise FlagcoreError(f"{x.size} probabilities, {a.size} actions and {y.size} labels differ in length")
    keep = (a != HOLD) & ((y == SELL) | (y == BUY))
    return x[keep], (y[keep] == a[keep]).astype(np.float64)


def isotonic_fit(q, hit) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic calibration (Zadrozny and Elkan 2002): the non-decreasing least-squares fit of the
    targets on q, by pool-adjacent-violators.

    Tied q values are pooled first (their mean target, weighted by their count), so the map is a
    function of q.

    Parameters
    ----------
    q, hit : array_like, shape (m,)
        Training probabilities and 0/1 targets (``calibration_sample``).

    Returns
    -------
    (knots_q, knots_p) : tuple of np.ndarray
        The distinct q ascending and the fitted probability at each; ``np.interp`` between them
        (constant beyond the ends) is the map.

    References
    ----------
    Zadrozny, B. and Elkan, C. (2002). Transforming classifier scores into accurate multiclass
    probability estimates. KDD '02, 694-699.

    Examples
    --------
    >>> kq, kp = isotonic_fit([0.55, 0.6, 0.7, 0.8], [1, 0, 1, 1])
    >>> kp.tolist()
    [0.5, 0.5, 1.0, 1.0]
    """
    from scipy.optimize import isotonic_regression

    x, y = _check_hits(q, hit)
    knots, inverse = np.unique(x, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    means = np.bincount(inverse, weights=y) / counts
    fit = isotonic_regression(means, weights=counts, increasing=True)
    return knots, np.clip(np.asarray(fit.x, dtype=np.float64), 0.0, 1.0)


def platt_fit(q, hit) -> tuple[float, float]:
    """Platt scaling (Platt 1999) on logit(q): P(right) = sigmoid(a logit(q) + b), maximum likelihood.

    The targets are Platt's smoothed ones, (N+ + 1) / (N+ + 2) for a right direction and
    1 / (N- + 2) for a wrong one, so a perfectly separated sample still gives finite a and b.

    Parameters
    ----------
    q, hit : array_like, shape (m,)
        Training probabilities and 0/1 targets (``calibration_sample``).

    Returns
    -------
    (a, b) : tuple of float
        Slope and intercept; (1, 0) is the identity.

    References
    ----------
    Platt, J. (1999). Probabilistic outputs for support vector machines and comparisons to
    regularized likelihood methods. In Advances in Large Margin Classifiers, MIT Press, 61-74.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> q = rng.uniform(0.5, 0.9, 4000)
    >>> hit = (rng.uniform(size=4000) < 0.5).astype(float)  # an overconfident q: right half the time
    >>> a, b = platt_fit(q, hit)
    >>> bool(abs(a) < 0.2 and abs(b) < 0.3)
    True
    """
    from scipy.optimize import minimize
    from scipy.special import expit, logit

    x, y = _check_hits(q, hit)
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    z = logit(np.clip(x, _EPS, 1 - _EPS))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        s = theta[0] * z + theta[1]
        # -log-likelihood per trade, in the stable form log(1 + e^s) - t s
        nll = float(np.mean(np.logaddexp(0.0, s) - t * s))
        g = expit(s) - t
        return nll, np.array([np.mean(g * z), np.mean(g)])

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="BFGS")
    return float(res.x[0]), float(res.x[1])


def identity(
    method: str = "none", note: str | None = None, n_trades: int = 0, hit_rate: float | None = None
) -> Calibration:
    """The identity map: Kelly reads the model's q (with ``note`` saying why, when a method was asked)."""
    return Calibration(method, False, int(n_trades), hit_rate, note)


def fit_calibration(
    method: str, q, actions, labels, *, min_trades: int = MIN_CALIBRATION_TRADES
) -> Calibration:
    """Fit ``method``'s map of Kelly's q on one option's training period.

    Parameters
    ----------
    method : str
        One of ``vocab.CALIBRATIONS``: ``"none"`` (the identity), ``"isotonic"`` or ``"platt"``.
    q : array_like, shape (n,)
        Kelly's win probability of each training bar's action (``backtest.kelly_probability``).
    actions : array_like, shape (n,)
        The option's training actions.
    labels : array_like, shape (n,)
        The training labels (-1 unresolved).
    min_trades : int
        The fewest training trades with a SELL/BUY outcome to fit on; below it, or when those trades
        were all right or all wrong, the identity with a note.

    Returns
    -------
    Calibration
        Callable on the test period's q; ``.probability`` names what Kelly reads.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> q = rng.uniform(0.5, 1.0, 2000)
    >>> actions = np.full(2000, 2)
    >>> labels = np.where(rng.uniform(size=2000) < q - 0.2, 2, 0)  # right 20 points less often
    >>> cal = fit_calibration("isotonic", q, actions, labels)
    >>> cal.probability, bool(abs(float(cal(np.array([0.8]))[0]) - 0.6) < 0.1)
    ('isotonic', True)
    """
    if method not in CALIBRATIONS:
        raise FlagcoreError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {method!r}")
    if min_trades < 1:
        raise FlagcoreError(f"min_trades must be >= 1, got {min_trades!r}")
    if method == "none":
        return identity()
    x, hit = calibration_sample(q, actions, labels)
    n = int(x.size)
    rate = float(hit.mean()) if n else None
    if n < min_trades:
        return identity(
            method,
            f"{method} calibration not fitted: {n} training trades with a SELL/BUY outcome, "
            f"fewer than {min_trades}; Kelly reads the model's probability",
            n,
            rate,
        )
    if rate in (0.0, 1.0):
        return identity(
            method,
            f"{method} calibration not fitted: all {n} training trades were {'right' if rate else 'wrong'}; "
            "Kelly reads the model's probability",
            n,
            rate,
        )
    if method == "isotonic":
        kq, kp = isotonic_fit(x, hit)
        return Calibration(method, True, n, rate, knots_q=kq, knots_p=kp)
    a, b = platt_fit(x, hit)
    return Calibration(method, True, n, rate, slope=a, intercept=b)
