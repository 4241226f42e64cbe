"""The bar calendar: how many bars make a year, from the timestamps alone.

Sharpe ratios and volatilities are annualised with it, so a dataset of any bar frequency (hourly
crypto, daily equities) needs no frequency setting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

YEAR_SECONDS = 365.25 * 24 * 3600


def periods_per_year(timestamps: pd.DatetimeIndex) -> float | None:
    """Bars per year from the median bar spacing (8760 for hourly 24/7 bars).

    A market that closes (equities: 6.5 h days, weekends) has gaps longer than the median
    spacing, so the count is bars observed per calendar year when the sample spans a year or
    more, and the median-spacing estimate otherwise.

    Parameters
    ----------
    timestamps : the bars' times, increasing.

    Returns
    -------
    float or None : None for fewer than two bars or a zero median spacing.
    """
    if len(timestamps) < 2:
        return None
    span_s = (timestamps[-1] - timestamps[0]).total_seconds()
    year_s = YEAR_SECONDS
    if span_s >= year_s:
        return float((len(timestamps) - 1) / (span_s / year_s))
    step = float(np.median(np.diff(timestamps.asi8))) / 1e9
    return year_s / step if step > 0 else None
