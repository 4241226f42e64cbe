"""CGDT prediction: every bar from its own window, autoregressive on the policy's earlier actions.

Bar t is conditioned on one constant target return and its window's action tokens are the
policy's own greedy actions at the earlier bars (see ``models.cgdt``, 3. Inference). The recursion
is computed exactly, in batches, by a fixed-point (Jacobi) iteration (``predict_features``);
``predict_cgdt_sequential`` is the bar-by-bar recursion it equals, for checking.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from flagcore.data.dataset import Dataset
from flagcore.errors import FlagcoreError
from flagcore.models.cgdt import CGDT, N_ACTIONS, UNKNOWN_ACTION
from flagcore.models.inference import Predictions, from_logits

# a batch of fewer windows is padded to this many: matrix products of up to 11 rows take other
# kernels (MKL, 2 threads), whose last bits differ, and a bar's logits should not depend on how
# many bars shared its batch (no final pass in a fixed layout is needed then)
MIN_BATCH = 16


def _window_logits(
    net: CGDT,
    X: torch.Tensor,
    acts: torch.Tensor,
    ends: torch.Tensor,
    target: torch.Tensor,
    bs: int,
) -> torch.Tensor:
    """Logits for bars ``ends`` (each >= K-1) from full windows, the earlier actions from ``acts``."""
    K = net.config.context
    rows = ends[:, None] - (K - 1) + torch.arange(K)  # (m, K)
    out = torch.empty((ends.numel(), N_ACTIONS))
    for s in range(0, ends.numel(), bs):
        r = rows[s : s + bs]
        m = r.shape[0]
        if m < MIN_BATCH:
            r = torch.cat([r, r[-1:].expand(MIN_BATCH - m, K)])  # (MIN_BATCH, K), copies of the last
        # a_t comes after s_t and is left out of the window by last_logits: its token is a placeholder
        out[s : s + m] = net.last_logits(target.expand(r.shape), X[r], acts[r])[:m]
    return out


def predict_features(
    net: CGDT,
    X: torch.Tensor,
    target: torch.Tensor,
    batch_size: int = 512,
    progress: Callable[[int, int], None] | None = None,
    guess: torch.Tensor | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """(logits (n, 3), short_history (n,)) of the autoregressive policy on features X (n, D).

    ``target`` is the standardised target return every bar is conditioned on (``net.target_rtg``
    for predictions; training's calibration tries others). ``guess`` (n,) is a first guess of the
    actions (default: unknown), for example the policy's actions at a nearby target: a good guess
    settles in fewer rounds, and the result does not depend on it (the fixed point is unique; see
    the module docstring).
    """
    K = net.config.context
    n = X.shape[0]
    acts = torch.full((n,), UNKNOWN_ACTION, dtype=torch.long)
    if guess is not None:
        if guess.shape != (n,):
            raise FlagcoreError(f"guess of shape {tuple(guess.shape)} does not fit {n} bars")
        acts.copy_(guess)
    logits = torch.empty((n, N_ACTIONS))
    short = np.arange(n) < K - 1

    # bars 0 .. K-2: the history they have, one at a time (each needs the previous actions)
    head = min(K - 1, n)
    for t in range(head):
        a = acts[None, : t + 1].clone()
        a[0, -1] = UNKNOWN_ACTION
        logits[t] = net(target.expand(1, t + 1), X[None, : t + 1], a)[0, -1]
        acts[t] = logits[t].argmax()
    if progress and head:
        progress(head, n)
    if n < K:
        return logits, short

    # bars K-1 .. n-1: fixed-point iteration of a_t = argmax f(a_{t-K+1} .. a_{t-1}, states). A
    # bar is computed again only when an action in its window changed, so once nothing changes
    # every bar's logits are those of its settled window.
    ends = torch.arange(K - 1, n)
    dirty = torch.ones(ends.numel(), dtype=torch.bool)
    rounds, limit = 0, ends.numel() + 1
    while dirty.any():
        rounds += 1
        if rounds > limit:  # cannot happen: each round settles at least the first dirty bar
            raise FlagcoreError(f"CGDT prediction did not settle after {limit} rounds")
        todo = ends[dirty]
        out = _window_logits(net, X, acts, todo, target, batch_size)
        logits[todo] = out
        new = out.argmax(-1)
        changed = torch.zeros(n)
        changed[todo] = (new != acts[todo]).float()
        acts[todo] = new
        dirty = _affected(changed, K)[K - 1 :]
        if progress:  # the bars before the first dirty one are settled
            first = int(dirty.float().argmax()) if dirty.any() else ends.numel()
            progress(K - 1 + first, n)
    return logits, short


@torch.inference_mode()
def predict_cgdt(
    model: CGDT,
    ds: Dataset,
    progress: Callable[[int, int], None] | None = None,
    *,
    batch_size: int = 512,
) -> Predictions:
    """Logits for every bar of ``ds``, autoregressive on the policy's own earlier actions.

    Uses ``ds.features`` only (no close, no label). ``progress(done, total)`` is called as bars
    are settled. Equal to predicting bar by bar (see the module docstring); deterministic.
    """
    if not isinstance(model, CGDT):
        raise FlagcoreError(f"expected a CGDT model, got {type(model).__name__}")
    net = model.eval()
    cfg = net.config
    x = np.asarray(ds.features)
    if x.ndim != 2 or x.shape[1] != cfg.state_dim:
        raise FlagcoreError(
            f"{ds.source}: features of shape {x.shape} do not fit CGDT state_dim {cfg.state_dim}"
        )
    if not np.isfinite(x).all():
        raise FlagcoreError(f"{ds.source}: features hold NaN or infinite values")
    if x.shape[0] == 0:
        raise FlagcoreError(f"{ds.source}: no bars to predict")
    if batch_size < 1:
        raise FlagcoreError(f"batch_size must be >= 1, got {batch_size}")
    X = torch.as_tensor(x, dtype=torch.float32)
    logits, short = predict_features(net, X, net.target_rtg, batch_size, progress)
    return from_logits(logits.numpy(), short, cfg.context)


def _affected(changed: torch.Tensor, K: int) -> torch.Tensor:
    """Bars t whose earlier window bars t-K+1 .. t-1 hold a changed action: (n,) bool."""
    if K == 1:
        return torch.zeros_like(changed, dtype=torch.bool)
    padded = F.pad(changed[None, None], (K - 1, 0))[..., :-1]  # out[t] sums changed[t-K+1 .. t-1]
    return F.conv1d(padded, torch.ones(1, 1, K - 1))[0, 0] > 0


def predict_cgdt_sequential(model: CGDT, ds: Dataset) -> Predictions:
    """The bar-by-bar recursion ``predict_cgdt`` computes in batches; slow, for checking."""
    net = model.eval()
    K = net.config.context
    X = torch.as_tensor(np.asarray(ds.features), dtype=torch.float32)
    n = X.shape[0]
    acts = torch.full((n,), UNKNOWN_ACTION, dtype=torch.long)
    logits = torch.empty((n, N_ACTIONS))
    with torch.inference_mode():
        for t in range(n):
            lo = max(0, t - K + 1)
            a = acts[None, lo : t + 1].clone()
            a[0, -1] = UNKNOWN_ACTION
            logits[t] = net(net.target_rtg.expand(1, t + 1 - lo), X[None, lo : t + 1], a)[0, -1]
            acts[t] = logits[t].argmax()
    return from_logits(logits.numpy(), np.arange(n) < K - 1, K)
