"""Reading tables: the prologue every flagcore file reader shares.

A CSV or Parquet file becomes a DataFrame (``read_table``), then its columns become checked
arrays: numbers (``numeric_column``, ``require_finite``), timestamps (``parse_timestamps``) and
class labels (``parse_labels``). Every refusal is one line that names the file, the column and
the first bad row; rows count from 1 for the first data row (in a CSV that is line 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from flagcore.errors import FlagcoreError
from flagcore.vocab import LABEL_CODES, UNLABELLED

TIMESTAMP = "timestamp"
METADATA_KEY = b"flagcore"  # the Parquet schema metadata key of flagcore's own metadata
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: Path) -> tuple[pd.DataFrame, dict]:
    """The file as a DataFrame of strings/numbers, and flagcore's Parquet metadata if any.

    Parameters
    ----------
    path : a ``.csv`` (also ``.txt``, ``.gz`` or no suffix) or ``.parquet`` file.

    Returns
    -------
    (frame, metadata) : a CSV's cells are strings; the metadata is ``{}`` without any.
    """
    if not path.exists():
        raise FlagcoreError(f"{path}: no such file")
    if path.is_dir():
        raise FlagcoreError(f"{path}: is a folder, expected a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise FlagcoreError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    meta: dict = {}
    if suffix in PARQUET_SUFFIXES:
        df, meta = _read_parquet(path)
    elif suffix in (".csv", ".txt", ".gz") or suffix == "":
        df = _read_csv(path)
    else:
        raise FlagcoreError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    df.columns = [str(c).strip() for c in df.columns]
    dupes = df.columns[df.columns.duplicated()].tolist()
    if dupes:
        raise FlagcoreError(f"{path}: column {dupes[0]!r} appears more than once")
    return df, meta


def _read_parquet(path: Path) -> tuple[pd.DataFrame, dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        raise FlagcoreError(f"{path}: not a readable Parquet file ({first_line(e)})") from None
    meta: dict = {}
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw:
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError:
            raise FlagcoreError(f"{path}: flagcore metadata in the Parquet file is damaged") from None
    return table.to_pandas(), meta


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FlagcoreError(
            f"{path}: not UTF-8 text at byte {e.start} (binary file or another encoding?)"
        ) from None
    except pd.errors.EmptyDataError:
        raise FlagcoreError(f"{path}: the file has no header and no rows") from None
    except pd.errors.ParserError as e:
        raise FlagcoreError(f"{path}: not a well-formed CSV ({first_line(e)})") from None
    if "\x00" in "".join(df.columns.astype(str)):
        raise FlagcoreError(f"{path}: binary data where a CSV header was expected")
    return df


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:200]


def row_name(i: int) -> str:
    """How an error names the data row at index ``i``: "row 1" is the first."""
    return f"row {i + 1}"


def numeric_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """Column ``col`` as float64; empty or NaN-like text becomes NaN, other text is refused."""
    s = df[col]
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        text = s.astype(str).str.strip()
        values = pd.to_numeric(text.where(text != "", "nan"), errors="coerce")
        bad = values.isna() & ~text.str.lower().isin(["", "nan", "na", "null", "none"])
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise FlagcoreError(
                f"{path}: column {col!r} has a non-numeric value {text.iloc[i]!r} at {row_name(i)}"
            )
        out = values.to_numpy(dtype=np.float64)
    elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        out = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        raise FlagcoreError(f"{path}: column {col!r} has type {s.dtype}, expected numbers")
    return out


def require_finite(values: np.ndarray, col: str, path: Path, ts: pd.DatetimeIndex | None) -> None:
    """Refuse NaN or infinite ``values``, naming the first bad row (and its timestamp if given)."""
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        what = "NaN (missing)" if np.isnan(values[i]) else "an infinite value"
        when = f" (timestamp {ts[i].isoformat()})" if ts is not None else ""
        raise FlagcoreError(f"{path}: column {col!r} has {what} at {row_name(i)}{when}")


def parse_timestamps(df: pd.DataFrame, path: Path) -> pd.DatetimeIndex:
    """The ``timestamp`` column as a UTC index; refuses unreadable, empty, repeated or unordered times."""
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
            raise FlagcoreError(
                f"{path}: column 'timestamp' has an unreadable date {text.iloc[i]!r} at {row_name(i)}"
            )
    if ts.isna().any():
        i = int(np.argmax(ts.isna().to_numpy()))
        raise FlagcoreError(f"{path}: column 'timestamp' is empty at {row_name(i)}")
    index = pd.DatetimeIndex(ts).as_unit("ns")
    _require_increasing(index, path)
    return index


def _require_increasing(index: pd.DatetimeIndex, path: Path) -> None:
    step = np.diff(index.asi8)
    if (step == 0).any():
        i = int(np.argmax(step == 0)) + 1
        raise FlagcoreError(f"{path}: duplicated timestamp {index[i].isoformat()} at {row_name(i)}")
    if (step < 0).any():
        i = int(np.argmax(step < 0)) + 1
        raise FlagcoreError(
            f"{path}: timestamps are not increasing: {index[i].isoformat()} at {row_name(i)} "
            f"comes after {index[i - 1].isoformat()}"
        )


def parse_labels(df: pd.DataFrame, path: Path, column: str) -> np.ndarray:
    """Class ids (int8) of a SELL/HOLD/BUY or -1/0/1 column; ``UNLABELLED`` where a cell is empty."""
    s = df[column]
    text = s.astype(str).str.strip().str.upper()
    # numeric labels read from Parquet as floats: 1.0 -> "1", -1.0 -> "-1"
    text = text.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)
    missing = s.isna().to_numpy() | text.isin(["", "NAN", "NONE", "NA", "<NA>"]).to_numpy()
    codes = text.map(LABEL_CODES)
    bad = codes.isna().to_numpy() & ~missing
    if bad.any():
        i = int(np.argmax(bad))
        raise FlagcoreError(
            f"{path}: column {column!r} has unknown label {s.iloc[i]!r} at {row_name(i)}; "
            "use SELL/HOLD/BUY or -1/0/1"
        )
    return np.where(missing, UNLABELLED, codes.fillna(UNLABELLED).to_numpy()).astype(np.int8)


def to_utc(value, name: str) -> pd.Timestamp:
    """``value`` as a UTC timestamp (a naive one is taken as UTC); ``name`` says what it is in errors."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise FlagcoreError(f"{name}: unreadable date {value!r}") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
