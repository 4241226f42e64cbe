"""The training losses of FLAG-TRADER: class weights, focal loss, and the loss a config asks for.

``make_loss`` turns a training config into ``loss_fn(windows, ends) -> (loss, logits)``, taken at
the last position of each window (or, to reproduce the reviewed code's leak, at every position).
The losses themselves are described in ``training.loop``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from flagcore.data.dataset import Dataset
from flagcore.data.labels import ewm_volatility
from flagcore.errors import FlagcoreError
from flagcore.models.flag_trader import FlagTrader
from flagcore.vocab import N_CLASSES, SEED_CLASS_WEIGHTS

LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
WeightSpec = str | tuple[float, float, float] | None


class LossSettings(Protocol):
    """The fields of a training config that choose and shape the loss (``TrainConfig`` has them)."""

    loss: str
    class_weights: WeightSpec
    focal_gamma: float
    focal_alpha: WeightSpec
    tau: float
    return_weight: float
    loss_position: str


def class_weights(spec: WeightSpec, shares: np.ndarray) -> torch.Tensor:
    """Per-class weights: 'inverse' (1/share, mean 1), 'seed' ([1, 0.5, 1]) or explicit numbers.

    Parameters
    ----------
    spec : "inverse", "seed", three numbers, or None (every class 1).
    shares : (3,) the class shares of the training labels.

    Returns
    -------
    torch.Tensor : (3,) float32 weights, SELL/HOLD/BUY.
    """
    if spec is None:
        return torch.ones(N_CLASSES)
    if spec == "seed":
        return torch.tensor(SEED_CLASS_WEIGHTS)
    if spec == "inverse":
        if (shares <= 0).any():
            raise FlagcoreError(
                f"a class is absent from the training labels (shares {shares.round(4).tolist()})"
            )
        w = 1.0 / shares
        return torch.tensor(w / w.mean(), dtype=torch.float32)
    return torch.tensor(spec, dtype=torch.float32)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float, alpha: torch.Tensor) -> torch.Tensor:
    """Mean of -alpha_y (1 - p_y)^gamma log p_y (Lin et al. 2017, eq. 5)."""
    logp = F.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0]
    return (-(alpha[target]) * (1 - logp.exp()) ** gamma * logp).mean()


def forward_return_target(ds: Dataset) -> np.ndarray:
    """Forward log return over the label horizon / (sigma_t sqrt h), clipped at 5; NaN without a future."""
    h = ds.label_horizon or 24
    if ds.close is None:
        raise FlagcoreError(f"{ds.source}: multitask training needs 'close'")
    close = ds.close
    sigma = ewm_volatility(close)
    out = np.full(len(close), np.nan)
    out[:-h] = np.log(close[h:] / close[:-h]) / (sigma[:-h] * np.sqrt(h) + 1e-12)
    return np.clip(out, -5, 5)


def make_loss(
    net: FlagTrader,
    cfg: LossSettings,
    y_all: torch.Tensor,
    shares: np.ndarray,
    ret_target: torch.Tensor | None,
) -> tuple[LossFn, torch.Tensor, torch.Tensor]:
    """``(loss_fn, class weights, focal alpha)`` for the configured loss.

    Parameters
    ----------
    net : the FLAG-TRADER network (``base_network`` of the model).
    cfg : the training config.
    y_all : (n,) the labels of every bar, on the training device.
    shares : (3,) class shares of the training labels (for 'inverse' weights and the prior).
    ret_target : (n,) the multitask return target (``forward_return_target``), or None.

    Returns
    -------
    ``loss_fn(windows, ends) -> (loss, logits at the last position)``, the class weights and the
    focal alpha.
    """
    dev = y_all.device
    weighted = cfg.loss in ("weighted", "multitask")
    weights = class_weights(cfg.class_weights if weighted else None, shares).to(dev)
    alpha = class_weights(cfg.focal_alpha, shares).to(dev)
    log_prior = torch.log(torch.as_tensor(shares, dtype=torch.float32).clamp_min(1e-6)).to(dev)

    def class_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if weighted:
            return F.cross_entropy(logits, y, weight=weights)
        if cfg.loss == "focal":
            return focal_loss(logits, y, cfg.focal_gamma, alpha)
        if cfg.loss == "logit_adjusted":
            return F.cross_entropy(logits + cfg.tau * log_prior, y)
        return F.cross_entropy(logits, y)

    def loss_fn(x: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cfg.loss_position == "all":
            # the reviewed code's loss: every position of the window, each with its own bar's
            # label; without a mask position t attends to bars after t (the leak)
            W = x.shape[1]
            y_pos = y_all[ends[:, None] - torch.arange(W - 1, -1, -1, device=dev)]  # (B, W)
            logits_all = net(x)  # (B, W, 3)
            ok = y_pos >= 0
            return class_loss(logits_all[ok], y_pos[ok]), logits_all[:, -1]
        hid = net.hidden(x, last_only=True)[:, -1]  # (B, d_model): the last position only
        logits = net.action_head(hid)
        loss = class_loss(logits, y_all[ends])
        if cfg.loss == "multitask" and ret_target is not None and net.return_head is not None:
            target = ret_target[ends]
            ok = torch.isfinite(target)
            if ok.any():
                pred = net.return_head(hid)[:, 0]
                loss = loss + cfg.return_weight * F.mse_loss(pred[ok], target[ok])
        return loss, logits

    return loss_fn, weights, alpha
