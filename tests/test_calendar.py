"""The market's calendar (data.calendar) and annualisation that does not depend on the sample."""

import json

import numpy as np
import pandas as pd
import pytest

from flagcore.cli.command import main
from flagcore.data.calendar import (
    Calendar,
    bar_seconds,
    check_periods_per_year,
    infer_calendar,
    periods_per_year,
    resolve_calendar,
)
from flagcore.data.features import WARMUP, build_datasets, compute_features
from flagcore.errors import FlagcoreError

US_HOLIDAYS = ["2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27", "2024-07-04"]


def hourly_24_7(start="2024-01-01", days=21):
    return pd.date_range(start, periods=24 * days, freq="h", tz="UTC")


def hourly_fx(start="2024-01-07", end="2024-03-01"):
    """FX in UTC: Sunday 22:00 to Friday 21:00 (New York 17:00 to 17:00), closed on 25 Dec and 1 Jan."""
    h = pd.date_range(start, end, freq="h", tz="UTC", inclusive="left")
    d, hour = h.day_of_week, h.hour
    open_ = (d < 4) | ((d == 4) & (hour < 22)) | ((d == 6) & (hour >= 22))
    closed = h.strftime("%m-%d").isin(["12-25", "01-01"])
    return h[open_ & ~closed]


def equity_hours(start="2024-01-02", end="2024-07-31"):
    """Hourly bars 09:30..15:30 New York time on weekdays, less holidays, in UTC (DST moves them)."""
    days = pd.bdate_range(start, end)
    days = days[~days.isin(pd.DatetimeIndex(US_HOLIDAYS))]
    local = [d + pd.Timedelta(hours=9, minutes=30) + pd.Timedelta(hours=k) for d in days for k in range(7)]
    return pd.DatetimeIndex(local).tz_localize("America/New_York").tz_convert("UTC")


def daily_365(start="2023-01-01", days=400):
    return pd.date_range(start, periods=days, freq="D", tz="UTC")


def daily_252(start="2023-01-02", days=400):
    d = pd.bdate_range(start, periods=days + 3, tz="UTC")
    return d.delete([10, 50, 120])  # a few holidays


PATTERNS = {
    "hourly 24/7": (hourly_24_7, "24/7", 8766.0),
    "hourly 24/5": (hourly_fx, "24/5", 6240.0),
    "hourly session": (equity_hours, "exchange sessions", 1764.0),
    "daily 365": (daily_365, "daily 365", 365.0),
    "daily 252": (daily_252, "daily 252", 252.0),
}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_classification_of_each_market(pattern):
    make, name, ppy = PATTERNS[pattern]
    ts = make()
    cal = infer_calendar(ts)
    assert (cal.name, cal.periods_per_year, cal.source) == (name, ppy, "inferred")
    assert periods_per_year(ts) == ppy
    # the index's unit does not matter (asi8 / 1e9 made a microsecond index 1000x too many bars)
    for unit in ("s", "ms", "us"):
        assert infer_calendar(ts.as_unit(unit)) == cal


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_the_calendar_does_not_depend_on_later_bars(pattern):
    make, name, ppy = PATTERNS[pattern]
    ts = make()
    # any cut that shows the pattern (two weeks) gives the same count
    for days in (15, 20, 40):
        assert infer_calendar(ts[ts < ts[0] + pd.Timedelta(days=days)]) == infer_calendar(ts), days
    assert infer_calendar(ts[:-1]) == infer_calendar(ts)
    assert infer_calendar(ts[len(ts) // 3 :]) == infer_calendar(ts)  # nor on where it starts


def test_microsecond_index_equals_the_nanosecond_one():
    ns = pd.date_range("2024-01-01", periods=24 * 21, freq="h", tz="UTC", unit="ns")
    us = pd.DatetimeIndex(ns.astype(str)).as_unit("us")  # as parsed from text by pandas 3
    assert us.unit == "us" and ns.unit == "ns"
    assert infer_calendar(us) == infer_calendar(ns) and infer_calendar(us).periods_per_year == 8766
    assert bar_seconds(us) == bar_seconds(ns) == 3600.0


def test_under_a_year_of_equity_hours_counts_observed_bars_not_the_spacing():
    ts = equity_hours("2024-01-02", "2024-04-30")  # four months: the old rule said 8766
    cal = infer_calendar(ts)
    assert cal.name == "exchange sessions" and cal.periods_per_year == 1764 == 252 * 7
    assert cal.bar_seconds == 3600.0


def test_weekly_monthly_and_by_spacing():
    assert infer_calendar(pd.date_range("2020-01-03", periods=60, freq="W-FRI")).name == "weekly"
    assert infer_calendar(pd.date_range("2020-01-03", periods=60, freq="W-FRI")).periods_per_year == 52
    assert infer_calendar(pd.date_range("2020-01-31", periods=30, freq="ME")).periods_per_year == 12
    q = infer_calendar(pd.date_range("2020-01-01", periods=12, freq="3D"))
    assert q.name == "by spacing" and q.periods_per_year == pytest.approx(365.25 / 3)


def test_short_samples_never_overstate():
    """Under a week no weekend is seen: taken as closed; under a day no whole session is seen."""
    week_days = hourly_24_7("2024-01-01", days=5)  # Monday to Friday of a 24/7 market
    assert infer_calendar(week_days).name == "24/5" and infer_calendar(week_days).periods_per_year < 8766
    hours = hourly_24_7("2024-01-01", days=1)[:10]  # ten bars: one 10-bar session at most
    assert infer_calendar(hours).periods_per_year == 252 * 10 < 8766
    assert infer_calendar(daily_365("2024-01-01", days=5)).periods_per_year == 252  # Mon-Fri only
    # a weekend that is seen counts at once, and FX's Sunday evening is not a weekend
    assert infer_calendar(hourly_24_7("2024-01-05", days=4)).name == "24/7"
    assert infer_calendar(hourly_fx("2024-01-07", "2024-01-13")).name == "24/5"
    # two sessions, one cut by the sample's end: the median bars of the two, never more than 7
    two = equity_hours("2024-01-02", "2024-01-03")[:10]
    assert infer_calendar(two).periods_per_year <= 1764


def test_too_few_bars_and_overrides():
    with pytest.raises(FlagcoreError, match="at least two"):
        infer_calendar(pd.DatetimeIndex(["2024-01-01"]))
    same = pd.DatetimeIndex(["2024-01-01", "2024-01-01", "2024-01-01"])
    with pytest.raises(FlagcoreError, match="timestamps must increase"):
        infer_calendar(same)
    assert periods_per_year(same) is None and periods_per_year(same[:1]) is None
    cal = resolve_calendar(hourly_24_7(), 5000)
    assert cal == Calendar("override", 5000.0, 3600.0, "given")
    assert resolve_calendar(hourly_24_7()) == infer_calendar(hourly_24_7())
    for bad in (0, -1, float("nan"), float("inf"), "abc", None):
        with pytest.raises(FlagcoreError, match="must be a number above 0, got"):
            check_periods_per_year(bad)


# ----------------------------------------------------------------------------- features


def bars_on(ts: pd.DatetimeIndex, seed: int = 0) -> pd.DataFrame:
    """Synthetic OHLCV bars (a random walk) at the times ``ts``."""
    rng = np.random.default_rng(seed)
    n = len(ts)
    close = 100 * np.exp(np.cumsum(rng.normal(scale=0.01, size=n)))
    open_ = np.r_[close[0], close[:-1]]
    wick = np.abs(rng.normal(scale=0.003, size=(2, n)))
    return pd.DataFrame(
        {
            "timestamp": ts,
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick[0]),
            "low": np.minimum(open_, close) * (1 - wick[1]),
            "close": close,
            "volume": np.exp(rng.normal(size=n)) * 1000,
        }
    )


# Each full file spans more than a year and its cut under one, so a span-based rule gives them
# different counts; the calendar gives both the same.
CUT_FILES = {
    "hourly 24/7": (lambda: hourly_24_7("2023-01-01", days=370), 24 * 30),
    "hourly 24/5": (lambda: hourly_fx("2023-01-01", "2024-02-01"), 24 * 40),
    "daily 365": (lambda: daily_365("2022-01-01", days=420), 250),
    "daily 252": (lambda: daily_252("2022-01-03", days=300), 230),
}


@pytest.mark.parametrize("case", sorted(CUT_FILES))
def test_features_on_a_file_cut_short_equal_the_full_files(case):
    make, cut = CUT_FILES[case]
    bars = bars_on(make())
    assert cut > WARMUP + 10 and (bars["timestamp"].iloc[-1] - bars["timestamp"].iloc[0]).days > 366
    full = compute_features(bars)
    short = compute_features(bars.iloc[:cut].copy())
    a, b = full.iloc[:cut, 2:].to_numpy(float), short.iloc[:, 2:].to_numpy(float)
    assert a.shape == b.shape and np.isfinite(a[WARMUP:]).all()
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.allclose(a, b, rtol=1e-7, atol=1e-9, equal_nan=True)


def test_features_command_records_the_calendar_and_takes_an_override(tmp_path, capsys):
    bars = bars_on(hourly_fx("2023-01-01", "2024-02-01"))
    full, short = tmp_path / "full.csv", tmp_path / "short.csv"
    bars.to_csv(full, index=False)
    bars.iloc[:1000].to_csv(short, index=False)
    out = {}
    for name, path in (("full", full), ("short", short)):
        assert (
            main(["features", "--ohlcv", str(path), "--out", str(tmp_path / f"{name}.parquet"), "--json"])
            == 0
        )
        s = json.loads(capsys.readouterr().out)
        assert (s["calendar"], s["periods_per_year"]) == ("24/5", 6240.0)
        out[name] = pd.read_parquet(tmp_path / f"{name}.parquet")
    cols = [c for c in out["short"].columns if c not in ("timestamp", "close", "label")]
    n = len(out["short"])
    assert np.array_equal(out["full"]["timestamp"][:n], out["short"]["timestamp"])
    assert np.allclose(out["full"][cols][:n], out["short"][cols], rtol=1e-6, atol=1e-7)

    from flagcore.data.dataset import load_dataset

    ds = load_dataset(tmp_path / "short.parquet")
    assert ds.calendar == Calendar("24/5", 6240.0, 3600.0, "file metadata")

    assert (
        main(
            [
                "features",
                "--ohlcv",
                str(short),
                "--out",
                str(tmp_path / "o.parquet"),
                "--periods-per-year",
                "1560",
            ]
        )
        == 0
    )
    capsys.readouterr()
    o = load_dataset(tmp_path / "o.parquet", state_dim=60)
    assert o.calendar == Calendar("override", 1560.0, 3600.0, "file metadata")
    # annualised volatilities scale with sqrt(periods per year): log(sqrt(1560 / 6240)) = -log 2
    j = o.feature_names.index("rvol_24")
    assert np.allclose(o.features[:, j] - ds.features[:, j], -np.log(2), atol=1e-5)

    for bad in ("0", "-5", "nan"):
        assert (
            main(
                [
                    "features",
                    "--ohlcv",
                    str(short),
                    "--out",
                    str(tmp_path / "x.parquet"),
                    "--periods-per-year",
                    bad,
                ]
            )
            == 1
        )
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--periods-per-year must be a number above 0, got" in err
        assert bad in err
    assert not (tmp_path / "x.parquet").exists()


def test_build_datasets_records_the_calendar_in_both_splits():
    bars = bars_on(hourly_24_7("2024-01-01", days=60))
    sets = build_datasets(bars, test_start="2024-02-15", context=50)
    for _, meta in sets.values():
        assert (meta["calendar"], meta["periods_per_year"]) == ("24/7", 8766.0)
    sets = build_datasets(bars, test_start="2024-02-15", context=50, periods_per_year=365)
    assert sets["train"][1]["calendar"] == "override" and sets["test"][1]["periods_per_year"] == 365.0
