"""Walk-forward learning: predict a block of bars, fine-tune on the labels resolved by then, repeat.

``walk_forward`` gives every bar of a test period a prediction from a model that has seen only
labels resolved before that bar; ``write_predictions`` writes those predictions as a file that
``flagcore evaluate --retrained walk_forward=...`` reads.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from flagcore.data.dataset import Dataset, write_dataset
from flagcore.errors import FlagcoreError
from flagcore.models.flag_trader import base_network
from flagcore.models.inference import from_logits, predict, predictions_frame
from flagcore.training.loop import TrainConfig, loss_total, run_epoch, usable_ends
from flagcore.training.losses import make_loss
from flagcore.vocab import N_CLASSES

ModelT = TypeVar("ModelT", bound=torch.nn.Module)  # the final model is a copy of the starting one


def walk_forward(
    model: ModelT,
    ds: Dataset,
    *,
    every: int = 720,
    recent: int = 2000,
    epochs: int = 2,
    cfg: TrainConfig | None = None,
    on_block: Callable[[dict], None] | None = None,
) -> tuple[np.ndarray, ModelT, list[dict]]:
    """Online learning over the evaluation period of ``ds``; returns its logits (n_eval, 3).

    Bars are predicted in blocks of ``every``; after each block the model is fine-tuned on the
    ``recent`` latest bars whose labels had resolved by the block's last bar (a label at t needs
    bars up to t + h, so only t <= end - 1 - h qualify: no look-ahead), then predicts the next
    block. The starting model is not changed. ``cfg`` sets the fine-tuning loss (default the
    class-weighted cross-entropy of remedy 1, weights from the recent bars).

    Returns
    -------
    (logits, final model, log) : the evaluation period's logits, the model after the last
    fine-tuning, and one row per block.
    """
    if not 500 <= every <= 1000 and every != ds.n_bars:
        raise FlagcoreError(f"walk-forward step must lie in [500, 1000] bars, got {every}")
    if ds.labels is None:
        raise FlagcoreError(f"{ds.source}: walk-forward learning needs labels")
    cfg = cfg or TrainConfig(loss="weighted", lr=5e-4)
    h = ds.label_horizon or 0
    current = copy.deepcopy(model)
    W = base_network(current).config.window
    E, n = ds.eval_index, ds.n_bars
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    logits = np.empty((n - E, N_CLASSES), dtype=np.float32)
    log: list[dict] = []
    for start in range(E, n, every):
        stop = min(start + every, n)
        lo = max(0, start - W + 1)
        logits[start - E : stop - E] = predict(current, ds.features[lo:stop]).logits[start - lo :]
        if stop == n:
            break
        resolved_until = stop - 1 - h  # labels of bars <= this are known at the close of bar stop-1
        ends = usable_ends(ds, W, max(0, resolved_until + 1 - recent), resolved_until + 1)
        row = {
            "block_start": ds.timestamps[start].isoformat(),
            "bars": stop - start,
            "fine_tune_bars": int(len(ends)),
        }
        if len(ends) >= cfg.batch_size:
            loss = _fine_tune(current, ds, ends, W, epochs, cfg, rng)
            if loss is not None:
                row["fine_tune_loss"] = loss
        log.append(row)
        if on_block:
            on_block(row)
    return logits, current.eval(), log


def _fine_tune(
    model: torch.nn.Module,
    ds: Dataset,
    ends: np.ndarray,
    W: int,
    epochs: int,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> float | None:
    """Fine-tune ``model`` in place on the windows ending at ``ends``; its mean step loss.

    None (and no training) when a class is absent from those labels.
    """
    assert ds.labels is not None
    shares = np.bincount(ds.labels[ends], minlength=N_CLASSES) / len(ends)
    if not (shares > 0).all():
        return None
    X = torch.as_tensor(ds.features)
    y_all = torch.as_tensor(ds.labels.astype(np.int64))
    loss_fn, _, _ = make_loss(base_network(model), cfg, y_all, shares, None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    for _ in range(epochs):
        losses += run_epoch(model, opt, loss_fn, X, rng.permutation(ends), W, cfg.batch_size)
    model.eval()
    return loss_total(losses) / max(len(losses), 1)


def write_predictions(
    ds: Dataset,
    logits: np.ndarray,
    window: int,
    path: str | os.PathLike,
    **metadata,
) -> Path:
    """Write walk-forward predictions of ``ds``'s evaluation period as a file, atomically.

    Parameters
    ----------
    ds : the dataset ``walk_forward`` ran over.
    logits : (n_eval, 3) its logits, one row per bar from ``ds.eval_index`` on.
    window : the model's window (recorded with the predictions).
    path : the file (``.parquet`` keeps ``metadata``); its folders are made if needed. A temporary
        file beside it is written first, then moved into place: a crash leaves the old file or none.
    **metadata : stored in the Parquet file's flagcore metadata (e.g. ``walk_forward={...}``).

    Returns
    -------
    Path : the file written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pred = from_logits(logits, np.zeros(len(logits), bool), window)
    frame = predictions_frame(ds.timestamps[ds.eval_index :], pred)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=p.suffix)
    os.close(fd)
    try:
        write_dataset(frame, tmp, **metadata)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p
