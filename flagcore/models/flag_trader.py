"""FLAG-TRADER: a post-LN transformer over windows of market features, with LoRA by peft.

The network follows ../shared/reference/reviewed-model.md exactly, so that the reviewed team's
checkpoints load into it (see checkpoint.py). Class order: 0 = SELL, 1 = HOLD, 2 = BUY.

    states (B, T, state_dim) -> state_embedding + pos_embedding[:, :T]      (B, T, d_model)
    -> num_layers x Block: x = norm1(x + attn(x)); x = norm2(x + ffn(x))     (B, T, d_model)
    -> output_norm -> action_head                                            (B, T, 3)

The action is read at the last position (``last_logits``); windows shorter than the model's,
right-padded to one length, are read at each one's last real bar with the padded keys masked out
(``padded_last_logits``). LoRA sits on the six Linear layers of every block
(q, k, v, out, ffn.0, ffn.3); everything else that the reviewed code trains is unfrozen directly.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model

from flagcore.errors import FlagcoreError

# the config, presets and counts live apart, without torch (the dashboard reads them); imported
# here as they always were
from flagcore.models.flag_trader_config import (
    LORA_TARGETS,
    NON_LORA_TRAINABLE,
    PRESETS,  # noqa: F401 - re-exported
    FlagTraderConfig,
    flops_per_window,
    parameter_counts,  # noqa: F401 - re-exported
    preset,  # noqa: F401 - re-exported
    preset_table,  # noqa: F401 - re-exported
)
from flagcore.vocab import CLASS_NAMES


def at_positions(x: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, C): each window's position ``at[b]`` of ``x`` (B, T, C); None: the last position."""
    return x[:, -1:] if at is None else x[torch.arange(x.shape[0], device=x.device), at][:, None]


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor | None = None, dropout: float = 0.0
) -> torch.Tensor:
    """softmax(QK^T / sqrt(hd)) V over (B, H, Tq, hd) queries and (B, H, T, hd) keys and values,
    with ``dropout`` on the probabilities; ``keys`` (B, T) bool marks the real positions (None: all)."""
    mask = None if keys is None else keys[:, None, None, :]  # (B, 1, 1, T), True = attend
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, Tq, hd)


def padding_mask(states: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, at) of right-padded windows ``states`` (B, T, ...) holding ``lengths`` (B,) real bars:
    keys (B, T) bool, True at real bars; at (B,) long, each window's last real position."""
    B, T = states.shape[:2]
    if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > T:
        raise FlagcoreError(f"lengths must be {B} values in [1, {T}]")
    keys = torch.arange(T, device=states.device)[None, :] < lengths[:, None].to(states.device)
    return keys, (lengths - 1).to(states.device)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention with four separate projections."""

    def __init__(self, cfg: FlagTraderConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.dropout = cfg.dropout
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.k_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.v_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(
        self,
        x: torch.Tensor,
        last_only: bool = False,
        keys: torch.Tensor | None = None,
        at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``keys`` (B, T) bool: the real positions, padded keys are ignored (None: all real).
        ``at`` (B,) long: with ``last_only``, the position whose query is kept (None: the last)."""
        B, T, C = x.shape
        H = self.num_heads
        xq = at_positions(x, at) if last_only else x  # the last position's query suffices for its output
        Tq = xq.shape[1]
        q = self.q_proj(xq).view(B, Tq, H, C // H).transpose(1, 2)  # (B, H, Tq, hd)
        k = self.k_proj(x).view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, hd)
        v = self.v_proj(x).view(B, T, H, C // H).transpose(1, 2)
        y = attend(q, k, v, keys, self.dropout if self.training else 0.0)  # (B, H, Tq, hd)
        y = y.transpose(1, 2).reshape(B, Tq, C)
        return self.out_proj(y)


class Block(nn.Module):
    """Post-LN transformer block: x = norm1(x + attn(x)); x = norm2(x + ffn(x))."""

    def __init__(self, cfg: FlagTraderConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_dim),  # ffn.0
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ff_dim, cfg.d_model),  # ffn.3
            nn.Dropout(cfg.dropout),
        )
        self.norm2 = nn.LayerNorm(cfg.d_model)

    def forward(
        self,
        x: torch.Tensor,
        last_only: bool = False,
        keys: torch.Tensor | None = None,
        at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        residual = at_positions(x, at) if last_only else x
        x = self.norm1(residual + self.attention(x, last_only, keys, at))
        return self.norm2(x + self.ffn(x))


class FlagTrader(nn.Module):
    """The FLAG-TRADER network without adapters: logits at every position."""

    def __init__(self, cfg: FlagTraderConfig):
        super().__init__()
        self.config = cfg
        self.state_embedding = nn.Linear(cfg.state_dim, cfg.d_model)
        self.pos_embedding = nn.Parameter(torch.zeros(1, cfg.max_length, cfg.d_model))
        nn.init.normal_(self.pos_embedding, std=0.02)
        self.transformer_blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.output_norm = nn.LayerNorm(cfg.d_model)
        self.action_head = nn.Linear(cfg.d_model, cfg.action_dim)
        self.return_head = nn.Linear(cfg.d_model, 1) if cfg.return_head else None

    def embed(self, states: torch.Tensor) -> torch.Tensor:
        """The blocks' input (B, T, d_model) of ``states`` (B, T, state_dim), checked against the config."""
        B, T, D = states.shape
        if self.config.state_dim != D:
            raise FlagcoreError(f"model expects {self.config.state_dim} features per bar, got {D}")
        if self.config.max_length < T:
            raise FlagcoreError(f"window of {T} bars exceeds the model's max_length {self.config.max_length}")
        return self.state_embedding(states) + self.pos_embedding[:, :T]  # (B, T, d_model)

    def hidden(self, states: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Output-normed hidden states (B, T, d_model), the input of the heads.

        ``last_only`` returns (B, 1, d_model) for the last position, the same values as
        ``hidden(states)[:, -1:]``: earlier blocks still attend over the whole window, but the
        last block computes its query, feed-forward and norms for the last position alone.
        """
        x = self.embed(states)  # (B, T, d_model)
        last = len(self.transformer_blocks) - 1
        for i, block in enumerate(self.transformer_blocks):
            x = block(x, last_only=last_only and i == last)
        return self.output_norm(x)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.action_head(self.hidden(states))  # (B, T, action_dim)

    def last_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Logits at the last position only, (B, action_dim): where the action is read."""
        return self.action_head(self.hidden(states, last_only=True)[:, -1])

    def padded_last_logits(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, action_dim) of windows of unequal length, each at its own last real bar.

        ``states`` (B, T, state_dim) holds window b's ``lengths[b]`` bars at positions
        0 .. lengths[b]-1 and padding after them (right padding), so every real bar keeps the
        position embedding the unpadded window gives it; padded keys are masked out of attention
        and padded positions never reach a real one. Equals ``last_logits(states[b:b+1, :lengths[b]])``
        for every b up to float rounding.
        """
        keys, at = padding_mask(states, lengths)  # (B, T) real bars, (B,) last real positions
        x = self.embed(states)  # (B, T, d_model)
        last = len(self.transformer_blocks) - 1
        for i, block in enumerate(self.transformer_blocks):
            x = block(x, last_only=i == last, keys=keys, at=at)  # the last block: (B, 1, d_model)
        return self.action_head(self.output_norm(x)[:, -1])  # (B, action_dim)


def lora_config(cfg: FlagTraderConfig) -> LoraConfig:
    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]  # peft takes a float alpha too
        target_modules=list(LORA_TARGETS),
        lora_dropout=0.0,
        bias="none",
    )


def add_lora(network: FlagTrader) -> PeftModel:
    """Wrap a network with peft LoRA and unfreeze the non-LoRA trainables the reviewed code trains.

    peft's ``modules_to_save`` would keep a frozen copy beside a trainable one and count those
    parameters twice, so the norms, embeddings and head are unfrozen in place instead.
    """
    model = get_peft_model(network, lora_config(network.config))
    for name, param in model.named_parameters():
        if "lora_" not in name and any(part in name.split(".") for part in NON_LORA_TRAINABLE):
            param.requires_grad_(True)
    return model


def build_model(cfg: FlagTraderConfig, seed: int | None = 0) -> PeftModel:
    """A freshly initialised FLAG-TRADER with LoRA adapters (B = 0, so it equals its base)."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return add_lora(FlagTrader(cfg))
    return add_lora(FlagTrader(cfg))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts, each shared tensor counted once."""
    total = trainable = 0
    for p in model.parameters():  # parameters() already yields each tensor once
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def base_network(model: nn.Module) -> FlagTrader:
    net = model.get_base_model() if isinstance(model, PeftModel) else model
    if not isinstance(net, FlagTrader):
        raise FlagcoreError(f"expected a FLAG-TRADER model, got {type(net).__name__}")
    return net


def merged_copy(model: nn.Module) -> FlagTrader:
    """A plain network with the LoRA updates folded into the base weights, for inference.

    The model passed in is left untouched. W' = W + scaling * B A gives the same outputs as the
    adapter path with one matmul per Linear instead of three.
    """
    clone = copy.deepcopy(model)
    if isinstance(clone, PeftModel):
        clone = clone.merge_and_unload()
    net = base_network(clone)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def describe(model: nn.Module) -> dict:
    total, trainable = count_parameters(model)
    cfg = base_network(model).config
    return {
        "config": cfg.to_dict(),
        "total_params": total,
        "trainable_params": trainable,
        "frozen_params": total - trainable,
        "lora_scaling": cfg.lora_scaling,
        "head_dim": cfg.d_model // cfg.num_heads,
        "gflops_per_window": round(flops_per_window(cfg) / 1e9, 4),
        "classes": list(CLASS_NAMES),
    }
