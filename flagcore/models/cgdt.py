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
   The recursion is computed exactly, in batches: a sweep computes the next bar of each of up to
   32 stretches at once (each bar from its own stretch's actions already computed), then a
   fixed-point (Jacobi) iteration recomputes only the bars whose window of earlier actions changed
   since they were computed, until nothing changes. Bar t depends only on bars < t, so
   the fixed point is unique and equals the bar-by-bar recursion (``predict_cgdt_sequential``),
   whatever the first guess; each bar keeps the logits of its last computation, from its settled
   window (the logits equal the recursion's up to float rounding, 1e-6 in tests). Only the last
   step's state token is read, so inference computes that token alone in the last block
   (``last_logits``). The first K-1 bars have shorter windows (``short_history``), as in
   ``flagcore.models.inference``.

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

Where the code lives: this module holds the config and the networks; ``models.cgdt_file`` the
checkpoint format (``save_cgdt``, ``load_cgdt``, ``describe_cgdt``); ``models.cgdt_predict`` the
prediction with its fixed point (``predict_cgdt``); ``training.cgdt`` the rewards, the losses and
``train_cgdt``.

Determinism: training and prediction are deterministic for a fixed ``config.seed`` on one
machine and thread count (the global RNG is forked; every random draw comes from a seeded
generator or the forked RNG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from flagcore.errors import FlagcoreError
from flagcore.models.config_dict import ConfigDict
from flagcore.vocab import DIRECTION, N_CLASSES

POSITION = DIRECTION  # SELL, HOLD, BUY: short, flat, long
N_ACTIONS = N_CLASSES
UNKNOWN_ACTION = 3  # action-table row for "not shown": training dropout, first guess of the fixed point
ACTION_TOKENS = ("policy", "behaviour")
CRITIC_DATA = ("counterfactual", "behaviour")


@dataclass(frozen=True)
class CGDTConfig(ConfigDict):
    """The CGDT architecture, its training and its inference target (see the module docstring)."""

    ERROR_PREFIX: ClassVar[str] = "CGDT config"

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

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        B, L, C = x.shape
        H = self.num_heads
        if last_only:  # the last token's query alone: it sees every token, so no mask is needed
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, -1:], w[:C], b[:C]).view(B, 1, H, C // H).transpose(1, 2)  # (B, H, 1, hd)
            k, v = F.linear(x, w[C:], b[C:]).split(C, dim=2)
            k, v = (t.view(B, L, H, C // H).transpose(1, 2) for t in (k, v))  # (B, H, L, hd)
            # written out, not SDPA: with more than one thread SDPA's single-query kernel splits
            # the work by batch size, so a bar's bits would depend on how many bars shared its batch
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))  # (B, H, 1, L)
            y = att.softmax(-1) @ v  # (B, H, 1, hd)
            return self.proj(y.transpose(1, 2).reshape(B, 1, C))
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
            nn.Linear(cfg.d_model, cfg.ff_dim),
            nn.GELU(),
            nn.Linear(cfg.ff_dim, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L, d) -> (B, L, d); with ``last_only`` (inference) the last token's output alone, (B, 1, d)."""
        residual = x[:, -1:] if last_only else x
        x = residual + self.attn(self.ln1(x), last_only=last_only)
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

    def tokens(self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The embedded, interleaved input: (B, T) rtg, (B, T, D) states, (B, T) actions -> (B, 3T, d)."""
        B, T, _ = states.shape
        if self.config.context < T:
            raise FlagcoreError(f"window of {T} steps exceeds the CGDT context {self.config.context}")
        tok = torch.stack(
            [self.embed_rtg(rtg[..., None]), self.embed_state(states), self.embed_action(actions)], dim=2
        )  # (B, T, 3, d): R_t, s_t, a_t
        tok = tok + self.embed_step[:, :T] + self.embed_type
        return self.drop(self.embed_ln(tok.reshape(B, 3 * T, -1)))  # (B, 3T, d) interleaved

    def forward(self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        B, T, _ = states.shape
        x = self.tokens(rtg, states, actions)  # (B, 3T, d)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x).view(B, T, 3, -1)[:, :, 1]  # (B, T, d) at the state tokens
        return self.action_head(x)  # (B, T, 3)

    def last_logits(self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Logits at the last step's state token only, (B, 3): ``forward(...)[:, -1]`` up to rounding.

        Inference reads nothing else, so the last action token (after that state token, invisible
        to it under the causal mask) is left out, and the last block computes its query,
        feed-forward and norms for that one token: about 40% fewer operations per window.
        """
        x = self.tokens(rtg, states, actions)[:, :-1]  # (B, 3T-1, d): ends at s_T
        for block in self.blocks[:-1]:
            x = block(x)
        x = self.blocks[-1](x, last_only=True)  # (B, 1, d)
        return self.action_head(self.ln_f(x[:, 0]))  # (B, 3)


class CGDT(nn.Module):
    """Policy + critic + the training statistics inference needs (all saved as tensors)."""

    rtg_mean: torch.Tensor  # buffers, registered below
    rtg_std: torch.Tensor
    target_rtg: torch.Tensor
    class_weight: torch.Tensor

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

    def last_logits(self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The last step's logits only, (B, 3): what inference reads (``DecisionTransformer.last_logits``)."""
        return self.policy.last_logits(rtg, states, actions)
