"""The int8 CPU inference network: FLAG-TRADER's merged weights with int8 matrix products.

Built from a merged network (``flag_trader.merged_copy``: LoRA folded into the base weights first,
then quantised), it computes what ``FlagTrader.last_logits`` and ``padded_last_logits`` compute,
with every block's Linear layers as int8 matrix products (oneDNN, dynamic quantisation):

    states (B, T, state_dim) -> embed (float32)                                   (B, T, d)
    -> blocks 1 .. L-1: qkv = int8(x) (B, T, 3d) -> attention (float32) -> int8 out_proj
       x = norm1(x + attn); x = norm2(x + int8 ffn.3(gelu(int8 ffn.0(x))))         (B, T, d)
    -> block L: k, v for all T positions (one int8 (d, 2d) product), q, out_proj, ffn and norms
       for the last position only                                                  (B, 1, d)
    -> output_norm -> action_head (float32)                                        (B, 3)

q, k and v are one Linear (one activation quantisation and one wide product instead of three).
Weights are int8 per output channel (symmetric, scale = the row's largest |w| / 127), packed for
oneDNN's products (``ENGINE``). Activations are quantised on the fly to 7 bits per tensor
(reduce_range, so that AVX2's u8 x s8 pair sums cannot saturate: 8 bits gave 5x the error).
Before quantising, each activation column j is divided by a smoothing factor s_j and the weight's
column j multiplied by it (W x = (W diag(s)) (x / s)): s_j = sqrt(r_j / mean r) with r_j the
column's reach, known from the weights alone (|gamma_j| + |beta_j| after a LayerNorm;
sqrt(sum_k W_jk^2 r_k^2) + |b_j| after the Linear that feeds out_proj and ffn.3), so that the few
wide channels no longer set the whole tensor's scale (SmoothQuant's migration with alpha = 1/2,
without calibration data). The rest (embedding, attention, GELU, norms, the head) is float32 as in
``FlagTrader``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from flagcore.models.flag_trader import Block, FlagTrader, at_positions, attend, padding_mask

# int8 logits are cached under pipeline.inference_cache.INT8_SETTINGS, whose version (v3: this
# network on oneDNN; v1: torch's quantize_dynamic of each Linear) must be raised whenever a change
# here, or inference.BATCH_SIZE["int8"], changes int8 logits

# the quantized engine whose products the weights are packed for. oneDNN's int8 products on one
# thread per batch (inference.predict) ran 2.3-2.5x float32 on a 2-core AVX2 EPYC against fbgemm's
# 1.7-1.8x (the full preset, batches of 8-32, interleaved rounds): fbgemm gained nothing from one
# thread per batch. On a 2-core Zen 4 EPYC with AVX-512 VNNI: 3.6-4.5x (two runs). A build without oneDNN
# packs for its default engine.
ENGINE = "onednn" if "onednn" in torch.backends.quantized.supported_engines else None


@contextmanager
def packing_engine() -> Iterator[str]:
    """Inside: torch's quantized engine is ``ENGINE`` (prepacking reads it), restored on exit."""
    before = torch.backends.quantized.engine
    if ENGINE is not None:
        torch.backends.quantized.engine = ENGINE
    try:
        yield torch.backends.quantized.engine
    finally:
        torch.backends.quantized.engine = before


def smoothing(reach: torch.Tensor) -> torch.Tensor:
    """Per-column factors s (in,) that even out the columns' reach: sqrt(r / mean r), floored at 1e-3."""
    r = reach.detach().float().clamp_min(1e-6)
    return (r / r.mean()).sqrt().clamp_min(1e-3)


class Int8Linear(nn.Module):
    """y = W x + b with W int8 per output channel and x quantised per tensor on the fly.

    ``smooth`` (in,): x is divided by it before quantisation and W's columns multiplied by it.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, smooth: torch.Tensor | None = None):
        super().__init__()
        w = weight.detach().float()  # (out, in)
        self.inv_smooth = None if smooth is None else 1.0 / smooth.float()  # (in,)
        if smooth is not None:
            w = w * smooth[None, :]
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()  # (out,)
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        # quantized tensors are deprecated in favour of torchao, whose CPU int8 path needs torch.compile
        # and one more dependency; the prepacked products still work and are what we measured
        with warnings.catch_warnings(), packing_engine() as engine:
            warnings.simplefilter("ignore")
            wq = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
            # the packed weight carries its engine: linear_dynamic runs that engine's product
            self.packed = torch.ops.quantized.linear_prepack(wq, bias.detach().float().contiguous())
        self.engine = engine
        self.out_features = w.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if self.inv_smooth is not None:
            x = x * self.inv_smooth
        return torch.ops.quantized.linear_dynamic(x, self.packed, True)  # reduce_range: 7-bit activations


def fused(
    *linears: nn.Linear, smooth: torch.Tensor | None = None, divide_last: torch.Tensor | None = None
) -> Int8Linear:
    """One Int8Linear computing the Linears side by side: (..., in) -> (..., sum of outs).

    ``divide_last`` (out,): the last Linear's outputs come out divided by it (its rows and bias are).
    """
    weights: list[torch.Tensor] = [m.weight for m in linears]  # (out, in) each
    biases: list[torch.Tensor] = [m.bias for m in linears]
    if divide_last is not None:
        weights[-1], biases[-1] = weights[-1] / divide_last[:, None], biases[-1] / divide_last
    return Int8Linear(torch.cat(weights), torch.cat(biases), smooth)  # (sum outs, in), (sum outs,)


def norm_reach(norm: nn.LayerNorm) -> torch.Tensor:
    """How far a LayerNorm's output columns reach: |gamma| + |beta| (its inputs have unit variance)."""
    return norm.weight.abs() + norm.bias.abs()


def out_reach(linear: nn.Linear, reach: torch.Tensor) -> torch.Tensor:
    """How far a Linear's output columns reach, of inputs reaching ``reach``: sqrt(W^2 r^2) + |b|."""
    return (linear.weight.square() @ reach.square()).sqrt() + linear.bias.abs()


class Int8Block(nn.Module):
    """A post-LN block with int8 products; ``last`` computes one position's output (B, 1, d).

    ``reach`` (d,): how far the block's input columns reach (``smoothing``).
    """

    def __init__(self, block: Block, reach: torch.Tensor, last: bool):
        super().__init__()
        att = block.attention
        ffn0, ffn3 = cast(nn.Linear, block.ffn[0]), cast(nn.Linear, block.ffn[3])
        self.num_heads = att.num_heads
        s_in = smoothing(reach)
        # the last block: keys and values of every position (d -> 2d), the query of one (d -> d);
        # the others: q, k and v of every position in one product (d -> 3d)
        # out_proj's input columns: v's outputs averaged over positions. Smoothed for free: v comes
        # out of qkv already divided by s_out (softmax(.) (v / s) = y / s), out_proj's columns times s_out
        s_out = smoothing(out_reach(att.v_proj, reach))
        self.q = fused(att.q_proj, smooth=s_in) if last else None
        projections = (att.k_proj, att.v_proj) if last else (att.q_proj, att.k_proj, att.v_proj)
        self.qkv = fused(*projections, smooth=s_in, divide_last=s_out)
        self.out_proj = Int8Linear(att.out_proj.weight * s_out[None, :], att.out_proj.bias)
        self.norm1, self.norm2 = block.norm1, block.norm2
        self.ffn0 = fused(ffn0, smooth=smoothing(norm_reach(block.norm1)))
        # ffn.3's input columns: the gelu of ffn.0's outputs
        self.ffn3 = fused(ffn3, smooth=smoothing(out_reach(ffn0, norm_reach(block.norm1))))

    def forward(
        self, x: torch.Tensor, keys: torch.Tensor | None = None, at: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        H = self.num_heads
        if self.q is not None:  # the last block
            residual = at_positions(x, at)  # (B, 1, d)
            q = self.q(residual)  # (B, 1, d)
            k, v = self.qkv(x).split(C, dim=2)  # (B, T, d) each
        else:
            residual = x
            q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, d) each
        Tq = q.shape[1]
        q = q.reshape(B, Tq, H, C // H).transpose(1, 2)  # (B, H, Tq, hd)
        k = k.reshape(B, T, H, C // H).transpose(1, 2)  # (B, H, T, hd)
        v = v.reshape(B, T, H, C // H).transpose(1, 2)
        y = attend(q, k, v, keys).transpose(1, 2).reshape(B, Tq, C)  # (B, Tq, d)
        x = self.norm1(residual + self.out_proj(y))
        return self.norm2(x + self.ffn3(F.gelu(self.ffn0(x))))


class Int8FlagTrader(nn.Module):
    """``FlagTrader``'s last-position logits with int8 matrix products in the blocks (CPU only).

    ``net`` must be a merged float32 network on the CPU (``merged_copy``); it is left untouched.
    """

    def __init__(self, net: FlagTrader):
        super().__init__()
        self.config, self.net = net.config, net  # the embedding, output norm and head stay float32
        blocks = [cast(Block, b) for b in net.transformer_blocks]
        # each block's input: the previous block's norm2 output; the first block's, the embedding
        reach = [torch.ones(net.config.d_model)] + [norm_reach(b.norm2) for b in blocks[:-1]]
        self.blocks = nn.ModuleList(
            Int8Block(b, reach[i], last=i == len(blocks) - 1) for i, b in enumerate(blocks)
        )

    def _logits(self, x: torch.Tensor, keys: torch.Tensor | None, at: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, keys, at)  # the last block: (B, 1, d)
        return self.net.action_head(self.net.output_norm(x)[:, -1])  # (B, action_dim)

    def last_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Logits (B, action_dim) at the last position of full windows (B, T, state_dim)."""
        return self._logits(self.net.embed(states), None, None)

    def padded_last_logits(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, action_dim) of right-padded windows, each at its own last real bar
        (``FlagTrader.padded_last_logits``)."""
        keys, at = padding_mask(states, lengths)
        return self._logits(self.net.embed(states), keys, at)
