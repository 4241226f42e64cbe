"""How values enter and leave the store's JSON columns, and the timestamps the store writes.

``to_json`` turns numpy scalars and arrays, timestamps and paths into plain JSON and writes NaN and
infinity as null (JSON has neither); ``from_json`` reads a column back (SQL NULL stays None).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC: what every ``created_at`` column holds."""
    return datetime.now(UTC)


def _default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (pd.Timestamp, datetime)):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        return _clean(o.item())
    return o


def to_json(value: Any) -> str:
    """JSON text of ``value`` for a JSON column.

    Parameters
    ----------
    value : object
        Dicts, lists, tuples, numbers, strings, numpy scalars and arrays, timestamps and paths.

    Returns
    -------
    str
        JSON with numpy values converted; NaN and infinity become null (JSON has neither).
    """
    return json.dumps(_clean(value), default=_default)


def from_json(value: str | None) -> Any:
    """A JSON column's value read back; SQL NULL (None) stays None."""
    return None if value is None else json.loads(value)
