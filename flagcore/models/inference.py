"""Batched sliding-window inference: one prediction per bar.

Bar t is predicted from the window of bars t-W+1 .. t (W = the model's ``window``) and the action
is read at the window's last position, as the reviewed code does. A bar with fewer than W bars of
history (the first W-1 bars of a dataset) is predicted from all the history it has, a shorter
window starting at position 0, and flagged in ``short_history`` so that analyses can leave it
out; prepend history to the file to avoid it.

LoRA is merged into the base weights for inference (one matmul per Linear). Results are
deterministic: the same weights, inputs, window and batch size give the same bits on one device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from flagcore.errors import FlagcoreError
from flagcore.models.flag_trader import base_network, merged_copy
from flagcore.vocab import CLASS_NAMES, LOGIT_COLUMNS, N_CLASSES

# the probability columns of a predictions file (``predictions_frame``)
PROBABILITY_COLUMNS = tuple(f"prob_{c.lower()}" for c in CLASS_NAMES)


@dataclass
class Predictions:
    logits: np.ndarray  # (n, 3) float32, at the last position of each bar's window
    probs: np.ndarray  # (n, 3) float32, softmax of logits
    action: np.ndarray  # (n,) int8 argmax: 0 SELL, 1 HOLD, 2 BUY
    confidence: np.ndarray  # (n,) float32, probability of the chosen action
    short_history: np.ndarray  # (n,) bool, predicted from fewer than `window` bars
    window: int

    def __len__(self) -> int:
        return len(self.action)

    def since(self, start: int) -> Predictions:
        """The predictions from bar ``start`` on (for example a dataset's evaluation period)."""
        return Predictions(
            self.logits[start:],
            self.probs[start:],
            self.action[start:],
            self.confidence[start:],
            self.short_history[start:],
            self.window,
        )


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise FlagcoreError(f"device {device!r} requested but no CUDA GPU is available")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def from_logits(logits: np.ndarray, short_history: np.ndarray, window: int) -> Predictions:
    logits = np.asarray(logits, dtype=np.float32)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    action = logits.argmax(axis=1).astype(np.int8)
    confidence = np.take_along_axis(probs, action[:, None].astype(np.int64), axis=1)[:, 0]
    return Predictions(
        logits,
        probs.astype(np.float32),
        action,
        confidence.astype(np.float32),
        np.asarray(short_history, bool),
        window,
    )


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    features: np.ndarray,
    *,
    window: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int, int], None] | None = None,
) -> Predictions:
    """Logits, probabilities, action and confidence for every bar of ``features`` (n, state_dim).

    ``progress(done, total)`` is called after each batch with bars done so far.
    """
    net = merged_copy(model)  # a copy: the caller's model keeps its device, dtype and mode
    cfg = base_network(net).config
    W = window or cfg.window
    if not 1 <= W <= cfg.max_length:
        raise FlagcoreError(f"window {W} must lie in [1, max_length={cfg.max_length}]")
    if batch_size < 1:
        raise FlagcoreError(f"batch_size must be >= 1, got {batch_size}")
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[1] != cfg.state_dim:
        raise FlagcoreError(f"features of shape {x.shape} do not fit the model's state_dim {cfg.state_dim}")
    if not np.isfinite(x).all():
        raise FlagcoreError("features hold NaN or infinite values")
    n = x.shape[0]
    if n == 0:
        raise FlagcoreError("no bars to predict")
    dev = pick_device(device)
    net = net.to(device=dev, dtype=dtype)
    xs = torch.as_tensor(x, dtype=dtype).to(dev)  # (n, state_dim)
    out = torch.empty((n, cfg.action_dim), dtype=torch.float32)
    short = np.zeros(n, dtype=bool)
    done = 0

    # bars 0 .. W-2: all the history they have, one window each
    for t in range(min(W - 1, n)):
        out[t] = net.last_logits(xs[None, : t + 1])[0].float().cpu()
        short[t] = True
    done = min(W - 1, n)
    if progress and done:
        progress(done, n)

    if n >= W:
        windows = xs.unfold(0, W, 1).transpose(1, 2)  # (n-W+1, W, state_dim), a view
        for s in range(0, windows.shape[0], batch_size):
            batch = windows[s : s + batch_size]
            out[W - 1 + s : W - 1 + s + batch.shape[0]] = net.last_logits(batch).float().cpu()
            done = W - 1 + s + batch.shape[0]
            if progress:
                progress(done, n)
    return from_logits(out.numpy(), short, W)


def predictions_frame(timestamps, pred: Predictions):
    """A table with one row per bar: timestamp, logits, probabilities, action, confidence."""
    import pandas as pd

    out = pd.DataFrame({"timestamp": timestamps})
    for j, col in enumerate(LOGIT_COLUMNS):
        out[col] = pred.logits[:, j]
    for j, col in enumerate(PROBABILITY_COLUMNS):
        out[col] = pred.probs[:, j]
    out["action"] = np.asarray(CLASS_NAMES)[pred.action]
    out["confidence"] = pred.confidence
    out["short_history"] = pred.short_history
    return out


def action_summary(pred: Predictions, labels: np.ndarray | None = None) -> dict:
    """Counts and shares of each action, confidence statistics, and accuracy where labels exist."""
    n = len(pred)
    counts = np.bincount(pred.action, minlength=N_CLASSES)
    out = {
        "bars": n,
        "action_counts": {c: int(counts[j]) for j, c in enumerate(CLASS_NAMES)},
        "action_shares": {c: float(counts[j] / n) for j, c in enumerate(CLASS_NAMES)},
        "confidence": {
            "mean": float(pred.confidence.mean()),
            "min": float(pred.confidence.min()),
            "max": float(pred.confidence.max()),
        },
    }
    if labels is not None:
        ok = labels >= 0
        if ok.any():
            out["accuracy"] = float((pred.action[ok] == labels[ok]).mean())
            out["labelled_bars"] = int(ok.sum())
    return out
