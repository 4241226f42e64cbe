"""FLAG-TRADER's configuration, its presets, and what follows from a config alone: parameter counts
in closed form and forward FLOPs. No torch here, so the dashboard and the CLI can show the presets
without importing torch and peft (seconds on a cold server); ``flag_trader`` builds the networks.

Parameter counts, with d = d_model, f = ff_dim, s = state_dim, L = num_layers, a = action_dim,
M = max_length, r = lora_rank (every Linear has a bias, every LayerNorm a weight and a bias):

    base      = (s d + d) + M d + L (4 (d^2 + d) + (d f + f) + (f d + d) + 4 d) + 2 d + (d a + a) [+ d + 1]
    LoRA      = L (4 * 2 r d + 2 r (d + f))        # A (r x in) and B (out x r) on the six Linears
    total     = base + LoRA
    trainable = LoRA + everything in NON_LORA_TRAINABLE (embeddings, norms, heads)

``tests/test_model.py`` checks these equal the built model's counts for every preset.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from flagcore.errors import FlagcoreError
from flagcore.models.config_dict import ConfigDict

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "ffn.0", "ffn.3")
# Parameters the reviewed code trains besides LoRA; peft freezes them, we unfreeze them by name.
NON_LORA_TRAINABLE = (
    "state_embedding",
    "pos_embedding",
    "norm1",
    "norm2",
    "output_norm",
    "action_head",
    "return_head",
)


@dataclass(frozen=True)
class FlagTraderConfig(ConfigDict):
    state_dim: int = 60  # model inputs per bar; fewer real features are zero-padded on the right
    action_dim: int = 3  # SELL, HOLD, BUY
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 8
    ff_dim: int = 3072
    max_length: int = 256  # rows of the learned position table
    window: int = 64  # bars per inference window (<= max_length); the reviewed files do not record it
    lora_rank: int = 16
    lora_alpha: float = 16.0  # scaling alpha / r; the reviewed code fixes alpha = 16
    dropout: float = 0.1
    return_head: bool = False  # multi-task training: a second head predicts the forward return

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "return_head":
                if not isinstance(value, bool):
                    raise FlagcoreError(f"config: return_head must be true or false, got {value!r}")
            elif f.name == "dropout":
                if not 0.0 <= value < 1.0:
                    raise FlagcoreError(f"config: dropout must be in [0, 1), got {value!r}")
            elif f.name == "lora_alpha":
                if not value > 0:
                    raise FlagcoreError(f"config: lora_alpha must be > 0, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FlagcoreError(f"config: {f.name} must be a positive integer, got {value!r}")
        if self.d_model % self.num_heads:
            raise FlagcoreError(
                f"config: d_model {self.d_model} is not divisible by num_heads {self.num_heads}"
            )
        if self.window > self.max_length:
            raise FlagcoreError(f"config: window {self.window} exceeds max_length {self.max_length}")

    @property
    def lora_scaling(self) -> float:
        return self.lora_alpha / self.lora_rank


PRESETS: dict[str, FlagTraderConfig] = {
    # The reviewed model: 87,955,971 parameters, 2,938,371 trainable.
    "full": FlagTraderConfig(),
    # Small enough to train an epoch over the demo's five years of hourly bars in seconds on
    # 2 CPU cores, same structure: 60 -> 64, 2 layers, 4 heads, ff 256, window 32, r 8.
    "demo": FlagTraderConfig(
        d_model=64,
        num_layers=2,
        num_heads=4,
        ff_dim=256,
        max_length=64,
        window=32,
        lora_rank=8,
        lora_alpha=8.0,
    ),
}


def preset(name: str) -> FlagTraderConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise FlagcoreError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}") from None


def flops_per_window(cfg: FlagTraderConfig, seq_len: int | None = None) -> int:
    """Forward FLOPs (2 per multiply-add) of one window as inference computes it.

    Every block but the last runs all T positions; the last block needs keys and values for all
    of them but query, output projection and feed-forward for the last position only.
    """
    T = seq_len or cfg.window
    d, f = cfg.d_model, cfg.ff_dim
    full_block = 2 * T * (4 * d * d + 2 * d * f) + 2 * 2 * T * T * d  # linears + QK^T and PV
    last_block = 2 * T * 2 * d * d + 2 * (2 * d * d + 2 * d * f) + 2 * 2 * T * d
    return 2 * T * cfg.state_dim * d + (cfg.num_layers - 1) * full_block + last_block + 2 * d * cfg.action_dim


def parameter_counts(cfg: FlagTraderConfig) -> tuple[int, int]:
    """(total, trainable) parameters of ``build_model(cfg)`` in closed form, without building it.

    Parameters
    ----------
    cfg : the network's configuration.

    Returns
    -------
    The counts ``count_parameters(build_model(cfg))`` gives: see the module docstring for the formula.

    Examples
    --------
    >>> parameter_counts(PRESETS["full"])
    (87955971, 2938371)
    """
    d, f, s, a = cfg.d_model, cfg.ff_dim, cfg.state_dim, cfg.action_dim
    L, M, r = cfg.num_layers, cfg.max_length, cfg.lora_rank
    embed = s * d + d  # state_embedding
    pos = M * d  # pos_embedding
    norms = 2 * 2 * d  # norm1 and norm2 of a block
    block = 4 * (d * d + d) + (d * f + f) + (f * d + d) + norms  # q, k, v, out, ffn.0, ffn.3
    heads = 2 * d + (d * a + a) + ((d + 1) if cfg.return_head else 0)  # output_norm, action, return
    lora = L * (4 * 2 * r * d + 2 * r * (d + f))  # q, k, v, out: d -> d; ffn.0: d -> f; ffn.3: f -> d
    total = embed + pos + L * block + heads + lora
    trainable = lora + embed + pos + L * norms + heads
    return total, trainable


def preset_table() -> list[dict]:
    """One row per preset: architecture and parameter counts, for the CLI and the dashboard.

    The counts are closed form (``parameter_counts``), equal to the built models' without building
    them.
    """
    rows = []
    for name, cfg in PRESETS.items():
        total, trainable = parameter_counts(cfg)
        rows.append(
            {
                "preset": name,
                **{k: v for k, v in cfg.to_dict().items() if k != "dropout"},
                "total_params": total,
                "trainable_params": trainable,
                "gflops_per_window": round(flops_per_window(cfg) / 1e9, 4),
            }
        )
    return rows
