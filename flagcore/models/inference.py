"""Batched sliding-window inference: one prediction per bar.

Bar t is predicted from the window of bars t-W+1 .. t (W = the model's ``window``) and the action
is read at the window's last position, as the reviewed code does. A bar with fewer than W bars of
history (the first W-1 bars of a dataset) is predicted from all the history it has, a shorter
window starting at position 0, and flagged in ``short_history`` so that analyses can leave it
out; prepend history to the file to avoid it. The short windows run together, right-padded and
masked (``FlagTrader.padded_last_logits``): the same logits as one by one, up to float rounding.

LoRA is merged into the base weights for inference (one matmul per Linear). ``precision="int8"``
runs the blocks' Linear layers as int8 products (``int8.Int8FlagTrader``: per-channel weights,
dynamically quantised activations, q/k/v fused; CPU only), its batches side by side on worker
threads of one torch thread each, over twice as fast as float32 on an AVX2 CPU;
``pipeline.inference_cache`` measures its agreement with float32.
Inference keeps the memory a batch frees for the next one (``malloc.keep_freed_memory``).
Results are deterministic: the same weights, inputs, window, precision and batch size give the
same bits on one device; int8's bits do not depend on the number of torch threads either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from flagcore.errors import FlagcoreError
from flagcore.models.flag_trader import FlagTrader, base_network, merged_copy
from flagcore.models.int8 import Int8FlagTrader
from flagcore.models.malloc import keep_freed_memory
from flagcore.vocab import CLASS_NAMES, LOGIT_COLUMNS, N_CLASSES, PRECISIONS

# the probability columns of a predictions file (``predictions_frame``)
PROBABILITY_COLUMNS = tuple(f"prob_{c.lower()}" for c in CLASS_NAMES)

# windows per batch by precision. fp32: 256, as always (its bits must not change). int8: 16, each
# batch on a worker thread of one torch thread (``in_order``: 16 beat 8 and 32 there by 10%). The
# activations' quantisation scale is the batch's, so the batch is part of int8's numbers (changing it:
# raise the version in pipeline.inference_cache.INT8_SETTINGS). Small batches keep the (B*T, 3072)
# activations in cache: the previous int8 path ran fastest at 8 on a quiet 2-core AVX2 EPYC (24.4
# windows/s against 15-19 at 64-128); with q/k/v fused, 16 and 32 beat 8 by 5-8% on one thread
# under load. Rerun benchmarks/precision.py to check on another CPU.
BATCH_SIZE = {"fp32": 256, "int8": 16}
# short windows per batch at most: each batch is padded to its longest window, so batches of 16
# windows of neighbouring lengths do 2,481 positions' work for the 64-bar window's 63 short
# windows where one batch of 63 would do 3,969 (one by one: 2,016, in 63 small calls)
SHORT_BATCH = 16


def in_order(run: Callable[[int], torch.Tensor], n_jobs: int, threads: int) -> Iterator[torch.Tensor]:
    """run(0), run(1), ... run(n_jobs - 1), yielded in that order.

    With ``threads`` > 1 the jobs run side by side on that many worker threads of one torch thread
    each (torch's operators release the GIL), and the caller's torch thread count is restored after.
    int8 batches run so: small int8 products keep one core busy better than two cores share one
    (25 against 18 windows/s for the `full` preset on 2 AVX2 cores), and every batch then runs on
    one torch thread whatever the machine's core count, so its bits do not depend on it.
    """
    if threads <= 1 or n_jobs <= 1:
        yield from (run(i) for i in range(n_jobs))
        return

    def job(i: int) -> torch.Tensor:
        with torch.inference_mode():  # a thread-local mode: the workers enter it themselves
            return run(i)

    caller = torch.get_num_threads()
    pool = ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,))
    try:
        yield from pool.map(job, range(n_jobs))
    finally:
        # a caller that stops early (an error, a cancelled run) does not wait for the batches left
        pool.shutdown(wait=True, cancel_futures=True)
        # torch.set_num_threads also sets the count a thread started later begins with: restore it
        torch.set_num_threads(caller)


def worker_threads(precision: str) -> int:
    """Threads that run ``precision``'s batches side by side (``in_order``): int8's, one per torch
    thread; float32's, one (its batches use every torch thread, and its bits must not change)."""
    return torch.get_num_threads() if precision == "int8" else 1


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


def check_precision(precision: str, device=None, dtype: torch.dtype = torch.float32) -> None:
    """Raise a one-line FlagcoreError unless ``precision`` can run on ``device`` with ``dtype``."""
    if precision not in PRECISIONS:
        raise FlagcoreError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        if device is not None and torch.device(device).type != "cpu":
            raise FlagcoreError(
                f"precision 'int8' runs on the CPU only, not on device {str(device)!r}: "
                "on a GPU use precision 'fp32' (bf16 through dtype)"
            )
        if dtype != torch.float32:
            raise FlagcoreError(f"precision 'int8' takes float32 inputs, not dtype {dtype}")


def _prepared(model: torch.nn.Module, precision: str, device, dtype: torch.dtype):
    """The merged network on its device, quantised for int8, and the device."""
    check_precision(precision, device, dtype)
    # the batches' activations reused in place of fresh pages each batch (a quarter of int8's time)
    keep_freed_memory()
    if precision == "int8":
        device = "cpu"
    net = merged_copy(model)  # a copy: the caller's model keeps its device, dtype and mode
    dev = pick_device(device)
    net = net.to(device=dev, dtype=dtype)
    if precision == "int8":
        q = Int8FlagTrader(net)
        # the copy's float32 blocks are not read again (350 MB for `full`): free them for the run
        net.transformer_blocks = torch.nn.ModuleList()
        return q, dev
    return net, dev


def _short_logits(
    net: FlagTrader | Int8FlagTrader, xs: torch.Tensor, ends: list[int], batch_size: int, threads: int
) -> torch.Tensor:
    """Logits (len(ends), action_dim) of the short windows xs[0 : t+1] for each t in ``ends``,
    right-padded and masked in batches (``FlagTrader.padded_last_logits``) run ``in_order``."""
    chunks = [ends[s : s + batch_size] for s in range(0, len(ends), batch_size)]

    def run(i: int) -> torch.Tensor:
        chunk = chunks[i]
        T = max(chunk) + 1
        batch = xs.new_zeros((len(chunk), T, xs.shape[1]))  # (b, T, state_dim), zeros after each window
        for b, t in enumerate(chunk):
            batch[b, : t + 1] = xs[: t + 1]
        lengths = torch.tensor([t + 1 for t in chunk], device=xs.device)
        return net.padded_last_logits(batch, lengths).float().cpu()

    out = list(in_order(run, len(chunks), threads))
    return torch.cat(out) if out else torch.empty((0, net.config.action_dim))


def _checked(model: torch.nn.Module, features: np.ndarray, window: int | None, batch_size: int | None):
    cfg = base_network(model).config
    W = window or cfg.window
    if not 1 <= W <= cfg.max_length:
        raise FlagcoreError(f"window {W} must lie in [1, max_length={cfg.max_length}]")
    if batch_size is not None and batch_size < 1:
        raise FlagcoreError(f"batch_size must be >= 1, got {batch_size}")
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[1] != cfg.state_dim:
        raise FlagcoreError(f"features of shape {x.shape} do not fit the model's state_dim {cfg.state_dim}")
    if not np.isfinite(x).all():
        raise FlagcoreError("features hold NaN or infinite values")
    if x.shape[0] == 0:
        raise FlagcoreError("no bars to predict")
    return x, W


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    features: np.ndarray,
    *,
    window: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    precision: str = "fp32",
    progress: Callable[[int, int], None] | None = None,
) -> Predictions:
    """Logits, probabilities, action and confidence for every bar of ``features`` (n, state_dim).

    ``precision`` "fp32" (``dtype`` on any device) or "int8": the blocks' Linear layers
    as int8 products (``int8.Int8FlagTrader``), on the CPU only. ``batch_size`` defaults to
    ``BATCH_SIZE[precision]``. ``progress(done, total)`` is called after each batch with bars
    done so far.
    """
    x, W = _checked(model, features, window, batch_size)
    bs = batch_size or BATCH_SIZE.get(precision, BATCH_SIZE["fp32"])
    net, dev = _prepared(model, precision, device, dtype)
    n = x.shape[0]
    xs = torch.as_tensor(x, dtype=dtype).to(dev)  # (n, state_dim)
    out = torch.empty((n, net.config.action_dim), dtype=torch.float32)
    short = np.zeros(n, dtype=bool)

    # bars 0 .. W-2: all the history they have, right-padded to one length and masked
    n_short = min(W - 1, n)
    threads = worker_threads(precision)
    out[:n_short] = _short_logits(net, xs, list(range(n_short)), min(bs, SHORT_BATCH), threads)
    short[:n_short] = True
    if progress and n_short:
        progress(n_short, n)

    if n >= W:
        windows = xs.unfold(0, W, 1).transpose(1, 2)  # (n-W+1, W, state_dim), a view
        starts = range(0, windows.shape[0], bs)

        def run(i: int) -> torch.Tensor:
            return net.last_logits(windows[starts[i] : starts[i] + bs]).float().cpu()

        for s, batch_logits in zip(starts, in_order(run, len(starts), threads), strict=True):
            out[W - 1 + s : W - 1 + s + len(batch_logits)] = batch_logits
            if progress:
                progress(W - 1 + s + len(batch_logits), n)
    return from_logits(out.numpy(), short, W)


@torch.inference_mode()
def predict_bars(
    model: torch.nn.Module,
    features: np.ndarray,
    bars: np.ndarray,
    *,
    window: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Logits (len(bars), 3) of the given bars only, each from its window as ``predict`` reads it
    (a sample to check another precision against, a payoff sample's blocks). ``progress(done,
    total)`` is called after the short windows and after each batch, with bars done so far."""
    x, W = _checked(model, features, window, batch_size)
    idx = np.asarray(bars, dtype=np.int64)
    if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= len(x))):
        raise FlagcoreError(f"bars must be indices in [0, {len(x)})")
    bs = batch_size or BATCH_SIZE.get(precision, BATCH_SIZE["fp32"])
    net, dev = _prepared(model, precision, device, torch.float32)
    xs = torch.as_tensor(x, dtype=torch.float32).to(dev)  # (n, state_dim)
    out = torch.empty((len(idx), net.config.action_dim), dtype=torch.float32)
    is_short = idx < W - 1
    threads = worker_threads(precision)
    short_ends = idx[is_short].tolist()
    out[torch.from_numpy(is_short)] = _short_logits(net, xs, short_ends, min(bs, SHORT_BATCH), threads)
    if progress and short_ends:
        progress(len(short_ends), len(idx))
    full = idx[~is_short]
    rows = np.flatnonzero(~is_short)

    def run(i: int) -> torch.Tensor:
        starts = torch.as_tensor(full[i * bs : (i + 1) * bs] - W + 1, device=dev)  # (b,)
        batch = xs[starts[:, None] + torch.arange(W, device=dev)]  # (b, W, state_dim)
        return net.last_logits(batch).float().cpu()

    for i, batch_logits in enumerate(in_order(run, -(-len(full) // bs), threads)):
        out[torch.from_numpy(rows[i * bs : (i + 1) * bs])] = batch_logits
        if progress:
            progress(len(short_ends) + min((i + 1) * bs, len(full)), len(idx))
    return out.numpy()


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
