"""What a FLAG-TRADER's decision rests on: logits of prepared windows, and integrated gradients.

``bar_windows`` cuts the window of each chosen bar out of a feature matrix (bar t reads bars
t-W+1 .. t, as ``inference.predict`` does); ``window_logits`` infers prepared windows, and
``counterfactual_logits`` infers them after a fill (padded inputs filled, shifted inputs mapped:
``pipeline.explain_inputs``) so that a counterfactual and its reference go through the same code.

Integrated gradients (Sundararajan, Taly & Yan 2017), computed with captum's
``IntegratedGradients``, attribute the **logit gap** of each window's decision, never a
probability: the softmax of a saturated model (the seed's 99%) has vanishing gradients.

    predicted SELL or BUY:  gap = logit_pred - logit_HOLD
    predicted HOLD:         gap = logit_HOLD - logit_c,  c = the larger of SELL and BUY at the input

The pair of classes is fixed per window at the input (not re-chosen along the path), so the gap
is one smooth function of the window and completeness holds: the attributions of a window sum
to gap(x) - gap(baseline) up to the integral's error, which captum returns as the convergence
delta. The baseline window is the training period's per-feature medians at every bar.

    windows (B, W, D) --IG over n_steps points--> attributions (B, W, D) -> sum over time (B, D)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from flagcore.errors import FlagcoreError
from flagcore.models.flag_trader import FlagTrader, merged_copy
from flagcore.models.inference import pick_device
from flagcore.vocab import HOLD, N_CLASSES

IG_STEPS = 16  # Gauss-Legendre points: the gap is smooth; relative completeness error ~1e-6 here
IG_BATCH = 32  # windows per captum call; each call runs IG_BATCH x n_steps windows forward and back

Fill = Callable[[np.ndarray], np.ndarray]  # windows (B, W, D) -> windows of the same shape


def inference_network(model: torch.nn.Module) -> FlagTrader:
    """A frozen, eval-mode plain network for ``model``: LoRA merged in a copy (``merged_copy``).

    A plain ``FlagTrader`` whose parameters are already frozen is returned as it is, so that a
    caller (the dashboard's cached model) merges once and infers many times.
    """
    if isinstance(model, FlagTrader) and not any(p.requires_grad for p in model.parameters()):
        return model.eval()
    return merged_copy(model)


def bar_windows(features: np.ndarray, bars: np.ndarray, window: int) -> np.ndarray:
    """The window of each bar in ``bars``: rows t-W+1 .. t of ``features``, (len(bars), W, D).

    Parameters
    ----------
    features : np.ndarray, shape (n, D)
        A dataset's model inputs, in time order.
    bars : np.ndarray of int, shape (m,)
        Row indices; each needs a full window of history (t >= W - 1).
    window : int
        W, the model's window.
    """
    x = np.asarray(features, dtype=np.float32)
    idx = np.asarray(bars, dtype=np.int64)
    if x.ndim != 2:
        raise FlagcoreError(f"features must be a (bars, inputs) matrix, got shape {x.shape}")
    if window < 1:
        raise FlagcoreError(f"window must be >= 1, got {window}")
    if idx.size and (idx.min() < window - 1 or idx.max() >= len(x)):
        bad = int(idx[(idx < window - 1) | (idx >= len(x))][0])
        raise FlagcoreError(f"bar {bad} has no full window of {window} bars in {len(x)} rows")
    offsets = np.arange(-window + 1, 1)  # (W,)
    return x[idx[:, None] + offsets[None, :]]  # (m, W, D)


@torch.no_grad()
def window_logits(
    model: torch.nn.Module,
    windows: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Logits at the last position of each window, (B, 3) float64.

    ``model`` is a checkpoint's model (merged into a copy here) or an ``inference_network``.
    """
    if batch_size < 1:
        raise FlagcoreError(f"batch_size must be >= 1, got {batch_size}")
    net = inference_network(model)
    cfg = net.config
    x = np.asarray(windows, dtype=np.float32)
    if x.ndim != 3 or x.shape[2] != cfg.state_dim:
        raise FlagcoreError(f"windows of shape {x.shape} do not fit the model's state_dim {cfg.state_dim}")
    if not np.isfinite(x).all():
        raise FlagcoreError("windows hold NaN or infinite values")
    dev = pick_device(device)
    net = net.to(dev)
    out = np.empty((len(x), N_CLASSES), dtype=np.float64)
    for s in range(0, len(x), batch_size):
        batch = torch.tensor(x[s : s + batch_size], device=dev)  # (b, W, D)
        out[s : s + len(batch)] = net.last_logits(batch).double().cpu().numpy()
    return out


def counterfactual_logits(
    model: torch.nn.Module,
    windows: np.ndarray,
    fill: Fill | None = None,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Logits of ``windows`` after ``fill`` (None: as they are), (B, 3) float64.

    ``fill`` maps the windows (B, W, D) to changed windows of the same shape, for example the
    padded inputs filled with training medians; ``windows`` itself is left untouched.
    """
    x = np.asarray(windows, dtype=np.float32)
    if fill is not None:
        x = np.asarray(fill(x.copy()), dtype=np.float32)
        if x.shape != np.shape(windows):
            raise FlagcoreError(f"a fill changed the windows' shape from {np.shape(windows)} to {x.shape}")
    return window_logits(model, x, batch_size=batch_size, device=device)


def gap_classes(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two classes of each bar's logit gap: (predicted, the class it beat), each (n,) int.

    Examples
    --------
    >>> top, other = gap_classes(np.array([[0.0, 2.0, 1.0], [3.0, 1.0, 0.0]]))
    >>> top.tolist(), other.tolist()
    ([1, 0], [2, 1])
    """
    lg = np.asarray(logits, dtype=np.float64)
    if lg.ndim != 2 or lg.shape[1] != N_CLASSES:
        raise FlagcoreError(f"logits must have shape (n, {N_CLASSES}), got {lg.shape}")
    top = lg.argmax(axis=1)
    other = np.full_like(top, HOLD)
    hold = top == HOLD
    sides = lg[:, [0, 2]]  # SELL, BUY
    other[hold] = np.where(sides[hold, 0] >= sides[hold, 1], 0, 2)
    return top, other


def logit_gap(logits: np.ndarray, top: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``logits[top] - logits[other]`` per bar, (n,)."""
    lg = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(lg))
    return lg[rows, top] - lg[rows, other]


@dataclass
class IntegratedGradients:
    """Integrated gradients of each window's logit gap against one baseline window."""

    attributions: np.ndarray  # (B, D) signed, summed over the window's bars
    abs_attributions: np.ndarray  # (B, D) |attribution| summed over the window's bars
    delta: np.ndarray  # (B,) captum's convergence delta: sum of attributions - (gap - baseline gap)
    gap: np.ndarray  # (B,) the logit gap at the window
    baseline_gap: np.ndarray  # (B,) the same classes' gap at the baseline window
    top: np.ndarray  # (B,) the predicted class
    other: np.ndarray  # (B,) the class it is compared with
    n_steps: int

    def completeness_error(self) -> float:
        """The largest |delta| relative to the mean |gap - baseline gap|: 0 is exact completeness."""
        scale = float(np.mean(np.abs(self.gap - self.baseline_gap)))
        worst = float(np.max(np.abs(self.delta))) if self.delta.size else 0.0
        return worst / scale if scale > 0 else worst

    def to_dict(self) -> dict:
        return {
            "windows": int(len(self.delta)),
            "n_steps": self.n_steps,
            "completeness_error": self.completeness_error(),
            "mean_abs_delta": float(np.mean(np.abs(self.delta))) if self.delta.size else 0.0,
            "mean_gap": float(np.mean(self.gap)) if self.gap.size else 0.0,
        }


def integrated_gradients(
    model: torch.nn.Module,
    windows: np.ndarray,
    baseline: np.ndarray,
    *,
    n_steps: int = IG_STEPS,
    batch_size: int = IG_BATCH,
    device: str | torch.device | None = None,
) -> IntegratedGradients:
    """Integrated gradients of each window's logit gap (module docstring) against ``baseline``.

    Parameters
    ----------
    model : a checkpoint's model, or an ``inference_network``.
    windows : np.ndarray, shape (B, W, D)
    baseline : np.ndarray, shape (W, D) or (B, W, D)
        The reference input, typically the training medians at every bar.
    n_steps : int
        Points of captum's Gauss-Legendre rule along the straight path from baseline to window.
    batch_size : int
        Windows per captum call; memory grows with ``batch_size * n_steps``.

    Returns
    -------
    IntegratedGradients
        Per-window attributions summed over time (signed and absolute), and captum's delta.

    References
    ----------
    Sundararajan, M., Taly, A., Yan, Q. (2017). Axiomatic attribution for deep networks. ICML.
    Kokhlikyan, N. et al. (2020). Captum: a unified and generic model interpretability library
    for PyTorch. arXiv:2009.07896.

    Examples
    --------
    >>> from flagcore.models.flag_trader import FlagTraderConfig, build_model
    >>> cfg = FlagTraderConfig(d_model=16, num_layers=1, num_heads=2, ff_dim=32, max_length=8, window=4)
    >>> x = np.random.default_rng(0).normal(size=(3, 4, 60)).astype(np.float32)
    >>> ig = integrated_gradients(build_model(cfg), x, np.zeros((4, 60), np.float32))
    >>> ig.attributions.shape, ig.completeness_error() < 0.05
    ((3, 60), True)
    """
    from captum.attr import IntegratedGradients as CaptumIG

    if n_steps < 2:
        raise FlagcoreError(f"n_steps must be >= 2, got {n_steps}")
    if batch_size < 1:
        raise FlagcoreError(f"batch_size must be >= 1, got {batch_size}")
    net = inference_network(model)
    x, b = _ig_inputs(net, windows, baseline)
    dev = pick_device(device)
    net = net.to(dev)
    logits = window_logits(net, x, device=dev)
    base_logits = window_logits(net, np.ascontiguousarray(b), device=dev)
    top, other = gap_classes(logits)

    def gap(states: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
        lg = net.last_logits(states)  # (b, 3)
        return lg.gather(1, hi[:, None])[:, 0] - lg.gather(1, lo[:, None])[:, 0]  # (b,)

    attr_sum, attr_abs, delta = _attribute(CaptumIG(gap), x, b, top, other, n_steps, batch_size, dev)
    return IntegratedGradients(
        attr_sum,
        attr_abs,
        delta,
        logit_gap(logits, top, other),
        logit_gap(base_logits, top, other),
        top,
        other,
        n_steps,
    )


def _ig_inputs(net: FlagTrader, windows: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The windows (B, W, D) and the baseline broadcast to them, float32, checked against ``net``."""
    x = np.asarray(windows, dtype=np.float32)
    b = np.asarray(baseline, dtype=np.float32)
    if x.ndim != 3 or x.shape[2] != net.config.state_dim:
        raise FlagcoreError(
            f"windows of shape {x.shape} do not fit the model's state_dim {net.config.state_dim}"
        )
    if b.shape not in (x.shape[1:], x.shape):
        raise FlagcoreError(
            f"baseline of shape {b.shape} fits neither one window {x.shape[1:]} nor {x.shape}"
        )
    return x, (np.broadcast_to(b, x.shape) if b.ndim == 2 else b)


def _attribute(
    ig,
    x: np.ndarray,
    b: np.ndarray,
    top: np.ndarray,
    other: np.ndarray,
    n_steps: int,
    batch_size: int,
    dev: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """captum's attributions of ``x`` (B, W, D) against ``b`` in batches of ``batch_size`` windows:
    (signed sum over time (B, D), |attribution| summed over time (B, D), convergence delta (B,))."""
    attr_sum = np.empty((len(x), x.shape[2]), dtype=np.float64)
    attr_abs = np.empty_like(attr_sum)
    delta = np.empty(len(x), dtype=np.float64)
    for s in range(0, len(x), batch_size):
        xs = torch.tensor(x[s : s + batch_size], device=dev)  # (b, W, D)
        bs = torch.tensor(b[s : s + batch_size], device=dev)
        hi = torch.as_tensor(top[s : s + batch_size], device=dev)
        lo = torch.as_tensor(other[s : s + batch_size], device=dev)
        a, d = ig.attribute(
            xs,
            baselines=bs,
            additional_forward_args=(hi, lo),
            n_steps=n_steps,
            method="gausslegendre",
            return_convergence_delta=True,
        )  # a: (b, W, D), d: (b,)
        a = a.detach().double().cpu().numpy()
        attr_sum[s : s + len(a)] = a.sum(axis=1)
        attr_abs[s : s + len(a)] = np.abs(a).sum(axis=1)
        delta[s : s + len(a)] = d.detach().double().cpu().numpy()
    return attr_sum, attr_abs, delta
