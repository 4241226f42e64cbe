"""The dataset contract: one row per bar, in time order.

A dataset is a Parquet or CSV file with
- ``timestamp``: parseable dates, strictly increasing; naive times are taken as UTC;
- ``close``: the bar's closing price, positive (needed to backtest; optional for inference only);
- ``label`` (optional): SELL/HOLD/BUY or -1/0/1; an empty cell means "not yet resolved";
- every other column is a model input feature, numeric and finite, in file order.

Fewer features than the model's ``state_dim`` are zero-padded on the right (49 -> 60 in the seed)
and the padded input positions are recorded. More features than ``state_dim`` are refused.
Parquet files written by flagcore carry the label horizon, the feature groups and the market's
calendar (``periods_per_year`` with its ``calendar`` name) in their metadata; without them the
calendar is inferred from the timestamps.

Errors name the file, the column and the first bad row; rows count from 1 for the first data row
(in a CSV that is line 2). Reading the file and checking its columns is ``data.tables``; the bar
calendar is ``data.calendar``; prediction files (an ensemble partner's output) are ``data.predictions``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flagcore.data.calendar import (
    FILE_METADATA,
    Calendar,
    bar_seconds,
    check_periods_per_year,
    infer_calendar,
)
from flagcore.data.tables import (
    METADATA_KEY,
    PARQUET_SUFFIXES,
    TIMESTAMP,
    numeric_column,
    parse_labels,
    parse_timestamps,
    read_table,
    require_finite,
    row_name,
    to_utc,
)
from flagcore.errors import FlagcoreError
from flagcore.vocab import CLASS_NAMES, UNLABELLED

CLOSE, LABEL = "close", "label"
RESERVED = (TIMESTAMP, CLOSE, LABEL)


@dataclass
class Dataset:
    """A validated dataset, features padded to the model's width."""

    source: str
    timestamps: pd.DatetimeIndex  # UTC, strictly increasing
    features: np.ndarray  # (n, state_dim) float32, zero padding on the right
    feature_names: list[str]  # the real features, in input order
    close: np.ndarray | None  # (n,) float64
    labels: np.ndarray | None  # (n,) int8 class ids 0/1/2, UNLABELLED = -1 where unresolved
    label_horizon: int | None = None  # bars a label looks ahead; used for purging
    evaluation_start: pd.Timestamp | None = None  # earlier bars are history (context) only
    content_hash: str = ""
    attrs: dict = field(default_factory=dict)  # anything else from the file's flagcore metadata
    # the market's calendar once known; a slice keeps its parent's (a stretch of the same market)
    _calendar: Calendar | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_bars(self) -> int:
        return len(self.timestamps)

    @property
    def state_dim(self) -> int:
        return self.features.shape[1]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def eval_index(self) -> int:
        """Index of the first evaluated bar; bars before it only give windows their history."""
        if self.evaluation_start is None:
            return 0
        return int(self.timestamps.searchsorted(self.evaluation_start))

    @property
    def padded_inputs(self) -> list[int]:
        """Model input positions that hold zero padding, not data."""
        return list(range(self.n_features, self.state_dim))

    @property
    def calendar(self) -> Calendar:
        """The market's bar calendar: recorded in the file's flagcore metadata, else inferred.

        The file's value counts when it records both ``periods_per_year`` and the ``calendar``
        name (``flagcore features`` writes both); older files, whose ``periods_per_year`` came
        from the sample's span, are read again with ``infer_calendar``.

        Raises
        ------
        FlagcoreError : one line naming the file when the value recorded is not a number above 0
            or the calendar cannot be inferred (it suggests ``--periods-per-year``).
        """
        if self._calendar is None:
            self._calendar = self._find_calendar()
        return self._calendar

    def _find_calendar(self) -> Calendar:
        recorded, name = self.attrs.get("periods_per_year"), self.attrs.get("calendar")
        if recorded is not None and name is not None:
            value = check_periods_per_year(
                recorded, f"{self.source}: periods_per_year in the file's metadata"
            )
            return Calendar(str(name), value, bar_seconds(self.timestamps), FILE_METADATA)
        try:
            return infer_calendar(self.timestamps)
        except FlagcoreError as e:
            raise FlagcoreError(
                f"{self.source}: cannot tell the bars per year ({e}); pass --periods-per-year N"
            ) from None

    @property
    def periods_per_year(self) -> float:
        """Bars per year of the market's calendar (``calendar``), the annualisation factor."""
        return self.calendar.periods_per_year

    def label_shares(self) -> dict[str, float] | None:
        if self.labels is None:
            return None
        known = self.labels[self.labels != UNLABELLED]
        if known.size == 0:
            return {c: 0.0 for c in CLASS_NAMES}
        counts = np.bincount(known, minlength=3)
        return {c: float(counts[i] / known.size) for i, c in enumerate(CLASS_NAMES)}

    def slice(self, start: int, stop: int) -> Dataset:
        """Bars ``start:stop``; the slice keeps this dataset's calendar where it is known."""
        out = Dataset(
            source=self.source,
            timestamps=self.timestamps[start:stop],
            features=self.features[start:stop],
            feature_names=self.feature_names,
            close=None if self.close is None else self.close[start:stop],
            labels=None if self.labels is None else self.labels[start:stop],
            label_horizon=self.label_horizon,
            evaluation_start=self.evaluation_start,
            content_hash=self.content_hash,
            attrs=self.attrs,
        )
        with contextlib.suppress(FlagcoreError):  # too few bars to tell; the slice cannot tell either
            out._calendar = self.calendar
        return out

    def summary(self) -> dict:
        try:
            cal: Calendar | None = self.calendar
        except FlagcoreError:
            cal = None  # reported as unknown; annualising refuses it with the file's name
        return {
            "source": self.source,
            "bars": self.n_bars,
            "start": self.timestamps[0].isoformat() if self.n_bars else None,
            "end": self.timestamps[-1].isoformat() if self.n_bars else None,
            "features": self.n_features,
            "state_dim": self.state_dim,
            "padded_inputs": self.padded_inputs,
            "feature_names": self.feature_names,
            "has_close": self.close is not None,
            "label_shares": self.label_shares(),
            "unlabelled_bars": None if self.labels is None else int((self.labels == UNLABELLED).sum()),
            "label_horizon": self.label_horizon,
            "evaluation_start": None if self.evaluation_start is None else self.evaluation_start.isoformat(),
            "context_bars": self.eval_index,
            "periods_per_year": None if cal is None else cal.periods_per_year,
            "calendar": None if cal is None else cal.name,
            "calendar_source": None if cal is None else cal.source,
            "content_hash": self.content_hash,
        }


def load_dataset(
    path: str | os.PathLike,
    *,
    state_dim: int = 60,
    require_close: bool = True,
    feature_columns: list[str] | None = None,
    label_horizon: int | None = None,
) -> Dataset:
    """Read and validate a dataset; pad features with zeros on the right to ``state_dim``.

    Parameters
    ----------
    path : CSV or Parquet file.
    state_dim : the model's input width; more real features than this are refused.
    require_close : refuse a file without ``close`` (backtests need it).
    feature_columns : use these columns as features, in this order (default: every column that
        is not timestamp, close or label, in file order).
    label_horizon : bars each label looks ahead; overrides the file's metadata.
    """
    p = Path(path)
    df, meta = read_table(p)
    if len(df) == 0:
        raise FlagcoreError(f"{p}: has a header but no rows")
    ts = parse_timestamps(df, p)
    close = _close(df, p, ts, require_close)
    labels = parse_labels(df, p, LABEL) if LABEL in df.columns else None
    names = _feature_names(df, p, feature_columns, state_dim)
    features = np.zeros((len(df), state_dim), dtype=np.float32)
    for j, col in enumerate(names):
        values = numeric_column(df, col, p)
        require_finite(values, col, p, ts)
        features[:, j] = values

    horizon = label_horizon if label_horizon is not None else meta.get("label_horizon")
    if horizon is not None and (not isinstance(horizon, int) or horizon < 0):
        raise FlagcoreError(f"{p}: label horizon must be a non-negative integer, got {horizon!r}")
    evaluation_start = None
    if meta.get("evaluation_start"):
        evaluation_start = to_utc(meta["evaluation_start"], f"{p}: evaluation_start")
        if evaluation_start > ts[-1]:
            raise FlagcoreError(f"{p}: evaluation_start {evaluation_start.isoformat()} is after the last bar")
    return Dataset(
        source=str(p),
        timestamps=ts,
        features=features,
        feature_names=names,
        close=close,
        labels=labels,
        label_horizon=horizon,
        evaluation_start=evaluation_start,
        content_hash=_content_hash(ts, names, features, close, labels, horizon, evaluation_start),
        attrs={k: v for k, v in meta.items() if k not in ("label_horizon", "evaluation_start")},
    )


def _close(df: pd.DataFrame, p: Path, ts: pd.DatetimeIndex, require_close: bool) -> np.ndarray | None:
    """The positive, finite ``close`` column; None without one (refused when ``require_close``)."""
    if CLOSE not in df.columns:
        if require_close:
            raise FlagcoreError(f"{p}: missing column 'close' (needed for backtests)")
        return None
    close = numeric_column(df, CLOSE, p)
    require_finite(close, CLOSE, p, ts)
    if (close <= 0).any():
        i = int(np.argmax(close <= 0))
        raise FlagcoreError(f"{p}: column 'close' has a non-positive price {close[i]} at {row_name(i)}")
    return close


def _feature_names(df: pd.DataFrame, p: Path, feature_columns: list[str] | None, state_dim: int) -> list[str]:
    """The feature columns in input order: ``feature_columns``, or every column not reserved."""
    if feature_columns is not None:
        absent = [c for c in feature_columns if c not in df.columns]
        if absent:
            raise FlagcoreError(f"{p}: missing feature column {absent[0]!r}")
        names = list(feature_columns)
    else:
        names = [c for c in df.columns if c not in RESERVED]
    if not names:
        raise FlagcoreError(f"{p}: no feature columns besides timestamp, close and label")
    if len(names) > state_dim:
        raise FlagcoreError(
            f"{p}: {len(names)} feature columns, more than the model's state_dim {state_dim} "
            f"(first extra: {names[state_dim]!r})"
        )
    return names


def _content_hash(
    ts: pd.DatetimeIndex,
    names: list[str],
    features: np.ndarray,
    close: np.ndarray | None,
    labels: np.ndarray | None,
    horizon: int | None,
    evaluation_start: pd.Timestamp | None,
) -> str:
    """SHA-256 of what the dataset holds: times, feature names and values, close, labels, settings."""
    h = hashlib.sha256()
    h.update(ts.as_unit("ns").asi8.tobytes())  # the same times hash the same in any unit
    h.update(json.dumps(names).encode())
    h.update(np.ascontiguousarray(features[:, : len(names)]).tobytes())
    for arr in (close, labels):
        h.update(b"-" if arr is None else arr.tobytes())
    h.update(str(horizon).encode())
    h.update(str(evaluation_start).encode())
    return h.hexdigest()


def write_dataset(df: pd.DataFrame, path: str | os.PathLike, **metadata) -> Path:
    """Write a dataset frame; Parquet keeps ``metadata`` (label_horizon, feature groups, ...)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() in PARQUET_SUFFIXES:
        table = pa.Table.from_pandas(df, preserve_index=False)
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(metadata).encode()}
        )
        pq.write_table(table, p)
    else:
        df.to_csv(p, index=False)
    return p


@dataclass
class Split:
    train: Dataset
    test: Dataset
    purged_bars: int  # training bars dropped because their labels reach into the test period


def temporal_split(
    ds: Dataset,
    test_start: str | pd.Timestamp,
    *,
    train_end: str | pd.Timestamp | None = None,
    test_end: str | pd.Timestamp | None = None,
    label_horizon: int | None = None,
) -> Split:
    """Split by date into training bars before the test period and test bars from ``test_start``.

    A training label at bar t looks ``h`` bars ahead, so the last training bar must lie at least
    ``h`` bars before the first test bar (gap >= h). Without ``train_end`` the last ``h`` bars
    before ``test_start`` are purged; with it, a shorter gap or an overlap is refused.
    ``train_end`` and ``test_end`` are inclusive; ``test_start`` is the first test instant.
    """
    h = label_horizon if label_horizon is not None else (ds.label_horizon or 0)
    start = to_utc(test_start, "test_start")
    first_test = int(ds.timestamps.searchsorted(start, side="left"))
    stop = ds.n_bars
    if test_end is not None:
        stop = int(ds.timestamps.searchsorted(to_utc(test_end, "test_end"), side="right"))
    if first_test >= ds.n_bars or stop <= first_test:
        raise FlagcoreError(f"{ds.source}: no bars in the test period starting {start.isoformat()}")
    if train_end is None:
        train_stop = max(first_test - h, 0)
    else:
        end = to_utc(train_end, "train_end")
        if end >= start:
            raise FlagcoreError(
                f"{ds.source}: training period ending {end.isoformat()} overlaps the test period "
                f"starting {start.isoformat()}"
            )
        train_stop = int(ds.timestamps.searchsorted(end, side="right"))
        gap = first_test - train_stop
        if gap < h:
            raise FlagcoreError(
                f"{ds.source}: only {gap} bars between the training period (ending "
                f"{end.isoformat()}) and the test period; the label horizon needs at least {h}"
            )
    if train_stop == 0:
        raise FlagcoreError(f"{ds.source}: no training bars before {start.isoformat()}")
    return Split(ds.slice(0, train_stop), ds.slice(first_test, stop), first_test - train_stop)


def check_disjoint(train: Dataset, test: Dataset, label_horizon: int | None = None) -> None:
    """Refuse two datasets whose periods overlap or sit closer than the label horizon.

    The test set's period starts at its first evaluated bar; history bars before it may overlap.
    """
    first = test.timestamps[test.eval_index]
    if train.timestamps[-1] >= first:
        raise FlagcoreError(
            f"{test.source}: test period starting {first.isoformat()} overlaps the "
            f"training period of {train.source} ending {train.timestamps[-1].isoformat()}"
        )
    h = label_horizon if label_horizon is not None else (train.label_horizon or 0)
    if h:
        step = pd.Timedelta(seconds=bar_seconds(train.timestamps))  # unit-safe
        if first - train.timestamps[-1] <= h * step:
            raise FlagcoreError(
                f"{test.source}: starts within the label horizon ({h} bars) of the training period's end"
            )
