"""Prediction files: another model's per-bar output, read like a dataset.

``flagcore predict`` and ``flagcore walk-forward`` write such files (``timestamp`` and the three
logit columns, or ``action``); any other model's output in this shape works as an ensemble partner.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flagcore.data.tables import (
    numeric_column,
    parse_labels,
    parse_timestamps,
    read_table,
    require_finite,
    row_name,
)
from flagcore.errors import FlagcoreError
from flagcore.vocab import LOGIT_COLUMNS, UNLABELLED


@dataclass
class PredictionFile:
    """Another model's per-bar predictions: an ensemble partner or a retrained model's output."""

    source: str
    timestamps: pd.DatetimeIndex
    action: np.ndarray  # (n,) int8 class ids
    logits: np.ndarray | None  # (n, 3) float32 when the file has them

    def align(self, timestamps: pd.DatetimeIndex) -> PredictionFile:
        """The rows for exactly these bars; refuses a file that misses any of them."""
        pos = self.timestamps.get_indexer(timestamps)
        if (pos < 0).any():
            i = int(np.argmax(pos < 0))
            raise FlagcoreError(
                f"{self.source}: no prediction for bar {timestamps[i].isoformat()} "
                f"({int((pos < 0).sum())} of {len(timestamps)} bars missing; the file covers "
                f"{self.timestamps[0].isoformat()} to {self.timestamps[-1].isoformat()})"
            )
        return PredictionFile(
            self.source, timestamps, self.action[pos], None if self.logits is None else self.logits[pos]
        )


def load_predictions(path: str | os.PathLike) -> PredictionFile:
    """Read a predictions file: ``timestamp`` and either the three logit columns or ``action``.

    Parameters
    ----------
    path : CSV or Parquet file, validated like a dataset.

    Returns
    -------
    PredictionFile : the actions, and the logits when the file has them (actions are their argmax).
    """
    p = Path(path)
    df, _ = read_table(p)
    if len(df) == 0:
        raise FlagcoreError(f"{p}: has a header but no rows")
    ts = parse_timestamps(df, p)
    logits = None
    if all(c in df.columns for c in LOGIT_COLUMNS):
        logits = np.stack([numeric_column(df, c, p) for c in LOGIT_COLUMNS], axis=1)
        for j, c in enumerate(LOGIT_COLUMNS):
            require_finite(logits[:, j], c, p, ts)
        logits = logits.astype(np.float32)
        action = logits.argmax(1).astype(np.int8)
    elif "action" in df.columns:
        action = parse_labels(df, p, column="action")
        if (action == UNLABELLED).any():
            i = int(np.argmax(action == UNLABELLED))
            raise FlagcoreError(f"{p}: column 'action' is empty at {row_name(i)}")
    else:
        present = [c for c in LOGIT_COLUMNS if c in df.columns]
        missing = [c for c in LOGIT_COLUMNS if c not in df.columns]
        hint = f" (has {', '.join(present)} but not {missing[0]!r})" if present else ""
        raise FlagcoreError(f"{p}: needs an 'action' column or the columns {', '.join(LOGIT_COLUMNS)}{hint}")
    return PredictionFile(str(p), ts, action, logits)
