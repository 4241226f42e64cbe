"""Training CGDT: the behaviour's rewards-to-go, the critic, then the critic-guided policy.

The model, its design and where it departs from the paper are described in ``models.cgdt``
(1. Critic, 2. Policy); this module fits them. ``train_cgdt`` fits the critic by Gaussian
negative log-likelihood (``critic_nll``), freezes it, fits the policy by class-weighted
cross-entropy plus the asymmetric critic guidance (``guidance_loss``), and finally sets the
inference target (a quantile of the training returns-to-go, or calibrated to a HOLD share).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from flagcore.data.dataset import Dataset
from flagcore.data.labels import ewm_volatility
from flagcore.errors import FlagcoreError
from flagcore.models.cgdt import CGDT, N_ACTIONS, POSITION, UNKNOWN_ACTION, CGDTConfig
from flagcore.models.cgdt_predict import predict_features
from flagcore.vocab import CLASS_NAMES, UNLABELLED

Progress = Callable[[int, int], None]

# ----------------------------------------------------------------------------- rewards


def market_returns(close: np.ndarray, vol_span: int = 168) -> np.ndarray:
    """``log(close_{t+1}/close_t) / sigma_t`` per bar (0 at the last bar): a long position's reward.

    NaN at the first bars, where no causal volatility exists yet (see ``labels.ewm_volatility``);
    a zero volatility (constant prices) is replaced by the largest one seen.
    """
    close = np.asarray(close, np.float64)
    sigma = ewm_volatility(close, span=vol_span)
    pos = np.isfinite(sigma) & (sigma > 0)
    sigma = np.where(np.isfinite(sigma) & ~pos, np.max(sigma[pos]) if pos.any() else 1.0, sigma)
    m = np.zeros(close.size)
    m[:-1] = np.diff(np.log(close)) / sigma[:-1]
    return m


def rewards_to_go(
    close: np.ndarray, labels: np.ndarray, horizon: int, vol_span: int = 168
) -> tuple[np.ndarray, np.ndarray]:
    """(R, valid): the behaviour policy's H-bar return-to-go per bar, and where it is defined.

    ``r_t = p(a_t) * log(close_{t+1}/close_t) / sigma_t``; ``R_t = r_t + ... + r_{t+H-1}``; valid
    where ``a_t .. a_{t+H-1}`` are labelled and ``close_{t+H}`` exists.
    """
    close = np.asarray(close, np.float64)
    labels = np.asarray(labels)
    n = close.size
    mret = market_returns(close, vol_span)
    known = (labels != UNLABELLED) & np.isfinite(mret)  # a bar without a causal volatility has no reward
    pos = np.where(known, np.asarray(POSITION)[np.where(known, labels, 1).astype(np.int64)], 0.0)
    r = pos * np.where(known, mret, 0.0)
    c = np.concatenate([[0.0], np.cumsum(r)])
    k = np.concatenate([[0], np.cumsum(known)])
    R = np.full(n, np.nan)
    valid = np.zeros(n, bool)
    m = n - horizon  # bars t < m have close_{t+H}
    if m > 0:
        R[:m] = c[horizon : horizon + m] - c[:m]
        valid[:m] = (k[horizon : horizon + m] - k[:m]) == horizon
    R[~valid] = np.nan
    return R, valid


def action_returns(
    close: np.ndarray, labels: np.ndarray, horizon: int, vol_span: int = 168
) -> tuple[np.ndarray, np.ndarray]:
    """(R_a (n, 3), valid): the return-to-go had action a been taken at bar t, the behaviour after.

    ``R_t(a) = R_t + (p(a) - p(a_t)) * m_t`` with ``m_t = log(close_{t+1}/close_t) / sigma_t``:
    exact, because the reward of bar t is the position times a market return our orders do not
    move. ``R_t(a_t) = R_t``. NaN where ``valid`` is false.
    """
    R, valid = rewards_to_go(close, labels, horizon, vol_span)
    m = np.nan_to_num(market_returns(close, vol_span))  # NaN only where valid is false anyway
    pos = np.asarray(POSITION)
    taken = pos[np.where(valid, labels, 1).astype(np.int64)]
    return R[:, None] + (pos[None, :] - taken[:, None]) * m[:, None], valid


# ----------------------------------------------------------------------------- losses


def critic_nll(mu: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood without its constant: mean of log s + (R - mu)^2 / 2s^2."""
    return (log_std + 0.5 * ((target - mu) / log_std.exp()) ** 2).mean()


def guidance_loss(
    logits: torch.Tensor,
    rtg: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """Asymmetric critic guidance, in expectation under the policy.

    logits (..., 3), rtg (...) the conditioning return, mu and sigma (..., 3) the critic's
    Gaussian for each action. ``u_a = (R - mu_a) / sigma_a``; the loss is the mean over positions
    of ``sum_a pi_a * |tau - 1(u_a < 0)| * u_a^2``: a shortfall of the expected return below the
    target (u > 0) weighs ``tau``, an excess ``1 - tau``.
    """
    u = (rtg[..., None] - mu) / sigma  # (..., 3)
    w = torch.where(u > 0, tau, 1.0 - tau)
    return (logits.softmax(-1) * w * u.square()).sum(-1).mean()


# ----------------------------------------------------------------------------- training


@dataclass
class _TrainingData:
    """What both stages train on: features, behaviour actions and standardised returns-to-go."""

    X: torch.Tensor  # (n, D) features
    A: torch.Tensor  # (n,) behaviour actions (HOLD where not valid)
    Z: torch.Tensor  # (n,) standardised return-to-go, 0 where not valid
    valid: np.ndarray  # (n,) bool: a full return-to-go exists
    Rv: np.ndarray  # the valid returns-to-go
    mean: float
    std: float
    share: np.ndarray  # (3,) behaviour class shares among the valid bars


def train_cgdt(train: Dataset, config: CGDTConfig | None = None, progress: Progress | None = None) -> CGDT:
    """Fit the critic, then the policy, on ``train``; returns an eval-mode CGDT on the CPU.

    Parameters
    ----------
    train : a labelled dataset with close prices (the behaviour actions and the rewards).
    config : the architecture and training settings (default ``CGDTConfig()``).
    progress : ``progress(done, total)`` after each epoch (critic epochs, then policy epochs).

    Returns
    -------
    CGDT : frozen, in eval mode, ``info`` holding the training record.
    """
    cfg = CGDTConfig() if config is None else config
    src, close, labels = _check_training_set(train, cfg)
    t0 = time.perf_counter()
    R, valid = rewards_to_go(close, labels, cfg.horizon, cfg.vol_span)
    starts = _window_starts(valid, cfg, src)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed)
        model = CGDT(cfg)
        data = _training_data(model, train.features, labels, R, valid, src)
        history: list[dict] = []
        MU, SIG = _fit_critic(model, close, labels, data, g, history, progress)
        per_epoch = _fit_policy(model, data, MU, SIG, starts, g, history, progress, t0)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        zv = np.sort((data.Rv - data.mean) / data.std)
        calibration = _set_target(model, data.X, zv)
    model.info = {
        "train_source": train.source,
        "train_content_hash": train.content_hash,
        "feature_names": list(train.feature_names),
        "usable_bars": int(valid.sum()),
        "windows": int(starts.size),
        "windows_per_epoch": int(per_epoch),
        "behaviour_shares": {c: float(data.share[i]) for i, c in enumerate(CLASS_NAMES)},
        "rtg_mean": data.mean,
        "rtg_std": data.std,
        "target_rtg": float(model.target_rtg) * data.std + data.mean,
        "target_quantile": float(np.searchsorted(zv, float(model.target_rtg), side="right") / zv.size),
        "calibration": calibration,
        "history": history,
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    return model


def _check_training_set(train: Dataset, cfg: CGDTConfig) -> tuple[str, np.ndarray, np.ndarray]:
    """Refuse a config or dataset CGDT cannot train on; returns (its name for errors, close, labels)."""
    if not isinstance(cfg, CGDTConfig):
        raise FlagcoreError(f"config must be a CGDTConfig, got {type(cfg).__name__}")
    src = train.source or "training set"
    if train.labels is None:
        raise FlagcoreError(f"{src}: CGDT needs labels (the behaviour actions)")
    if train.close is None:
        raise FlagcoreError(f"{src}: CGDT needs close prices (the rewards)")
    if train.state_dim != cfg.state_dim:
        raise FlagcoreError(f"{src}: {train.state_dim} inputs per bar, the CGDT config has {cfg.state_dim}")
    if not np.isfinite(train.features).all():
        raise FlagcoreError(f"{src}: features hold NaN or infinite values")
    return src, train.close, train.labels


def _window_starts(valid: np.ndarray, cfg: CGDTConfig, src: str) -> np.ndarray:
    """First bars of the windows of K consecutive valid bars; refuses too few usable bars."""
    K = cfg.context
    ok = np.concatenate([[0], np.cumsum(valid)])
    starts = np.flatnonzero(ok[K:] - ok[:-K] == K)
    if starts.size == 0 or valid.sum() < 100:
        raise FlagcoreError(
            f"{src}: only {int(valid.sum())} bars with a full {cfg.horizon}-bar return-to-go "
            f"({starts.size} windows of {K}); too few to train CGDT"
        )
    return starts


def _training_data(
    model: CGDT,
    features: np.ndarray,
    labels: np.ndarray,
    R: np.ndarray,
    valid: np.ndarray,
    src: str,
) -> _TrainingData:
    """The training tensors; sets the model's return statistics and class weights."""
    cfg = model.config
    X = torch.as_tensor(features, dtype=torch.float32)  # (n, D)
    A = torch.as_tensor(np.where(valid, labels, 1).astype(np.int64))  # (n,)
    Rv = R[valid]
    mean, std = float(Rv.mean()), float(Rv.std()) or 1.0
    Z = torch.as_tensor(np.where(valid, (np.nan_to_num(R) - mean) / std, 0.0), dtype=torch.float32)
    counts = np.bincount(labels[valid].astype(np.int64), minlength=N_ACTIONS)
    if (counts == 0).any():
        missing = [CLASS_NAMES[i] for i in range(N_ACTIONS) if counts[i] == 0]
        raise FlagcoreError(f"{src}: no {', '.join(missing)} label among the usable bars")
    share = counts / counts.sum()
    weight = 1.0 / (N_ACTIONS * share) if cfg.balance_classes else np.ones(N_ACTIONS)
    model.rtg_mean.fill_(mean)
    model.rtg_std.fill_(std)
    model.class_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    return _TrainingData(X, A, Z, valid, Rv, mean, std, share)


def _fit_critic(
    model: CGDT,
    close: np.ndarray,
    labels: np.ndarray,
    data: _TrainingData,
    g: torch.Generator,
    history: list[dict],
    progress: Progress | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1: the critic by Gaussian NLL, then frozen; returns its (mu, sigma) (n, 3) per bar.

    ``"counterfactual"`` pairs: every action at every bar, ``R_t(a) = R_t + (p(a) - p(a_t)) * m_t``
    (our orders do not move the market); ``"behaviour"``: the data's own pairs only.
    """
    cfg = model.config
    X, valid = data.X, data.valid
    RA, _ = action_returns(close, labels, cfg.horizon, cfg.vol_span)  # (n, 3)
    ZA = torch.as_tensor(np.nan_to_num((RA - data.mean) / data.std).reshape(-1), dtype=torch.float32)
    if cfg.critic_data == "counterfactual":
        idx = torch.as_tensor(np.flatnonzero(np.repeat(valid, N_ACTIONS)))  # 3t + a
    else:
        idx = torch.as_tensor(np.flatnonzero(valid)) * N_ACTIONS + data.A[torch.as_tensor(valid)]
    SA = torch.arange(N_ACTIONS).repeat(X.shape[0])  # (3n,) action of index 3t + a
    critic = model.critic.train()
    opt = torch.optim.AdamW(critic.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    bs = 4 * cfg.batch_size
    total = cfg.critic_epochs + cfg.epochs
    for epoch in range(cfg.critic_epochs):
        perm = idx[torch.randperm(idx.numel(), generator=g)]
        tot = 0.0
        for s in range(0, perm.numel(), bs):
            b = perm[s : s + bs]
            mu, log_std = critic(X[b // N_ACTIONS], SA[b])
            nll = critic_nll(mu, log_std, ZA[b])
            opt.zero_grad(set_to_none=True)
            nll.backward()
            opt.step()
            tot += float(nll.detach()) * b.numel()
        history.append({"stage": "critic", "epoch": epoch + 1, "nll": tot / perm.numel()})
        if progress:
            progress(epoch + 1, total)
    critic.eval()
    for p in critic.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        return critic.all_actions(X)  # (n, 3) each, frozen guidance


def _fit_policy(
    model: CGDT,
    data: _TrainingData,
    MU: torch.Tensor,
    SIG: torch.Tensor,
    starts: np.ndarray,
    g: torch.Generator,
    history: list[dict],
    progress: Progress | None,
    t0: float,
) -> int:
    """Stage 2: the policy by weighted CE + lambda * asymmetric critic guidance; returns windows per epoch."""
    cfg = model.config
    policy = model.policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    starts_t = torch.as_tensor(starts)
    per_epoch = starts.size if cfg.windows_per_epoch == 0 else min(cfg.windows_per_epoch, starts.size)
    steps = cfg.epochs * math.ceil(per_epoch / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.1)
    offs = torch.arange(cfg.context)
    for epoch in range(cfg.epochs):
        perm = starts_t[torch.randperm(starts_t.numel(), generator=g)[:per_epoch]]
        sums = np.zeros(3)
        for s in range(0, perm.numel(), cfg.batch_size):
            rows = perm[s : s + cfg.batch_size, None] + offs  # (B, K) bar indices
            loss, ce, guide = _policy_loss(model, data, MU, SIG, rows, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            sched.step()
            parts = [float(loss.detach()), float(ce.detach()), float(guide.detach())]
            sums += rows.shape[0] * np.array(parts)
        sums /= max(perm.numel(), 1)
        history.append(
            {
                "stage": "policy",
                "epoch": epoch + 1,
                "loss": float(sums[0]),
                "ce": float(sums[1]),
                "guidance": float(sums[2]),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        if progress:
            progress(cfg.critic_epochs + epoch + 1, cfg.critic_epochs + cfg.epochs)
    return int(per_epoch)


def _policy_loss(
    model: CGDT,
    data: _TrainingData,
    MU: torch.Tensor,
    SIG: torch.Tensor,
    rows: torch.Tensor,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, cross-entropy, guidance) of one batch of windows ``rows`` (B, K) of bar indices."""
    cfg = model.config
    policy = model.policy
    a = data.A[rows]  # (B, K) behaviour actions
    z = data.Z[rows]  # (B, K) standardised RTG
    if cfg.rtg_noise > 0:
        z = z + cfg.rtg_noise * torch.randn(z.shape, generator=g)
    if cfg.action_tokens == "policy":  # the policy's own greedy actions, no gradient
        policy.eval()
        with torch.no_grad():
            own = policy(z, data.X[rows], torch.full_like(a, UNKNOWN_ACTION)).argmax(-1)
        policy.train()
    else:
        own = a
    shown = torch.where(torch.rand(a.shape, generator=g) < cfg.action_dropout, UNKNOWN_ACTION, own)
    logits = policy(z, data.X[rows], shown)  # (B, K, 3)
    ce = F.cross_entropy(logits.reshape(-1, N_ACTIONS), a.reshape(-1), weight=model.class_weight)
    guide = guidance_loss(logits, z, MU[rows], SIG[rows], cfg.asymmetry)
    return ce + cfg.guidance_weight * guide, ce, guide


def _set_target(model: CGDT, X: torch.Tensor, zv: np.ndarray) -> dict | None:
    """Set the inference target: a quantile of the training RTGs, or calibrated to a HOLD share.

    Returns the calibration record (None for a quantile target).
    """
    cfg = model.config
    if cfg.rtg_quantile is not None:
        target = float(np.quantile(zv, cfg.rtg_quantile))
        calibration = None
    else:
        cal = X[-min(cfg.calibration_bars, X.shape[0]) :]
        target, calibration = calibrate_target(model, cal, zv, cfg.hold_share)
    model.target_rtg.fill_(target)
    return calibration


@torch.inference_mode()
def calibrate_target(net: CGDT, X: torch.Tensor, zv: np.ndarray, hold_share: float) -> tuple[float, dict]:
    """The standardised target at which the policy holds ``hold_share`` of the bars X, by bisection.

    The HOLD share falls as the target rises (a high return is what acting earns), so bisection
    between the 1% and 99% quantiles of the training RTGs ``zv``; 10 steps. Each step's prediction
    starts from the actions of the step before (a nearby target), which settles in fewer rounds.

    Parameters
    ----------
    net : the trained CGDT.
    X : (n, D) features of the calibration bars (the last training bars).
    zv : the sorted standardised training returns-to-go.
    hold_share : the HOLD share wanted.

    Returns
    -------
    (target, record) : the standardised target, and what the calibration found.
    """

    last: list[torch.Tensor] = []  # the actions at the target tried before: the next one's first guess

    def share(z: float) -> float:
        guess = last[-1] if last else None
        logits, _ = predict_features(net, X, torch.tensor(z, dtype=torch.float32), guess=guess)
        last[:] = [logits.argmax(-1)]
        return float((last[0] == 1).float().mean())

    lo, hi = float(np.quantile(zv, 0.01)), float(np.quantile(zv, 0.99))
    s_lo, s_hi = share(lo), share(hi)
    if s_lo > hold_share and s_hi < hold_share:
        for _ in range(10):  # invariant: share(lo) > hold_share >= share(hi)
            mid = 0.5 * (lo + hi)
            s_mid = share(mid)
            if s_mid > hold_share:
                lo, s_lo = mid, s_mid
            else:
                hi, s_hi = mid, s_mid
    # the closer end (the share can jump: the policy's HOLD decision is sharp in the target)
    z, s = (lo, s_lo) if abs(s_lo - hold_share) <= abs(s_hi - hold_share) else (hi, s_hi)
    return z, {"bars": int(X.shape[0]), "hold_share_wanted": hold_share, "hold_share": s}
