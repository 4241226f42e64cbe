"""The bar calendar: how many bars make a year, from the market's calendar.

Sharpe ratios and volatilities are annualised with it, so a dataset of any bar frequency (hourly
crypto, hourly FX, equity sessions, daily bars) needs no frequency setting. The count follows the
sessions the market trades, read from the bar spacing and the weekdays and hours that occur, never
from the sample's span: the same market gives the same count whether the file holds two weeks or ten
years, and bars added later never change it (validation-math.md, "Sharpe ratio").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from flagcore.errors import FlagcoreError

YEAR_SECONDS = 365.25 * 24 * 3600
DAY_SECONDS = 24 * 3600.0

# the conventions of validation-math.md, "Sharpe ratio"
CALENDAR_DAYS = 365.25  # a 24/7 market trades every day of the year
FX_DAYS = 260  # 24/5 FX: 52 weeks of 5 days, closed only at the weekend
SESSIONS = 252  # exchange trading days: weekdays less about nine holidays
DAILY_OPEN, DAILY_WEEKDAYS, WEEKS, MONTHS = 365, 252, 52, 12

OPEN_DAY_SHARE = 0.3  # a weekday trades when it holds this share of the busiest weekday's bars
SESSION_BREAK_S = (
    3 * 3600.0
)  # a longer gap (and longer than two bars) ends a session; lunch breaks are shorter
AROUND_THE_CLOCK_S = 20 * 3600.0  # sessions lasting this long mean the market trades all day

H24_7, H24_5, SESSION = "24/7", "24/5", "exchange sessions"
DAILY_365, DAILY_252, WEEKLY, MONTHLY, BY_SPACING = (
    "daily 365",
    "daily 252",
    "weekly",
    "monthly",
    "by spacing",
)
OVERRIDE = "override"
INFERRED, FILE_METADATA, GIVEN = "inferred", "file metadata", "given"


@dataclass(frozen=True)
class Calendar:
    """A market's bar calendar.

    Attributes
    ----------
    name : the rule that gave the count: "24/7", "24/5", "exchange sessions", "daily 365",
        "daily 252", "weekly", "monthly", "by spacing", or "override" for a value the user gave.
    periods_per_year : bars per year, the annualisation factor (Sharpe x sqrt of it).
    bar_seconds : the median spacing between consecutive bars, in seconds (nan under two bars).
    source : "inferred" (from the timestamps), "file metadata" (recorded in the dataset file)
        or "given" (an override).
    """

    name: str
    periods_per_year: float
    bar_seconds: float
    source: str


def bar_seconds(timestamps: pd.DatetimeIndex) -> float:
    """The median spacing between consecutive bars in seconds; nan under two bars.

    Unit-safe: the differences are Timedeltas, so an index in ns, us, ms or s gives the same value.

    Examples
    --------
    >>> bar_seconds(pd.date_range("2025-01-01", periods=3, freq="h", unit="us"))
    3600.0
    """
    ts = pd.DatetimeIndex(timestamps)
    if len(ts) < 2:
        return float("nan")
    return float(np.median(_gaps(ts)))


def check_periods_per_year(value, name: str = "periods per year") -> float:
    """``value`` as a float, refused unless it is a finite number above 0; ``name`` says what it is."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FlagcoreError(f"{name} must be a number above 0, got {value!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise FlagcoreError(f"{name} must be a number above 0, got {value!r}")
    return v


def infer_calendar(timestamps: pd.DatetimeIndex) -> Calendar:
    """The market's calendar, from the bar spacing and the weekdays and hours that occur.

    With ``step`` the median spacing between bars and ``per_day = 86400 s / step``:

    - intraday (step under 18 h):
        - "24/7" when Saturday and Sunday both trade: ``365.25 x per_day`` (hourly 8766);
        - "24/5" when the market trades around the clock on its open days (its sessions, runs
          of bars without a gap over 3 h and over two bars, last 20 h or more) but not at the
          weekend: ``260 x per_day`` (hourly 6240, FX);
        - "exchange sessions" otherwise: ``252 x`` the median bars per session (hourly bars
          09:30..15:30 of a 6.5 h session: 7 bars, 1764);
    - daily (18 h to 36 h): "daily 365" when Saturday and Sunday trade, else "daily 252";
    - "weekly" (6 to 8 days): 52; "monthly" (27 to 32 days): 12;
    - anything else "by spacing": ``365.25 days / step``.

    A weekday trades when it holds at least 30% of the busiest weekday's bars, so the few Sunday
    evening bars of FX in UTC do not make a weekend. Weekdays and hours are read in the index's own
    time zone (UTC for datasets). Session counts leave out the first and last session when there
    are three or more, since the sample's ends may cut them.

    How much data is needed: the rules read a pattern, not a span. Weekend trading shows within
    one full week (two weeks are safer); the length of a session within three sessions. A shorter
    sample is read conservatively, so that it can only understate the count, never overstate it:
    weekends not seen are taken as closed (24/5 or daily 252), and an intraday sample without a
    whole session or a run of 20 h counts as an exchange session of the bars it holds.
    Known limits: a market with a short daily break (CME futures, 1 h) reads as 24/5; intraday
    bars with fewer than three bars per session may have a median spacing of the overnight gap.

    Parameters
    ----------
    timestamps : the bars' times, strictly increasing, any resolution (ns, us, ms, s).

    Returns
    -------
    Calendar : with source "inferred".

    Raises
    ------
    FlagcoreError : under two bars, or a median spacing that is not positive.

    References
    ----------
    validation-math.md, "Sharpe ratio": 252 for daily equities, 365 for daily crypto, about
    8,766 for hourly 24/7 markets, about 6,240 for hourly 24/5 FX, about 1,764 for hourly bars
    of a 6.5-hour equity session.

    Examples
    --------
    >>> infer_calendar(pd.date_range("2025-01-01", periods=24 * 21, freq="h")).periods_per_year
    8766.0
    >>> infer_calendar(pd.bdate_range("2025-01-01", periods=30)).name
    'daily 252'
    """
    ts = pd.DatetimeIndex(timestamps)
    if len(ts) < 2:
        raise FlagcoreError(f"{len(ts)} bar(s); the calendar needs at least two")
    gaps = _gaps(ts)
    step = float(np.median(gaps))
    if not step > 0:
        raise FlagcoreError(f"the median spacing between bars is {step} s; timestamps must increase")
    name, ppy = _classify(gaps, step, _weekend_trades(ts))
    return Calendar(name, float(ppy), step, INFERRED)


def _classify(gaps: np.ndarray, step: float, weekend: bool) -> tuple[str, float]:
    """The calendar's name and periods per year by the rules of :func:`infer_calendar`."""
    if step < 18 * 3600:
        per_day = DAY_SECONDS / step
        if weekend:
            return H24_7, CALENDAR_DAYS * per_day
        bars, seconds = _sessions(gaps, step)
        if seconds >= AROUND_THE_CLOCK_S:
            return H24_5, FX_DAYS * per_day
        return SESSION, SESSIONS * bars
    days = step / DAY_SECONDS
    if days <= 1.5:
        return (DAILY_365, DAILY_OPEN) if weekend else (DAILY_252, DAILY_WEEKDAYS)
    if 6 <= days <= 8:
        return WEEKLY, WEEKS
    if 27 <= days <= 32:
        return MONTHLY, MONTHS
    return BY_SPACING, YEAR_SECONDS / step


def resolve_calendar(timestamps: pd.DatetimeIndex, periods_per_year: float | None = None) -> Calendar:
    """The calendar given by ``periods_per_year`` (name "override", source "given"), or inferred.

    Raises
    ------
    FlagcoreError : an override that is not a number above 0, or a calendar that cannot be inferred.
    """
    if periods_per_year is not None:
        value = check_periods_per_year(periods_per_year)
        return Calendar(OVERRIDE, value, bar_seconds(timestamps), GIVEN)
    return infer_calendar(timestamps)


def periods_per_year(timestamps: pd.DatetimeIndex) -> float | None:
    """Bars per year of the market's calendar (``infer_calendar``); None when it cannot be told.

    Examples
    --------
    >>> periods_per_year(pd.date_range("2025-01-01", periods=24 * 21, freq="h"))
    8766.0
    """
    try:
        return infer_calendar(timestamps).periods_per_year
    except FlagcoreError:
        return None


def _gaps(ts: pd.DatetimeIndex) -> np.ndarray:
    """Seconds between consecutive bars (Timedelta arithmetic: the index's unit does not matter)."""
    return np.asarray((ts[1:] - ts[:-1]).total_seconds(), dtype=float)


def _weekend_trades(ts: pd.DatetimeIndex) -> bool:
    """Saturday and Sunday each hold at least ``OPEN_DAY_SHARE`` of the busiest weekday's bars."""
    counts = np.bincount(np.asarray(ts.day_of_week), minlength=7)
    least = OPEN_DAY_SHARE * counts.max()
    return bool(counts[5] >= least and counts[6] >= least)


def _sessions(gaps: np.ndarray, step: float) -> tuple[float, float]:
    """Median bars and median duration (s) of the sessions: runs of bars split at long gaps.

    A gap longer than 3 h and longer than two bars ends a session (a lunch break does not). With
    three sessions or more the first and last are left out: the sample's ends may cut them.
    """
    n = len(gaps) + 1
    ends = np.flatnonzero(gaps > max(2 * step, SESSION_BREAK_S))
    starts, stops = np.r_[0, ends + 1], np.r_[ends + 1, n]
    clock = np.r_[0.0, np.cumsum(gaps)]  # seconds since the first bar
    bars = (stops - starts).astype(float)
    seconds = clock[stops - 1] - clock[starts] + step
    if len(bars) >= 3:
        bars, seconds = bars[1:-1], seconds[1:-1]
    return float(np.median(bars)), float(np.median(seconds))
