"""CGDT: a compact Critic-Guided Decision Transformer for the SELL/HOLD/BUY decision.

After Wang, Yang, Wen, Liu and Qiao, "Critic-Guided Decision Transformer for Offline
Reinforcement Learning", AAAI 2024 (arXiv:2312.13716). It is the second model of the ensemble
remedy for a FLAG-TRADER that collapsed to HOLD. Class order: 0 = SELL, 1 = HOLD, 2 = BUY.

Trading as offline RL
---------------------
The behaviour policy is the labelling oracle: its action at bar t is the label ``a_t``, with
position ``p(a) = (-1, 0, +1)`` for (SELL, HOLD, BUY). With ``m_t = log(close_{t+1}/close_t) /
sigma_t`` (``sigma_t`` the EWM volatility of 1-bar log returns up to bar t,
``labels.ewm_volatility``, span ``config.vol_span``) the reward and the finite-horizon
return-to-go over ``H = config.horizon`` bars (default 24, the label horizon) are::

    r_t = p(a_t) * m_t,        R_t = r_t + r_{t+1} + ... + r_{t+H-1}.

Only bars whose labels ``a_t .. a_{t+H-1}`` are resolved and whose ``close_{t+H}`` lies in the
training set are used. RTGs enter both networks standardised by their training mean and std.

1. Critic, trained first and then frozen. An MLP ``Q(s_t, a) -> (mu, log sigma)`` models the
   return-to-go of a (state, action) pair as a Gaussian, fitted by negative log-likelihood::

       L_Q = E[ log sigma(s_t, a) + (R_t(a) - mu(s_t, a))^2 / (2 sigma(s_t, a)^2) ].

   ``config.critic_data = "behaviour"`` fits the pairs of the data, ``(s_t, a_t, R_t)``, as the
   paper does. The default ``"counterfactual"`` fits all three actions at every bar with
   ``R_t(a) = R_t + (p(a) - p(a_t)) * m_t``, the exact return of taking ``a`` at t and following
   the behaviour afterwards (our orders do not move the market). Reason: the oracle acts only
   when it knows a move is coming, so a behaviour-only critic learns "BUY or SELL earns more
   than HOLD" from the oracle's selection, not from the state.

2. Policy. A causal (pre-LN, nanoGPT-style) transformer over the last K steps as interleaved
   tokens ``(R_{t-K+1}, s_{t-K+1}, a_{t-K+1}, ..., R_t, s_t, a_t)``, each embedded by its own
   linear map (actions by a table with a fourth "unknown" row) plus learned step and token-type
   embeddings. The action at step t is read at the token ``s_t``: by the causal mask it sees the
   RTGs, states and actions before it and ``R_t, s_t``, never ``a_t`` or anything later. The loss,
   averaged over every step of every window, is::

       L_pi = CE_w(pi(. | ...), a_t) + lambda * sum_a pi(a | ...) * |tau - 1(u_a < 0)| * u_a^2,
       u_a  = (R_t - mu(s_t, a)) / sigma(s_t, a),

   ``lambda = config.guidance_weight`` and ``tau = config.asymmetry``. The second term is the
   paper's asymmetric critic guidance: it pulls the policy toward actions whose return, as the
   critic expects it, matches the conditioning return ``R_t``; with ``tau > 0.5`` a shortfall
   (u > 0) costs more than an excess. ``CE_w`` is cross-entropy on the behaviour action with
   class weights ``1 / (3 * share)`` when ``config.balance_classes`` (the oracle holds about 63%
   of the time; unweighted CE drifts toward HOLD, the failure this model is meant to counter).

3. Inference. Every bar is conditioned on one constant target return and the action tokens are
   the policy's own greedy actions at the earlier bars of the window (autoregressive). Nothing
   after bar t enters bar t's prediction: no close price at all, no label, no later feature.
   The recursion is computed exactly, in batches, by a fixed-point (Jacobi) iteration: predict
   every bar from the current guess of the earlier actions, recompute only the bars whose window
   of earlier actions changed, repeat until nothing changes. Bar t depends only on bars < t, so
   the fixed point is unique and equals the bar-by-bar recursion (``predict_cgdt_sequential``);
   the final logits come from one pass in a fixed batch layout, so they do not depend on the
   path. The first K-1 bars have shorter windows (``short_history``), as in ``flagcore.models.inference``.

   The target: ``config.rtg_quantile`` of the training RTGs when set; by default (None) the
   target at which the trained policy holds ``config.hold_share`` (0.5) of the last
   ``config.calibration_bars`` training bars, found by bisection (training data only). Why not
   simply a high quantile: the oracle's RTG says whether it acts (24% of the training RTGs are
   exactly 0: the oracle held for H bars), so the policy learns "high R -> BUY or SELL, low R ->
   HOLD" and a high target gives no HOLD at all; in a demo run the HOLD share of the test bars
   went from about 90% to 0% between the 0.55 and 0.65 quantiles.

Where this departs from the paper (simplifications and changes, all deliberate)
-------------------------------------------------------------------------------
- Discrete actions: the paper feeds the policy's continuous action into the critic; here the
  guidance term is the expectation of the asymmetric loss under the policy's softmax
  (differentiable; equal to the paper's term at a one-hot policy).
- The paper's critic sees the trajectory so far; ours sees ``(s_t, a)`` only, the 60 features
  already summarising up to 168 bars of history. Counterfactual critic pairs (see 1.) are ours.
- Finite-horizon returns (the market is one endless trajectory) and a constant target instead
  of one decremented by realised rewards (that would need prices after the decision).
- Training action tokens are the policy's own greedy actions (computed without gradient from
  the same window with actions hidden, ``config.action_tokens = "policy"``), each hidden with
  probability ``config.action_dropout``; the paper (like DT) feeds the behaviour actions. The
  oracle's earlier actions reveal the future (labels persist: 91% of bars repeat the previous
  label), a policy trained on them learns to copy the previous action, and fed its own actions
  at inference it locks in: in demo runs, one action for the whole test period.
  ``"behaviour"`` restores the paper's choice.
- Gaussian noise of std ``config.rtg_noise`` (standardised units) on the training RTG tokens,
  so that the policy has to use the states and not only the (leaky) return to decide.
- Default ``guidance_weight`` 0.1, not 1: on a held-out stretch of the demo training data,
  balanced accuracy fell as lambda grew (about 0.40 at 0, 0.39 at 0.1, 0.34 at 0.3, 0.31 at 1;
  single runs of 5 x 8,192 windows, behaviour critic; 0.35 and 0.32 at 0.3 and 1 with the
  counterfactual one).
  With this oracle, "actions consistent with the target" at a calibrated target steers HOLD
  toward the volatile bars where the oracle trades. The term is kept, at a weight that does not
  hurt, and the weight is a config field.

Determinism: training and prediction are deterministic for a fixed ``config.seed`` on one
machine and thread count (the global RNG is forked; every random draw comes from a seeded
generator or the forked RNG).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from flagcore.models.checkpoint import CGDT_FORMAT, write_safetensors
from flagcore.data.dataset import CLASS_NAMES, UNLABELLED, Dataset
from flagcore.errors import FlagcoreError
from flagcore.models.inference import Predictions, from_logits

FORMAT = CGDT_FORMAT
POSITION = (-1.0, 0.0, 1.0)  # SELL, HOLD, BUY
N_ACTIONS = 3
UNKNOWN_ACTION = 3  # action-table row for "not shown": training dropout, first guess of the fixed point
ACTION_TOKENS = ("policy", "behaviour")
CRITIC_DATA = ("counterfactual", "behaviour")


@dataclass(frozen=True)
class CGDTConfig:
    state_dim: int = 60  # model inputs per bar
    context: int = 16  # K: steps per window (3K tokens)
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ff_dim: int = 256
    dropout: float = 0.1
    critic_hidden: int = 128
    critic_layers: int = 2
    horizon: int = 24  # H: bars summed in the return-to-go (the label horizon)
    vol_span: int = 168  # EWM span of the volatility that standardises rewards
    rtg_quantile: float | None = None  # inference target: this quantile of the training RTGs;
    # None: the target at which the policy holds `hold_share` of the last `calibration_bars` bars
    hold_share: float = 0.5
    calibration_bars: int = 2048
    guidance_weight: float = 0.1  # lambda, weight of the critic-guided term
    asymmetry: float = 0.7  # tau in (0, 1); > 0.5 penalises a critic shortfall more
    rtg_noise: float = 1.0  # std of Gaussian noise on the standardised training RTG tokens
    critic_data: str = "counterfactual"  # critic pairs: all actions per bar, or "behaviour" only
    action_tokens: str = "policy"  # training action tokens: "policy" (own, as at inference) or "behaviour"
    action_dropout: float = 0.25  # probability of hiding a training action token
    balance_classes: bool = True  # class-weighted cross-entropy
    critic_epochs: int = 4
    epochs: int = 8
    windows_per_epoch: int = 16384  # policy windows sampled per epoch; 0 = every window once
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("dropout", "action_dropout"):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0
                want = "a number in [0, 1)"
            elif f.name in ("rtg_quantile", "asymmetry", "hold_share"):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < v < 1.0
                if f.name == "rtg_quantile" and v is None:
                    ok = True
                want = "a number in (0, 1)" + (" or None" if f.name == "rtg_quantile" else "")
            elif f.name in ("guidance_weight", "weight_decay", "rtg_noise"):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                want = "a number >= 0"
            elif f.name == "lr":
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                want = "a number > 0"
            elif f.name == "action_tokens":
                ok, want = v in ACTION_TOKENS, " or ".join(map(repr, ACTION_TOKENS))
            elif f.name == "critic_data":
                ok, want = v in CRITIC_DATA, " or ".join(map(repr, CRITIC_DATA))
            elif f.name == "balance_classes":
                ok, want = isinstance(v, bool), "true or false"
            elif f.name in ("windows_per_epoch", "seed", "critic_epochs"):
                ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
                want = "an integer >= 0"
            else:
                ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
                want = "a positive integer"
            if not ok:
                raise FlagcoreError(f"CGDT config: {f.name} must be {want}, got {v!r}")
        if self.d_model % self.num_heads:
            raise FlagcoreError(
                f"CGDT config: d_model {self.d_model} is not divisible by num_heads {self.num_heads}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CGDTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FlagcoreError(f"CGDT config: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


# ----------------------------------------------------------------------------- networks


class Critic(nn.Module):
    """Q(s, a) -> (mu, log sigma) of the standardised return-to-go, a Gaussian."""

    def __init__(self, cfg: CGDTConfig):
        super().__init__()
        layers, width = [], cfg.state_dim + N_ACTIONS
        for _ in range(cfg.critic_layers):
            layers += [nn.Linear(width, cfg.critic_hidden), nn.GELU()]
            width = cfg.critic_hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([states, F.one_hot(actions, N_ACTIONS).to(states.dtype)], dim=-1)  # (..., D+3)
        mu, log_std = self.head(self.body(x)).unbind(-1)  # (...), (...)
        return mu, log_std.clamp(-5.0, 3.0)

    def all_actions(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) for every action: states (N, D) -> (N, 3), (N, 3)."""
        N = states.shape[0]
        s = states[:, None, :].expand(N, N_ACTIONS, states.shape[-1])
        a = torch.arange(N_ACTIONS, device=states.device).expand(N, N_ACTIONS)
        mu, log_std = self(s, a)
        return mu, log_std.exp()


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: CGDTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, L, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, L, hd)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, L, hd): token i attends to tokens <= i only
        y = y.transpose(1, 2).reshape(B, L, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN block: x = x + attn(ln1(x)); x = x + mlp(ln2(x))."""

    def __init__(self, cfg: CGDTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_dim), nn.GELU(), nn.Linear(cfg.ff_dim, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class DecisionTransformer(nn.Module):
    """(RTG, state, action) x T steps -> action logits read at each state token."""

    def __init__(self, cfg: CGDTConfig):
        super().__init__()
        self.config = cfg
        d = cfg.d_model
        self.embed_rtg = nn.Linear(1, d)
        self.embed_state = nn.Linear(cfg.state_dim, d)
        self.embed_action = nn.Embedding(N_ACTIONS + 1, d)  # + UNKNOWN_ACTION
        self.embed_step = nn.Parameter(torch.zeros(1, cfg.context, 1, d))
        self.embed_type = nn.Parameter(torch.zeros(1, 1, 3, d))
        nn.init.normal_(self.embed_step, std=0.02)
        nn.init.normal_(self.embed_type, std=0.02)
        self.embed_ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(d)
        self.action_head = nn.Linear(d, N_ACTIONS)

    def forward(self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        B, T, _ = states.shape
        if T > self.config.context:
            raise FlagcoreError(f"window of {T} steps exceeds the CGDT context {self.config.context}")
        tok = torch.stack(
            [self.embed_rtg(rtg[..., None]), self.embed_state(states), self.embed_action(actions)], dim=2
        )  # (B, T, 3, d): R_t, s_t, a_t
        tok = tok + self.embed_step[:, :T] + self.embed_type
        x = self.drop(self.embed_ln(tok.reshape(B, 3 * T, -1)))  # (B, 3T, d) interleaved
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x).view(B, T, 3, -1)[:, :, 1]  # (B, T, d) at the state tokens
        return self.action_head(x)  # (B, T, 3)


class CGDT(nn.Module):
    """Policy + critic + the training statistics inference needs (all saved as tensors)."""

    def __init__(self, cfg: CGDTConfig):
        super().__init__()
        self.config = cfg
        self.policy = DecisionTransformer(cfg)
        self.critic = Critic(cfg)
        self.register_buffer("rtg_mean", torch.zeros(()))
        self.register_buffer("rtg_std", torch.ones(()))
        self.register_buffer("target_rtg", torch.zeros(()))  # standardised inference target
        self.register_buffer("class_weight", torch.ones(N_ACTIONS))
        self.info: dict = {}  # training provenance, saved in the checkpoint header

    def forward(self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Standardised rtg (B, T), states (B, T, D), actions (B, T) long -> logits (B, T, 3)."""
        return self.policy(rtg, states, actions)


# ----------------------------------------------------------------------------- data


def market_returns(close: np.ndarray, vol_span: int = 168) -> np.ndarray:
    """``log(close_{t+1}/close_t) / sigma_t`` per bar (0 at the last bar): a long position's reward.

    NaN at the first bars, where no causal volatility exists yet (see ``labels.ewm_volatility``);
    a zero volatility (constant prices) is replaced by the largest one seen.
    """
    from flagcore.data.labels import ewm_volatility

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
    logits: torch.Tensor, rtg: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, tau: float,
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


def train_cgdt(
    train: Dataset, config: CGDTConfig = CGDTConfig(), progress: Callable[[int, int], None] | None = None,
) -> CGDT:
    """Fit the critic, then the policy, on ``train``; returns an eval-mode CGDT on the CPU.

    ``progress(done, total)`` is called after each epoch (critic epochs, then policy epochs).
    """
    cfg = config
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
    t0 = time.perf_counter()
    K = cfg.context
    R, valid = rewards_to_go(train.close, train.labels, cfg.horizon, cfg.vol_span)
    # windows of K consecutive valid bars, by their first bar
    ok = np.concatenate([[0], np.cumsum(valid)])
    starts = np.flatnonzero(ok[K:] - ok[:-K] == K)
    if starts.size == 0 or valid.sum() < 100:
        raise FlagcoreError(
            f"{src}: only {int(valid.sum())} bars with a full {cfg.horizon}-bar return-to-go "
            f"({starts.size} windows of {K}); too few to train CGDT"
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed)
        model = CGDT(cfg)
        X = torch.as_tensor(train.features, dtype=torch.float32)  # (n, D)
        A = torch.as_tensor(np.where(valid, train.labels, 1).astype(np.int64))  # (n,)
        Rv = R[valid]
        mean, std = float(Rv.mean()), float(Rv.std()) or 1.0
        Z = torch.as_tensor(np.where(valid, (np.nan_to_num(R) - mean) / std, 0.0), dtype=torch.float32)
        counts = np.bincount(train.labels[valid].astype(np.int64), minlength=N_ACTIONS)
        if (counts == 0).any():
            missing = [CLASS_NAMES[i] for i in range(N_ACTIONS) if counts[i] == 0]
            raise FlagcoreError(f"{src}: no {', '.join(missing)} label among the usable bars")
        share = counts / counts.sum()
        weight = 1.0 / (N_ACTIONS * share) if cfg.balance_classes else np.ones(N_ACTIONS)
        model.rtg_mean.fill_(mean)
        model.rtg_std.fill_(std)
        model.class_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        total = cfg.critic_epochs + cfg.epochs
        history: list[dict] = []

        # 1. critic: Gaussian NLL on (s_t, a, R_t(a)); "counterfactual": every action at every
        # bar, R_t(a) = R_t + (p(a) - p(a_t)) * m_t (our orders do not move the market)
        RA, _ = action_returns(train.close, train.labels, cfg.horizon, cfg.vol_span)  # (n, 3)
        ZA = torch.as_tensor(np.nan_to_num((RA - mean) / std).reshape(-1), dtype=torch.float32)
        if cfg.critic_data == "counterfactual":
            idx = torch.as_tensor(np.flatnonzero(np.repeat(valid, N_ACTIONS)))  # 3t + a
        else:
            idx = torch.as_tensor(np.flatnonzero(valid)) * N_ACTIONS + A[torch.as_tensor(valid)]
        SA = torch.arange(N_ACTIONS).repeat(X.shape[0])  # (3n,) action of index 3t + a
        critic = model.critic.train()
        opt = torch.optim.AdamW(critic.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        bs = 4 * cfg.batch_size
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
            MU, SIG = critic.all_actions(X)  # (n, 3) each, frozen guidance

        # 2. policy: weighted CE + lambda * asymmetric critic guidance
        policy = model.policy.train()
        opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        starts_t = torch.as_tensor(starts)
        per_epoch = starts.size if cfg.windows_per_epoch == 0 else min(cfg.windows_per_epoch, starts.size)
        steps = cfg.epochs * math.ceil(per_epoch / cfg.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.1
        )
        cw = model.class_weight
        offs = torch.arange(K)
        for epoch in range(cfg.epochs):
            perm = starts_t[torch.randperm(starts_t.numel(), generator=g)[:per_epoch]]
            sums = np.zeros(3)
            for s in range(0, perm.numel(), cfg.batch_size):
                rows = perm[s : s + cfg.batch_size, None] + offs  # (B, K) bar indices
                a = A[rows]  # (B, K) behaviour actions
                z = Z[rows]  # (B, K) standardised RTG
                if cfg.rtg_noise > 0:
                    z = z + cfg.rtg_noise * torch.randn(z.shape, generator=g)
                if cfg.action_tokens == "policy":  # the policy's own greedy actions, no gradient
                    policy.eval()
                    with torch.no_grad():
                        own = policy(z, X[rows], torch.full_like(a, UNKNOWN_ACTION)).argmax(-1)
                    policy.train()
                else:
                    own = a
                shown = torch.where(
                    torch.rand(a.shape, generator=g) < cfg.action_dropout, UNKNOWN_ACTION, own
                )
                logits = policy(z, X[rows], shown)  # (B, K, 3)
                ce = F.cross_entropy(logits.reshape(-1, N_ACTIONS), a.reshape(-1), weight=cw)
                guide = guidance_loss(logits, z, MU[rows], SIG[rows], cfg.asymmetry)
                loss = ce + cfg.guidance_weight * guide
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                opt.step()
                sched.step()
                parts = [float(loss.detach()), float(ce.detach()), float(guide.detach())]
                sums += rows.shape[0] * np.array(parts)
            sums /= max(perm.numel(), 1)
            history.append({"stage": "policy", "epoch": epoch + 1, "loss": float(sums[0]),
                            "ce": float(sums[1]), "guidance": float(sums[2]),
                            "seconds": round(time.perf_counter() - t0, 2)})
            if progress:
                progress(cfg.critic_epochs + epoch + 1, total)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        zv = np.sort((Rv - mean) / std)
        if cfg.rtg_quantile is not None:
            target = float(np.quantile(zv, cfg.rtg_quantile))
            calibration = None
        else:
            cal = X[-min(cfg.calibration_bars, X.shape[0]) :]
            target, calibration = _calibrate_target(model, cal, zv, cfg.hold_share)
        model.target_rtg.fill_(target)
    model.info = {
        "train_source": train.source,
        "train_content_hash": train.content_hash,
        "feature_names": list(train.feature_names),
        "usable_bars": int(valid.sum()),
        "windows": int(starts.size),
        "windows_per_epoch": int(per_epoch),
        "behaviour_shares": {c: float(share[i]) for i, c in enumerate(CLASS_NAMES)},
        "rtg_mean": mean,
        "rtg_std": std,
        "target_rtg": float(model.target_rtg) * std + mean,
        "target_quantile": float(np.searchsorted(zv, float(model.target_rtg), side="right") / zv.size),
        "calibration": calibration,
        "history": history,
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    return model


# ----------------------------------------------------------------------------- inference


def _window_logits(
    net: CGDT, X: torch.Tensor, acts: torch.Tensor, ends: torch.Tensor, target: torch.Tensor, bs: int,
) -> torch.Tensor:
    """Logits for bars ``ends`` (each >= K-1) from full windows, the earlier actions from ``acts``."""
    K = net.config.context
    rows = ends[:, None] - (K - 1) + torch.arange(K)  # (m, K)
    out = torch.empty((ends.numel(), N_ACTIONS))
    for s in range(0, ends.numel(), bs):
        r = rows[s : s + bs]
        a = acts[r].clone()
        a[:, -1] = UNKNOWN_ACTION  # a_t comes after s_t: invisible to it, filled for shape
        out[s : s + r.shape[0]] = net(target.expand(r.shape), X[r], a)[:, -1]
    return out


def _predict_features(
    net: CGDT, X: torch.Tensor, target: torch.Tensor, batch_size: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """(logits (n, 3), short_history (n,)) of the autoregressive policy on features X (n, D)."""
    K = net.config.context
    n = X.shape[0]
    acts = torch.full((n,), UNKNOWN_ACTION, dtype=torch.long)
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

    # bars K-1 .. n-1: fixed-point iteration of a_t = argmax f(a_{t-K+1} .. a_{t-1}, states)
    ends = torch.arange(K - 1, n)
    dirty = torch.ones(ends.numel(), dtype=torch.bool)
    rounds, limit = 0, ends.numel() + 2
    while True:
        while dirty.any():
            rounds += 1
            if rounds > limit:  # cannot happen: each round settles at least the first dirty bar
                raise FlagcoreError(f"CGDT prediction did not settle after {limit} rounds")
            todo = ends[dirty]
            new = _window_logits(net, X, acts, todo, target, batch_size).argmax(-1)
            changed = torch.zeros(n)
            changed[todo] = (new != acts[todo]).float()
            acts[todo] = new
            dirty = _affected(changed, K)[K - 1 :]
        # final pass in a fixed batch layout: the logits do not depend on the iteration path
        final = _window_logits(net, X, acts, ends, target, batch_size)
        new = final.argmax(-1)
        if torch.equal(new, acts[K - 1 :]):
            break
        changed = torch.zeros(n)  # a last-bit difference flipped a near-tie: settle it again
        changed[K - 1 :] = (new != acts[K - 1 :]).float()
        acts[K - 1 :] = new
        dirty = _affected(changed, K)[K - 1 :]
    logits[K - 1 :] = final
    if progress:
        progress(n, n)
    return logits, short


@torch.inference_mode()
def predict_cgdt(
    model: CGDT, ds: Dataset, progress: Callable[[int, int], None] | None = None, *,
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
    logits, short = _predict_features(net, X, net.target_rtg, batch_size, progress)
    return from_logits(logits.numpy(), short, cfg.context)


@torch.inference_mode()
def _calibrate_target(net: CGDT, X: torch.Tensor, zv: np.ndarray, hold_share: float) -> tuple[float, dict]:
    """The standardised target at which the policy holds ``hold_share`` of the bars X, by bisection.

    The HOLD share falls as the target rises (a high return is what acting earns), so bisection
    between the 1% and 99% quantiles of the training RTGs ``zv``; 10 steps.
    """
    def share(z: float) -> float:
        logits, _ = _predict_features(net, X, torch.tensor(z, dtype=torch.float32))
        return float((logits.argmax(-1) == 1).float().mean())

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


# ----------------------------------------------------------------------------- checkpoints


def save_cgdt(model: CGDT, path: str | os.PathLike) -> Path:
    """Write ``model`` as one safetensors file with a JSON header, atomically."""
    if not isinstance(model, CGDT):
        raise FlagcoreError(f"save_cgdt expects a CGDT model, got {type(model).__name__}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    header = {
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "meta": json.dumps({"class_order": list(CLASS_NAMES), "info": model.info}),
    }
    return write_safetensors(tensors, path, header)


def load_cgdt(path: str | os.PathLike) -> CGDT:
    """A CGDT saved by ``save_cgdt``, in eval mode; any other file is refused with FlagcoreError."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.exists():
        raise FlagcoreError(f"{p}: no such CGDT checkpoint")
    if p.is_dir():
        raise FlagcoreError(f"{p}: is a folder, expected a CGDT .safetensors file")
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FlagcoreError(
            f"{p}: not a CGDT checkpoint (not a readable safetensors file: {first})"
        ) from None
    if header.get("format") != FORMAT:
        raise FlagcoreError(
            f"{p}: not a CGDT checkpoint (header format {header.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        cfg = CGDTConfig.from_dict(json.loads(header["config"]))
        meta = json.loads(header.get("meta", "{}"))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise FlagcoreError(f"{p}: CGDT header is damaged ({type(e).__name__}: {e})") from None
    except FlagcoreError as e:
        raise FlagcoreError(f"{p}: {e}") from None
    if tuple(meta.get("class_order", CLASS_NAMES)) != CLASS_NAMES:
        raise FlagcoreError(f"{p}: class order {meta.get('class_order')} differs from {list(CLASS_NAMES)}")
    model = CGDT(cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise FlagcoreError(f"{p}: tensors do not match the CGDT architecture ({what})")
    for k, v in expected.items():
        t = tensors[k]
        if tuple(t.shape) != tuple(v.shape) or t.dtype != v.dtype:
            raise FlagcoreError(
                f"{p}: tensor {k!r} is {t.dtype} {tuple(t.shape)}, expected {v.dtype} {tuple(v.shape)}"
            )
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise FlagcoreError(f"{p}: tensor {k!r} holds NaN or infinite values")
    model.load_state_dict(tensors, strict=True)
    model.info = dict(meta.get("info", {}))
    for q in model.parameters():
        q.requires_grad_(False)
    return model.eval()


def describe_cgdt(model: CGDT) -> dict:
    """Config, parameter counts and the inference target, for reports."""
    n_pol = sum(p.numel() for p in model.policy.parameters())
    n_cri = sum(p.numel() for p in model.critic.parameters())
    return {
        "config": model.config.to_dict(),
        "policy_params": n_pol,
        "critic_params": n_cri,
        "target_rtg": float(model.target_rtg * model.rtg_std + model.rtg_mean),
        "class_weight": [float(w) for w in model.class_weight],
    }
