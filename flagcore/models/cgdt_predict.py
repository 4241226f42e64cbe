"""CGDT prediction: every bar from its own window, autoregressive on the policy's earlier actions.

Bar t is conditioned on one constant target return and its window's action tokens are the
policy's own greedy actions at the earlier bars (see ``models.cgdt``, 3. Inference). The recursion
is computed exactly, in batches (``predict_features``): a first sweep cuts the bars into up to
``SEGMENTS`` stretches and computes the next bar of every stretch at once, so each bar is computed
from its own stretch's actions already known; a fixed-point (Jacobi) iteration then recomputes the
bars whose windows reached into the previous stretch's unknown end, and whatever that changes.
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
# the first sweep's stretches: each of its steps is one batch of this many windows. Jacobi rounds from
# unknown actions computed each bar about 4 times (the first two rounds every bar: its window's
# actions all changed from unknown); the sweep computes each bar once, plus the stretches' first
# K-1 bars and what they change (full demo, 9,313 bars: 12,775 windows instead of 38,217, same bits)
SEGMENTS = 32


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
    actions (default: unknown), read where a bar's window reaches bars not computed yet, for
    example the policy's actions at a nearby target: a good guess settles in fewer rounds, and the
    result does not depend on it (the fixed point is unique; see the module docstring).
    ``progress(done, n)`` counts the bars computed.
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

    ends = torch.arange(K - 1, n)
    dirty = _sweep(net, X, acts, logits, ends, target, batch_size, progress)

    # then the fixed-point iteration of a_t = argmax f(a_{t-K+1} .. a_{t-1}, states): a bar is
    # computed again only when an action in its window changed since it was computed, so once
    # nothing changes every bar's logits are those of its settled window.
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
    if progress:
        progress(n, n)
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
    are computed. Equal to predicting bar by bar (see the module docstring); deterministic.
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


def _sweep(
    net: CGDT,
    X: torch.Tensor,
    acts: torch.Tensor,
    logits: torch.Tensor,
    ends: torch.Tensor,
    target: torch.Tensor,
    bs: int,
    progress: Callable[[int, int], None] | None,
) -> torch.Tensor:
    """Compute bars ``ends`` once each, in place, stretch by stretch in step; returns the bars (as a
    mask over ``ends``) whose window holds an action that was computed after them (at the same step
    or later), which the fixed-point iteration must compute again.

    ``ends`` is cut into ``S`` contiguous stretches of ``m`` bars and step ``j`` computes the j-th
    bar of every stretch: a bar's earlier bars in its own stretch are known by then, those at the end
    of the previous stretch are not (their ``acts`` are still the first guess).
    """
    K = net.config.context
    N = ends.numel()
    S = max(1, min(SEGMENTS, N // (2 * K)))  # stretches of at least 2K bars: few bars see the previous one
    m = -(-N // S)
    step = torch.arange(N) % m  # (N,) the step that computes each bar
    n = X.shape[0]
    for j in range(m):
        e = ends[step == j]
        out = _window_logits(net, X, acts, e, target, bs)
        logits[e] = out
        acts[e] = out.argmax(-1)
        if progress and ((j + 1) % 16 == 0 or j == m - 1):
            progress(K - 1 + min((j + 1) * S, N), n)  # computed once; the fix-up after is short
    stale = torch.zeros(N, dtype=torch.bool)
    for lag in range(1, min(K - 1, N - 1) + 1):  # bar i reads bar i - lag (both in ends)
        stale[lag:] |= step[:-lag] >= step[lag:]
    return stale


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
