"""Labels: the triple-barrier method and the fixed-horizon variant (AFML ch. 3).

For bar t with volatility sigma_t (an EWM of past log returns, known at t) and horizon h, the
barriers sit at +/- width * sigma_t * sqrt(h) in log price from close_t:
- triple barrier: BUY if the upper barrier is touched first within bars t+1 .. t+h, SELL if the
  lower one is, HOLD if the time barrier (t+h) comes first;
- fixed horizon: BUY / SELL if the return from t to t+h lies beyond the upper / lower barrier,
  HOLD otherwise.
The HOLD share grows with ``width`` (about 61% at 1.3 for a random walk). The last h bars have
no complete future: their labels are unresolved (UNLABELLED = -1). Class ids: 0 SELL, 1 HOLD, 2 BUY.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from flagcore.errors import FlagcoreError
from flagcore.vocab import BUY, CLASS_NAMES, HOLD, N_CLASSES, SELL, UNLABELLED

METHODS = ("triple-barrier", "fixed-horizon")


def ewm_volatility(close: np.ndarray, span: int = 168) -> np.ndarray:
    """EWM standard deviation of 1-bar log returns up to and including each bar (per bar).

    Strictly causal: before ``min(span, 24)`` returns exist, the expanding standard deviation of
    the returns so far; NaN at the first two bars, which have fewer than two returns (a label there
    stays unresolved rather than borrow a later bar's volatility).
    """
    import pandas as pd

    r = pd.Series(np.log(np.asarray(close, float))).diff()
    vol = r.ewm(span=span, min_periods=min(span, 24)).std().to_numpy().copy()
    early = r.expanding(min_periods=2).std().to_numpy()
    warm = ~np.isfinite(vol)
    vol[warm] = early[warm]
    return vol


def _validate(close, sigma, horizon, width):
    close = np.asarray(close, float)
    sigma = np.asarray(sigma, float)
    if close.ndim != 1 or sigma.shape != close.shape:
        raise FlagcoreError(f"close and sigma must be 1-d of one length, got {close.shape}, {sigma.shape}")
    if not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise FlagcoreError(f"horizon must be a positive number of bars, got {horizon!r}")
    if not width > 0:
        raise FlagcoreError(f"barrier width must be > 0, got {width!r}")
    if not (np.isfinite(close).all() and (close > 0).all()):
        raise FlagcoreError("close prices must be positive and finite")
    if np.isinf(sigma).any() or (sigma < 0).any():
        raise FlagcoreError("volatility must be non-negative and finite (NaN where unknown)")
    return close, sigma


def _forward_paths(close: np.ndarray, horizon: int) -> np.ndarray:
    """(n - h, h) log returns from bar t to t+1 .. t+h."""
    lc = np.log(close)
    win = sliding_window_view(lc, horizon + 1)  # (n - h, h + 1)
    return win[:, 1:] - win[:, :1]


def triple_barrier(close, sigma, horizon: int, width: float) -> np.ndarray:
    close, sigma = _validate(close, sigma, horizon, width)
    n = close.size
    labels = np.full(n, UNLABELLED, dtype=np.int8)
    if n <= horizon:
        return labels
    path = _forward_paths(close, horizon)
    barrier = (width * sigma[: n - horizon] * np.sqrt(horizon))[:, None]
    up, down = path >= barrier, path <= -barrier
    # first touch: argmax of a boolean row; rows without a touch get index h (never)
    first_up = np.where(up.any(1), up.argmax(1), horizon)
    first_down = np.where(down.any(1), down.argmax(1), horizon)
    lab = np.full(n - horizon, HOLD, dtype=np.int8)
    lab[first_up < first_down] = BUY
    lab[first_down < first_up] = SELL
    lab[~np.isfinite(sigma[: n - horizon])] = UNLABELLED  # no causal volatility yet
    labels[: n - horizon] = lab
    return labels


def fixed_horizon(close, sigma, horizon: int, width: float) -> np.ndarray:
    close, sigma = _validate(close, sigma, horizon, width)
    n = close.size
    labels = np.full(n, UNLABELLED, dtype=np.int8)
    if n <= horizon:
        return labels
    ret = np.log(close[horizon:] / close[:-horizon])
    barrier = width * sigma[: n - horizon] * np.sqrt(horizon)
    lab = np.full(n - horizon, HOLD, dtype=np.int8)
    lab[ret > barrier] = BUY
    lab[ret < -barrier] = SELL
    lab[~np.isfinite(barrier)] = UNLABELLED
    labels[: n - horizon] = lab
    return labels


def make_labels(close, sigma, horizon: int, width: float, method: str = "triple-barrier") -> np.ndarray:
    if method == "triple-barrier":
        return triple_barrier(close, sigma, horizon, width)
    if method == "fixed-horizon":
        return fixed_horizon(close, sigma, horizon, width)
    raise FlagcoreError(f"unknown label method {method!r}; choose {' or '.join(METHODS)}")


def shares(labels: np.ndarray) -> dict[str, float]:
    known = labels[labels != UNLABELLED]
    counts = np.bincount(known, minlength=N_CLASSES) / max(known.size, 1)
    return {c: float(counts[i]) for i, c in enumerate(CLASS_NAMES)}


def hold_share_curve(close, sigma, horizon: int, widths, method="triple-barrier", mask=None) -> np.ndarray:
    """HOLD share of the labelled bars (within ``mask``) for each barrier width: what relabelling gives."""
    out = []
    for w in widths:
        lab = make_labels(close, sigma, horizon, float(w), method)
        if mask is not None:
            lab = lab[mask]
        out.append(shares(lab)["HOLD"])
    return np.array(out)


def calibrate_width(
    close,
    sigma,
    horizon: int,
    target_hold: float,
    method: str = "triple-barrier",
    mask=None,
    lo: float = 0.05,
    hi: float = 6.0,
    tol: float = 1e-4,
) -> float:
    """The barrier width whose HOLD share (over ``mask``) is ``target_hold``, by bisection.

    The HOLD share is non-decreasing in the width, so bisection converges.
    """
    if not 0.0 < target_hold < 1.0:
        raise FlagcoreError(f"target HOLD share must lie in (0, 1), got {target_hold!r}")
    f = lambda w: hold_share_curve(close, sigma, horizon, [w], method, mask)[0]  # noqa: E731
    if f(lo) > target_hold or f(hi) < target_hold:
        raise FlagcoreError(f"no barrier width in [{lo}, {hi}] gives a HOLD share of {target_hold:.2%}")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if f(mid) < target_hold:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return round(0.5 * (lo + hi), 6)
