"""The dataset contract: one row per bar, in time order.

A dataset is a Parquet or CSV file with
- ``timestamp``: parseable dates, strictly increasing; naive times are taken as UTC;
- ``close``: the bar's closing price, positive (needed to backtest; optional for inference only);
- ``label`` (optional): SELL/HOLD/BUY or -1/0/1; an empty cell means "not yet resolved";
- every other column is a model input feature, numeric and finite, in file order.

Fewer features than the model's ``state_dim`` are zero-padded on the right (49 -> 60 in the seed)
and the padded input positions are recorded. More features than ``state_dim`` are refused.
Parquet files written by flagcore carry the label horizon and feature groups in their metadata.

Errors name the file, the column and the first bad row; rows count from 1 for the first data row
(in a CSV that is line 2).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flagcore.errors import FlagcoreError

TIMESTAMP, CLOSE, LABEL = "timestamp", "close", "label"
RESERVED = (TIMESTAMP, CLOSE, LABEL)
CLASS_NAMES = ("SELL", "HOLD", "BUY")  # class ids 0, 1, 2
_LABEL_CODES = {"SELL": 0, "HOLD": 1, "BUY": 2, "-1": 0, "0": 1, "1": 2}
UNLABELLED = -1
METADATA_KEY = b"flagcore"


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

    def label_shares(self) -> dict[str, float] | None:
        if self.labels is None:
            return None
        known = self.labels[self.labels != UNLABELLED]
        if known.size == 0:
            return {c: 0.0 for c in CLASS_NAMES}
        counts = np.bincount(known, minlength=3)
        return {c: float(counts[i] / known.size) for i, c in enumerate(CLASS_NAMES)}

    def slice(self, start: int, stop: int) -> "Dataset":
        return Dataset(
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

    def summary(self) -> dict:
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
            "periods_per_year": periods_per_year(self.timestamps),
            "content_hash": self.content_hash,
        }


def _read_table(path: Path) -> tuple[pd.DataFrame, dict]:
    """The file as a DataFrame of strings/numbers, and flagcore's Parquet metadata if any."""
    if not path.exists():
        raise FlagcoreError(f"{path}: no such file")
    if path.is_dir():
        raise FlagcoreError(f"{path}: is a folder, expected a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise FlagcoreError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    meta: dict = {}
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
            raise FlagcoreError(f"{path}: not a readable Parquet file ({_one_line(e)})") from None
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        if raw:
            try:
                meta = json.loads(raw)
            except json.JSONDecodeError:
                raise FlagcoreError(f"{path}: flagcore metadata in the Parquet file is damaged") from None
        df = table.to_pandas()
    elif suffix in (".csv", ".txt", ".gz") or suffix == "":
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        except UnicodeDecodeError as e:
            raise FlagcoreError(
                f"{path}: not UTF-8 text at byte {e.start} (binary file or another encoding?)"
            ) from None
        except pd.errors.EmptyDataError:
            raise FlagcoreError(f"{path}: the file has no header and no rows") from None
        except pd.errors.ParserError as e:
            raise FlagcoreError(f"{path}: not a well-formed CSV ({_one_line(e)})") from None
        if "\x00" in "".join(df.columns.astype(str)):
            raise FlagcoreError(f"{path}: binary data where a CSV header was expected")
    else:
        raise FlagcoreError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    df.columns = [str(c).strip() for c in df.columns]
    dupes = df.columns[df.columns.duplicated()].tolist()
    if dupes:
        raise FlagcoreError(f"{path}: column {dupes[0]!r} appears more than once")
    return df, meta


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:200]


def _row(i: int) -> str:
    return f"row {i + 1}"


def _numeric(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    s = df[col]
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        text = s.astype(str).str.strip()
        values = pd.to_numeric(text.where(text != "", "nan"), errors="coerce")
        bad = values.isna() & ~text.str.lower().isin(["", "nan", "na", "null", "none"])
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise FlagcoreError(f"{path}: column {col!r} has a non-numeric value {text.iloc[i]!r} at {_row(i)}")
        out = values.to_numpy(dtype=np.float64)
    elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        out = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        raise FlagcoreError(f"{path}: column {col!r} has type {s.dtype}, expected numbers")
    return out


def _finite(values: np.ndarray, col: str, path: Path, ts: pd.DatetimeIndex | None) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        what = "NaN (missing)" if np.isnan(values[i]) else "an infinite value"
        when = f" (timestamp {ts[i].isoformat()})" if ts is not None else ""
        raise FlagcoreError(f"{path}: column {col!r} has {what} at {_row(i)}{when}")


def _timestamps(df: pd.DataFrame, path: Path) -> pd.DatetimeIndex:
    if TIMESTAMP not in df.columns:
        raise FlagcoreError(
            f"{path}: missing column 'timestamp' (columns: {', '.join(map(str, df.columns[:8]))})"
        )
    raw = df[TIMESTAMP]
    if pd.api.types.is_datetime64_any_dtype(raw):
        ts = pd.to_datetime(raw, utc=True)
    else:
        text = raw.astype(str).str.strip()
        ts = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
        bad = ts.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise FlagcoreError(f"{path}: column 'timestamp' has an unreadable date {text.iloc[i]!r} at {_row(i)}")
    if ts.isna().any():
        i = int(np.argmax(ts.isna().to_numpy()))
        raise FlagcoreError(f"{path}: column 'timestamp' is empty at {_row(i)}")
    index = pd.DatetimeIndex(ts).as_unit("ns")
    step = np.diff(index.asi8)
    if (step == 0).any():
        i = int(np.argmax(step == 0)) + 1
        raise FlagcoreError(f"{path}: duplicated timestamp {index[i].isoformat()} at {_row(i)}")
    if (step < 0).any():
        i = int(np.argmax(step < 0)) + 1
        raise FlagcoreError(
            f"{path}: timestamps are not increasing: {index[i].isoformat()} at {_row(i)} "
            f"comes after {index[i - 1].isoformat()}"
        )
    return index


def _labels(df: pd.DataFrame, path: Path, column: str = LABEL) -> np.ndarray:
    s = df[column]
    text = s.astype(str).str.strip().str.upper()
    # numeric labels read from Parquet as floats: 1.0 -> "1", -1.0 -> "-1"
    text = text.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)
    missing = s.isna().to_numpy() | text.isin(["", "NAN", "NONE", "NA", "<NA>"]).to_numpy()
    codes = text.map(_LABEL_CODES)
    bad = codes.isna().to_numpy() & ~missing
    if bad.any():
        i = int(np.argmax(bad))
        raise FlagcoreError(
            f"{path}: column {column!r} has unknown label {s.iloc[i]!r} at {_row(i)}; "
            "use SELL/HOLD/BUY or -1/0/1"
        )
    return np.where(missing, UNLABELLED, codes.fillna(UNLABELLED).to_numpy()).astype(np.int8)


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
    df, meta = _read_table(p)
    if len(df) == 0:
        raise FlagcoreError(f"{p}: has a header but no rows")
    ts = _timestamps(df, p)
    close = None
    if CLOSE in df.columns:
        close = _numeric(df, CLOSE, p)
        _finite(close, CLOSE, p, ts)
        if (close <= 0).any():
            i = int(np.argmax(close <= 0))
            raise FlagcoreError(f"{p}: column 'close' has a non-positive price {close[i]} at {_row(i)}")
    elif require_close:
        raise FlagcoreError(f"{p}: missing column 'close' (needed for backtests)")
    labels = _labels(df, p) if LABEL in df.columns else None

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
    features = np.zeros((len(df), state_dim), dtype=np.float32)
    for j, col in enumerate(names):
        values = _numeric(df, col, p)
        _finite(values, col, p, ts)
        features[:, j] = values

    horizon = label_horizon if label_horizon is not None else meta.get("label_horizon")
    if horizon is not None and (not isinstance(horizon, int) or horizon < 0):
        raise FlagcoreError(f"{p}: label horizon must be a non-negative integer, got {horizon!r}")
    h = hashlib.sha256()
    h.update(ts.asi8.tobytes())
    h.update(json.dumps(names).encode())
    h.update(np.ascontiguousarray(features[:, : len(names)]).tobytes())
    for arr in (close, labels):
        h.update(b"-" if arr is None else arr.tobytes())
    h.update(str(horizon).encode())
    evaluation_start = None
    if meta.get("evaluation_start"):
        evaluation_start = _utc(meta["evaluation_start"], f"{p}: evaluation_start")
        if evaluation_start > ts[-1]:
            raise FlagcoreError(f"{p}: evaluation_start {evaluation_start.isoformat()} is after the last bar")
    h.update(str(evaluation_start).encode())
    return Dataset(
        source=str(p), timestamps=ts, features=features, feature_names=names, close=close,
        labels=labels, label_horizon=horizon, evaluation_start=evaluation_start,
        content_hash=h.hexdigest(),
        attrs={k: v for k, v in meta.items() if k not in ("label_horizon", "evaluation_start")},
    )


def write_dataset(df: pd.DataFrame, path: str | os.PathLike, **metadata) -> Path:
    """Write a dataset frame; Parquet keeps ``metadata`` (label_horizon, feature groups, ...)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() in (".parquet", ".pq"):
        table = pa.Table.from_pandas(df, preserve_index=False)
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(metadata).encode()}
        )
        pq.write_table(table, p)
    else:
        df.to_csv(p, index=False)
    return p


def periods_per_year(timestamps: pd.DatetimeIndex) -> float | None:
    """Bars per year from the median bar spacing (8760 for hourly 24/7 bars).

    A market that closes (equities: 6.5 h days, weekends) has gaps longer than the median
    spacing, so the count is bars observed per calendar year when the sample spans a year or
    more, and the median-spacing estimate otherwise.
    """
    if len(timestamps) < 2:
        return None
    span_s = (timestamps[-1] - timestamps[0]).total_seconds()
    year_s = 365.25 * 24 * 3600
    if span_s >= year_s:
        return float((len(timestamps) - 1) / (span_s / year_s))
    step = float(np.median(np.diff(timestamps.asi8))) / 1e9
    return year_s / step if step > 0 else None


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
    start = _utc(test_start, "test_start")
    first_test = int(ds.timestamps.searchsorted(start, side="left"))
    stop = ds.n_bars if test_end is None else int(ds.timestamps.searchsorted(_utc(test_end, "test_end"), side="right"))
    if first_test >= ds.n_bars or stop <= first_test:
        raise FlagcoreError(f"{ds.source}: no bars in the test period starting {start.isoformat()}")
    if train_end is None:
        train_stop = max(first_test - h, 0)
    else:
        end = _utc(train_end, "train_end")
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
        step = pd.Timedelta(np.median(np.diff(train.timestamps.asi8)), unit="ns")
        if first - train.timestamps[-1] <= h * step:
            raise FlagcoreError(
                f"{test.source}: starts within the label horizon ({h} bars) of the training period's end"
            )


def _utc(value, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise FlagcoreError(f"{name}: unreadable date {value!r}") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


LOGIT_COLUMNS = ("logit_sell", "logit_hold", "logit_buy")


@dataclass
class PredictionFile:
    """Another model's per-bar predictions: an ensemble partner or a retrained model's output."""

    source: str
    timestamps: pd.DatetimeIndex
    action: np.ndarray  # (n,) int8 class ids
    logits: np.ndarray | None  # (n, 3) float32 when the file has them

    def align(self, timestamps: pd.DatetimeIndex) -> "PredictionFile":
        """The rows for exactly these bars; refuses a file that misses any of them."""
        pos = self.timestamps.get_indexer(timestamps)
        if (pos < 0).any():
            i = int(np.argmax(pos < 0))
            raise FlagcoreError(
                f"{self.source}: no prediction for bar {timestamps[i].isoformat()} "
                f"({int((pos < 0).sum())} of {len(timestamps)} bars missing; the file covers "
                f"{self.timestamps[0].isoformat()} to {self.timestamps[-1].isoformat()})"
            )
        return PredictionFile(self.source, timestamps, self.action[pos],
                              None if self.logits is None else self.logits[pos])


def load_predictions(path: str | os.PathLike) -> PredictionFile:
    """Read a predictions file: ``timestamp`` and either the three logit columns or ``action``.

    ``flagcore predict`` and ``flagcore walk-forward`` write such files; any other model's output
    in this shape works as an ensemble partner. Validated like a dataset.
    """
    p = Path(path)
    df, _ = _read_table(p)
    if len(df) == 0:
        raise FlagcoreError(f"{p}: has a header but no rows")
    ts = _timestamps(df, p)
    logits = None
    if all(c in df.columns for c in LOGIT_COLUMNS):
        logits = np.stack([_numeric(df, c, p) for c in LOGIT_COLUMNS], axis=1)
        for j, c in enumerate(LOGIT_COLUMNS):
            _finite(logits[:, j], c, p, ts)
        logits = logits.astype(np.float32)
        action = logits.argmax(1).astype(np.int8)
    elif "action" in df.columns:
        action = _labels(df, p, column="action")
        if (action == UNLABELLED).any():
            i = int(np.argmax(action == UNLABELLED))
            raise FlagcoreError(f"{p}: column 'action' is empty at {_row(i)}")
    else:
        present = [c for c in LOGIT_COLUMNS if c in df.columns]
        missing = [c for c in LOGIT_COLUMNS if c not in df.columns]
        hint = f" (has {', '.join(present)} but not {missing[0]!r})" if present else ""
        raise FlagcoreError(f"{p}: needs an 'action' column or the columns {', '.join(LOGIT_COLUMNS)}{hint}")
    return PredictionFile(str(p), ts, action, logits)
