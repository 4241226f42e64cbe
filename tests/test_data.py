import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

from flagcore.cli.command import main
from flagcore.data.calendar import Calendar, periods_per_year
from flagcore.data.dataset import load_dataset, temporal_split, write_dataset
from flagcore.errors import FlagcoreError
from flagcore.vocab import UNLABELLED


def _csv(tmp_path, df, name="data.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _check(path, *extra):
    return main(["check-data", "--data", str(path), *extra])


def test_valid_file_is_padded_and_padding_recorded(tmp_path, capsys):
    path = _csv(tmp_path, make_frame(n_features=49))
    assert _check(path, "--json") == 0
    s = json.loads(capsys.readouterr().out)
    assert s["features"] == 49 and s["state_dim"] == 60
    assert s["padded_inputs"] == list(range(49, 60))
    assert abs(sum(s["label_shares"].values()) - 1) < 1e-12
    ds = load_dataset(path)
    assert ds.features.shape == (80, 60) and ds.features.dtype == np.float32
    assert not ds.features[:, 49:].any()
    assert np.allclose(ds.features[:, 0], make_frame(n_features=49)["f00"])


def test_parquet_and_csv_agree_and_parquet_keeps_horizon(tmp_path):
    df = make_frame()
    a = load_dataset(_csv(tmp_path, df))
    b = load_dataset(write_dataset(df, tmp_path / "d.parquet", label_horizon=24))
    assert np.array_equal(a.features, b.features) and np.array_equal(a.labels, b.labels)
    assert b.label_horizon == 24 and a.label_horizon is None


def test_numeric_labels_and_missing_labels(tmp_path):
    df = make_frame(n=6)
    df["label"] = ["-1", "0", "1", "", "1", "0"]
    ds = load_dataset(_csv(tmp_path, df))
    assert ds.labels.tolist() == [0, 1, 2, UNLABELLED, 2, 1]


CASES = {
    "missing timestamp": (lambda df: df.drop(columns="timestamp"), "missing column 'timestamp'"),
    "missing close": (lambda df: df.drop(columns="close"), "missing column 'close'"),
    "nan feature": (
        lambda df: df.assign(f03=df.f03.mask(df.index == 6)),
        "column 'f03' has NaN (missing) at row 7",
    ),
    "inf feature": (
        lambda df: df.assign(f10=df.f10.where(df.index != 2, np.inf)),
        "column 'f10' has an infinite value at row 3",
    ),
    "string feature": (
        lambda df: df.assign(f01=df.f01.astype(object).where(df.index != 4, "abc")),
        "column 'f01' has a non-numeric value 'abc' at row 5",
    ),
    "duplicated timestamp": (
        lambda df: df.assign(timestamp=df.timestamp.where(df.index != 9, df.timestamp[8])),
        "duplicated timestamp 2025-01-01T08:00:00+00:00 at row 10",
    ),
    "unsorted timestamps": (
        lambda df: df.iloc[[0, 1, 3, 2] + list(range(4, len(df)))],
        "timestamps are not increasing: 2025-01-01T02:00:00+00:00 at row 4",
    ),
    "unreadable timestamp": (
        lambda df: df.assign(timestamp=df.timestamp.astype(str).where(df.index != 1, "yesterday")),
        "unreadable date 'yesterday' at row 2",
    ),
    "unknown label": (
        lambda df: df.assign(label=df.label.where(df.index != 11, "STRONG_BUY")),
        "unknown label 'STRONG_BUY' at row 12",
    ),
    "too many features": (
        lambda df: df.assign(**{f"extra{i}": 0.0 for i in range(12)}),
        "61 feature columns, more than the model's state_dim 60 (first extra: 'extra11')",
    ),
    "no features": (lambda df: df[["timestamp", "close", "label"]], "no feature columns"),
    "non-positive close": (
        lambda df: df.assign(close=df.close.where(df.index != 3, -1.0)),
        "non-positive price -1.0 at row 4",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_dataset_gives_one_line_naming_file_column_row(tmp_path, capsys, case):
    change, message = CASES[case]
    path = _csv(tmp_path, change(make_frame()))
    assert _check(path) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"flagcore: error: {path}:")
    assert message in err, err
    assert captured.out == ""


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"timestamp,close,f0\n", "has a header but no rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not UTF-8"),
    ],
)
def test_missing_empty_and_binary_files(tmp_path, capsys, content, message):
    path = tmp_path / "d.csv"
    if content is not None:
        path.write_bytes(content)
    assert _check(path) == 1
    assert message in capsys.readouterr().err


def test_unsupported_suffix_and_bad_parquet(tmp_path, capsys):
    (tmp_path / "d.xlsx").write_bytes(b"PK")
    assert _check(tmp_path / "d.xlsx") == 1
    assert "unsupported file type '.xlsx'" in capsys.readouterr().err
    (tmp_path / "d.parquet").write_bytes(b"not parquet at all")
    assert _check(tmp_path / "d.parquet") == 1
    assert "not a readable Parquet file" in capsys.readouterr().err


def test_cli_exit_code_and_message_in_a_real_process(tmp_path):
    path = _csv(tmp_path, CASES["nan feature"][0](make_frame()))
    r = subprocess.run(
        [sys.executable, "-m", "flagcore", "check-data", "--data", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"flagcore: error: {path}: column 'f03' has NaN (missing) at row 7 "
        "(timestamp 2025-01-01T06:00:00+00:00)"
    )


def test_mixed_timezones_are_converted_to_utc(tmp_path):
    df = make_frame(n=3)
    df["timestamp"] = ["2025-01-01T00:00:00+00:00", "2025-01-01T02:00:00+01:00", "2025-01-01 02:00"]
    ds = load_dataset(_csv(tmp_path, df))
    assert [t.hour for t in ds.timestamps] == [0, 1, 2] and str(ds.timestamps.tz) == "UTC"


def test_periods_per_year_from_the_calendar_not_the_span():
    hourly = pd.date_range("2020-01-01", periods=8761 * 2, freq="h", tz="UTC")
    assert periods_per_year(hourly) == 8766  # 24 x 365.25, two years or three weeks alike
    assert periods_per_year(hourly[: 24 * 21]) == 8766
    days = pd.bdate_range("2020-01-01", "2023-12-31", tz="UTC")
    assert periods_per_year(days) == 252  # daily weekdays: exchange days, not 261 weekdays observed
    assert periods_per_year(hourly[:1]) is None


def _hourly_file(tmp_path, days=21, **meta):
    df = make_frame(n=24 * days, n_features=3, start="2025-01-06")  # a Monday, 24/7 hourly bars
    return load_dataset(write_dataset(df, tmp_path / "d.parquet", **meta))


def test_dataset_calendar_inferred_or_recorded(tmp_path, capsys):
    ds = _hourly_file(tmp_path)
    assert ds.calendar == Calendar("24/7", 8766.0, 3600.0, "inferred") and ds.periods_per_year == 8766
    s = ds.summary()
    assert (s["periods_per_year"], s["calendar"], s["calendar_source"]) == (8766.0, "24/7", "inferred")
    assert _check(tmp_path / "d.parquet") == 0
    assert "calendar 24/7: 8,766.0 bars a year (inferred)" in capsys.readouterr().out

    rec = _hourly_file(tmp_path, periods_per_year=1764.0, calendar="exchange sessions")
    assert rec.calendar == Calendar("exchange sessions", 1764.0, 3600.0, "file metadata")
    assert (rec.summary()["periods_per_year"], rec.summary()["calendar"]) == (1764.0, "exchange sessions")
    # an older file's span-based value without a calendar name is inferred again
    old = _hourly_file(tmp_path, periods_per_year=8765.1)
    assert old.calendar.source == "inferred" and old.periods_per_year == 8766


def test_dataset_calendar_errors_name_the_file(tmp_path, capsys):
    bad = _hourly_file(tmp_path, periods_per_year=-3, calendar="24/7")
    with pytest.raises(FlagcoreError, match=r"d\.parquet: periods_per_year in the file's metadata .* got -3"):
        _ = bad.periods_per_year
    path = _csv(tmp_path, make_frame(n=1))
    one = load_dataset(path)
    with pytest.raises(FlagcoreError) as e:
        _ = one.periods_per_year
    msg = str(e.value)
    assert msg.startswith(f"{path}: cannot tell the bars per year") and "--periods-per-year" in msg
    assert len(msg.splitlines()) == 1
    assert one.summary()["periods_per_year"] is None and one.summary()["calendar"] is None
    assert _check(path) == 0  # check-data still describes the file


def test_a_slice_keeps_the_calendar_of_its_dataset(tmp_path):
    ds = _hourly_file(tmp_path)
    part = ds.slice(5, 15)  # ten bars alone would read as one 10-bar session
    assert periods_per_year(part.timestamps) == 2520
    assert part.calendar == ds.calendar and part.periods_per_year == 8766


class TestTemporalSplit:
    def ds(self, tmp_path, horizon=5):
        df = make_frame(n=200, start="2024-12-31 00:00")
        return load_dataset(write_dataset(df, tmp_path / "d.parquet", label_horizon=horizon))

    def test_purges_the_label_horizon_before_the_test_period(self, tmp_path):
        split = temporal_split(self.ds(tmp_path), "2025-01-01")
        assert split.test.timestamps[0] == pd.Timestamp("2025-01-01", tz="UTC")
        assert split.purged_bars == 5
        gap = (split.test.timestamps[0] - split.train.timestamps[-1]) / pd.Timedelta("1h") - 1
        assert gap == 5

    def test_refuses_overlap(self, tmp_path):
        with pytest.raises(FlagcoreError, match="overlaps the test period"):
            temporal_split(self.ds(tmp_path), "2025-01-01", train_end="2025-01-01 03:00")

    def test_refuses_gap_shorter_than_horizon(self, tmp_path):
        with pytest.raises(FlagcoreError, match="only 2 bars between .* needs at least 5"):
            temporal_split(self.ds(tmp_path), "2025-01-01", train_end="2024-12-31 21:00")

    def test_accepts_gap_equal_to_horizon(self, tmp_path):
        split = temporal_split(self.ds(tmp_path), "2025-01-01", train_end="2024-12-31 18:00")
        assert split.train.timestamps[-1].hour == 18 and split.purged_bars == 5
