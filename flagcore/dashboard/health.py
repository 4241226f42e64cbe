"""The dashboard's load-and-forward check: re-run a checkpoint on the last bars of its run."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from flagcore.errors import FlagcoreError
from flagcore.vocab import LOGIT_COLUMNS


def forward_check(model, dataset_path, stored: pd.DataFrame, bars: int = 64, atol: float = 1e-4) -> dict:
    """Predict the last ``bars`` evaluated bars again and compare with the stored logits.

    ``stored`` is the run's baseline predictions (columns bar, logit_sell, logit_hold, logit_buy).
    The windows get their full history from the dataset, as in the run.
    """
    import torch  # here, not at the top: the page that offers the check must not wait for torch

    from flagcore.data.dataset import load_dataset
    from flagcore.models.inference import predict

    ds = load_dataset(dataset_path, state_dim=model.checkpoint_info.config.state_dim)
    e, n = ds.eval_index, ds.n_bars
    if n - e != len(stored):
        raise FlagcoreError(f"{dataset_path}: {n - e} evaluated bars, the run stored {len(stored)}")
    W = model.checkpoint_info.config.window
    k = min(bars, n - e)
    lo = max(0, n - k - W + 1)
    t0 = time.perf_counter()
    with torch.inference_mode():
        pred = predict(model, ds.features[lo:n])
    seconds = time.perf_counter() - t0
    got = pred.logits[-k:].astype(np.float64)
    want = stored[list(LOGIT_COLUMNS)].to_numpy(np.float64)[-k:]
    diff = float(np.abs(got - want).max())
    return {"bars": int(k), "max_abs_diff": diff, "ok": bool(diff <= atol), "seconds": seconds}
