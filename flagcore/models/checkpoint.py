"""Checkpoints: flagcore's own format, and import of the reviewed system's torch files.

Our format is one safetensors file (or a folder holding ``model.safetensors``). Its tensors are the
peft model's state dict without the ``base_model.model.`` prefix; its header metadata holds, as
JSON, the architecture, the names of the real input features, the class order, which inputs are
zero padding and the training provenance. Save then load gives back identical tensors.

The reviewed system saves ``torch.save({'model': sd, 'config': {...}})``, ``{'model_state_dict': sd}``
or a bare ``sd``, with LoRA as ``<layer>.lora.lora_A`` (in x r) and ``<layer>.lora.lora_B`` (r x out)
beside ``<layer>.base.{weight,bias}``. peft stores the transposes as ``lora_A.default.weight`` (r x in)
and ``lora_B.default.weight`` (out x r). Such files are read with ``torch.load(weights_only=True)``
only: a file that needs more than tensors and plain values is refused, never unpickled.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from flagcore.data.tables import first_line
from flagcore.errors import FlagcoreError
from flagcore.models.file_id import file_sha256
from flagcore.models.flag_trader import FlagTraderConfig, base_network, build_model, count_parameters
from flagcore.models.safetensors_file import (
    CGDT_FORMAT,
    FLAG_TRADER_FORMAT,
    header_format,
    read_safetensors,
    write_safetensors,
)
from flagcore.vocab import CLASS_NAMES, N_CLASSES

FORMAT = FLAG_TRADER_FORMAT
WEIGHTS_FILE = "model.safetensors"
PEFT_PREFIX = "base_model.model."
# The reviewed code fixes LoRA's alpha at 16 whatever the rank.
REVIEWED_LORA_ALPHA = 16.0
REVIEWED_NUM_HEADS = 8  # num_heads does not follow from any tensor shape
DEFAULT_WINDOW = 64

_LORA_LAYER = r"transformer_blocks\.\d+\.(?:attention\.(?:q_proj|k_proj|v_proj|out_proj)|ffn\.[03])"


@dataclass
class CheckpointMeta:
    """What a checkpoint says about the data it expects and where it came from."""

    feature_names: list[str] = field(default_factory=list)  # real inputs, in model-input order
    padded_inputs: list[int] = field(default_factory=list)  # model inputs that are zero padding
    class_order: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "feature_names": list(self.feature_names),
            "padded_inputs": [int(i) for i in self.padded_inputs],
            "class_order": list(self.class_order),
            "provenance": self.provenance,
        }


@dataclass
class CheckpointInfo:
    path: str
    sha256: str
    source_format: str  # "flagcore", "reviewed:model", "reviewed:model_state_dict", "reviewed:bare"
    config: FlagTraderConfig
    meta: CheckpointMeta

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "source_format": self.source_format,
            "config": self.config.to_dict(),
            **self.meta.to_dict(),
        }


# ----------------------------------------------------------------------------- our format


def save_checkpoint(
    model: PeftModel,
    path: str | os.PathLike,
    *,
    feature_names: list[str] | None = None,
    padded_inputs: list[int] | None = None,
    provenance: dict | None = None,
) -> Path:
    """Write ``model`` in flagcore's format, atomically (a crash leaves no half-written file)."""
    if not isinstance(model, PeftModel):
        raise FlagcoreError("save_checkpoint expects a FLAG-TRADER model with LoRA (build_model)")
    cfg = base_network(model).config
    names = list(feature_names or [])
    if len(names) > cfg.state_dim:
        raise FlagcoreError(f"{len(names)} feature names for a model with state_dim {cfg.state_dim}")
    padded = sorted(int(i) for i in (padded_inputs or []))
    if any(not 0 <= i < cfg.state_dim for i in padded):
        raise FlagcoreError(f"padded_inputs must lie in [0, {cfg.state_dim}), got {padded}")
    meta = CheckpointMeta(names, padded, list(CLASS_NAMES), dict(provenance or {}))
    tensors = {_strip_prefix(k): v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    header = {
        "format": FORMAT,
        "config": json.dumps(cfg.to_dict()),
        "meta": json.dumps(meta.to_dict()),
    }
    path = Path(path)
    if path.is_dir() or path.suffix == "":
        path.mkdir(parents=True, exist_ok=True)
        path = path / WEIGHTS_FILE
    return write_safetensors(tensors, path, header)


def _strip_prefix(key: str) -> str:
    return key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key


def _read_flagcore(path: Path) -> tuple[dict, FlagTraderConfig, CheckpointMeta]:
    header, tensors = read_safetensors(path)
    if header.get("format") == CGDT_FORMAT:
        raise FlagcoreError(
            f"{path}: a CGDT checkpoint, not FLAG-TRADER (read it with flagcore.models.cgdt_file.load_cgdt)"
        )
    if header.get("format") != FORMAT:
        raise FlagcoreError(
            f"{path}: safetensors file without a flagcore header (format {header.get('format')!r})"
        )
    try:
        cfg = FlagTraderConfig.from_dict(json.loads(header["config"]))
        m = json.loads(header.get("meta", "{}"))
        meta = CheckpointMeta(
            feature_names=list(m.get("feature_names", [])),
            padded_inputs=[int(i) for i in m.get("padded_inputs", [])],
            class_order=list(m.get("class_order", CLASS_NAMES)),
            provenance=dict(m.get("provenance", {})),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise FlagcoreError(f"{path}: flagcore header is damaged ({first_line(e)})") from None
    if tuple(meta.class_order) != CLASS_NAMES:
        raise FlagcoreError(f"{path}: class order {meta.class_order} differs from {list(CLASS_NAMES)}")
    return tensors, cfg, meta


# ----------------------------------------------------------------------------- reviewed format


def _torch_load_weights_only(path: Path):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = first_line(e).split("Unsupported global:")[-1].strip()[:120]
        raise FlagcoreError(
            f"{path}: refused: the file needs full unpickling, which can run arbitrary code "
            f"({what}); only tensors and plain values are read"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, struct.error) as e:
        raise FlagcoreError(
            f"{path}: not a readable torch checkpoint, truncated or corrupt ({first_line(e)})"
        ) from None


def _unwrap_reviewed(obj, path: Path) -> tuple[dict, dict, str]:
    """(state_dict, container config, source format) from the three reviewed layouts."""
    if not isinstance(obj, dict):
        raise FlagcoreError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    if "model" in obj and isinstance(obj["model"], dict):
        sd, cfg, fmt = obj["model"], obj.get("config") or {}, "reviewed:model"
    elif "model_state_dict" in obj and isinstance(obj["model_state_dict"], dict):
        sd, cfg, fmt = obj["model_state_dict"], obj.get("config") or {}, "reviewed:model_state_dict"
    else:
        sd, cfg, fmt = obj, {}, "reviewed:bare"
    if not isinstance(cfg, dict):
        raise FlagcoreError(f"{path}: 'config' is a {type(cfg).__name__}, expected a dict")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise FlagcoreError(
            f"{path}: not a state dict: entry {bad[0]!r} is a {type(sd[bad[0]]).__name__}"
            + (f" (top-level keys: {', '.join(map(str, list(obj)[:6]))})" if fmt == "reviewed:bare" else "")
        )
    if not sd:
        raise FlagcoreError(f"{path}: the state dict is empty")
    return sd, cfg, fmt


def _reviewed_to_peft_keys(sd: dict) -> dict:
    """Rename the reviewed layout to peft's; LoRA factors are transposed."""
    out = {}
    for key, t in sd.items():
        key = _strip_prefix(key)
        m = re.fullmatch(rf"({_LORA_LAYER})\.(base|lora)\.(weight|bias|lora_A|lora_B)", key)
        if m is None:
            out[key] = t
            continue
        layer, part, name = m.groups()
        if part == "base" and name in ("weight", "bias"):
            out[f"{layer}.base_layer.{name}"] = t
        elif part == "lora" and name in ("lora_A", "lora_B"):
            # reviewed A: (in, r), B: (r, out); peft A.weight: (r, in), B.weight: (out, r)
            if t.dim() != 2:
                raise FlagcoreError(f"{key}: expected a matrix, got shape {tuple(t.shape)}")
            out[f"{layer}.{name}.default.weight"] = t.t().contiguous()
        else:
            out[key] = t  # reported as an unexpected key below
    return out


def _shape(sd: dict, key: str, path: Path, dims: int) -> tuple[int, ...]:
    if key not in sd:
        raise FlagcoreError(
            f"{path}: not a FLAG-TRADER checkpoint: tensor {key!r} is missing "
            f"(it has {len(sd)} tensors, e.g. {', '.join(list(sd)[:3])})"
        )
    shape = tuple(sd[key].shape)
    if len(shape) != dims:
        raise FlagcoreError(f"{path}: tensor {key!r} has shape {shape}, expected {dims} dimensions")
    return shape


def infer_config(
    sd: dict,
    container_config: dict,
    path: Path,
    num_heads: int | None = None,
    window: int | None = None,
) -> FlagTraderConfig:
    """The architecture from tensor shapes (peft key layout), checked against any stored config."""
    d_model, state_dim = _shape(sd, "state_embedding.weight", path, 2)
    _, max_length, d_pos = _shape(sd, "pos_embedding", path, 3)
    action_dim, _ = _shape(sd, "action_head.weight", path, 2)
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"transformer_blocks\.(\d+)\.", k))})
    if not blocks:
        raise FlagcoreError(f"{path}: not a FLAG-TRADER checkpoint: no transformer_blocks.* tensors")
    if blocks != list(range(len(blocks))):
        missing = sorted(set(range(blocks[-1] + 1)) - set(blocks))
        raise FlagcoreError(f"{path}: transformer block {missing[0]} is missing")
    ff_dim, _ = _shape(sd, "transformer_blocks.0.ffn.0.base_layer.weight", path, 2)
    lora_rank, _ = _shape(sd, "transformer_blocks.0.attention.q_proj.lora_A.default.weight", path, 2)
    if d_pos != d_model:
        raise FlagcoreError(f"{path}: pos_embedding width {d_pos} != state_embedding width {d_model}")
    heads = num_heads or int(container_config.get("num_heads", REVIEWED_NUM_HEADS))
    inferred: dict[str, Any] = {
        "state_dim": state_dim,
        "action_dim": action_dim,
        "max_length": max_length,
        "d_model": d_model,
        "num_layers": len(blocks),
        "ff_dim": ff_dim,
        "lora_rank": lora_rank,
    }
    aliases = {
        "hidden_dim": "d_model",
        "n_layers": "num_layers",
        "lora_r": "lora_rank",
        "dim_feedforward": "ff_dim",
        "ff": "ff_dim",
    }
    for key, value in container_config.items():
        name = aliases.get(key, key)
        if name in inferred and int(value) != inferred[name]:
            raise FlagcoreError(f"{path}: config says {key}={value} but the tensors give {inferred[name]}")
    if action_dim != N_CLASSES:
        raise FlagcoreError(f"{path}: action_head has {action_dim} outputs, expected 3 (SELL, HOLD, BUY)")
    alpha = float(container_config.get("lora_alpha", REVIEWED_LORA_ALPHA))
    win = window or int(container_config.get("window", min(DEFAULT_WINDOW, max_length)))
    return FlagTraderConfig(
        num_heads=heads,
        window=win,
        lora_alpha=alpha,
        dropout=float(container_config.get("dropout", 0.1)),
        **inferred,
    )


# ----------------------------------------------------------------------------- loading


def file_kind(path: Path) -> str:
    """ "safetensors" or "torch", judged by the first bytes; anything else is refused with one line."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise FlagcoreError(f"{path}: the file is empty")
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    # safetensors: an 8-byte little-endian header length, then the JSON header; checked before
    # the pickle opcode, since a header length can itself start with the byte 0x80
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch"
    raise FlagcoreError(f"{path}: neither a safetensors nor a torch checkpoint")


def is_cgdt(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a CGDT checkpoint (flagcore.models.cgdt), judged by its safetensors header."""
    p = Path(path)
    if not p.is_file() or file_kind(p) != "safetensors":
        return False
    return header_format(p) == CGDT_FORMAT


def _resolve(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS_FILE
        if not p.exists():
            raise FlagcoreError(f"{path}: folder has no {WEIGHTS_FILE}")
    elif not p.exists():
        raise FlagcoreError(f"{path}: no such checkpoint file")
    return p


def read_checkpoint(
    path: str | os.PathLike,
    *,
    num_heads: int | None = None,
    window: int | None = None,
) -> tuple[PeftModel, CheckpointInfo]:
    """Load either format into a FLAG-TRADER with LoRA (train mode untouched: caller decides)."""
    p = _resolve(path)
    kind = file_kind(p)
    if kind == "safetensors":
        sd, cfg, meta = _read_flagcore(p)
        if window is not None:
            cfg = FlagTraderConfig.from_dict({**cfg.to_dict(), "window": window})
        fmt = "flagcore"
    else:
        raw, container_cfg, fmt = _unwrap_reviewed(_torch_load_weights_only(p), p)
        sd = _reviewed_to_peft_keys(raw)
        cfg = infer_config(sd, container_cfg, p, num_heads=num_heads, window=window)
        meta = CheckpointMeta(provenance={"imported_from": p.name, "source_format": fmt})
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = build_model(cfg, seed=None)
    _load_exact(model, sd, p)
    info = CheckpointInfo(str(p), file_sha256(p), fmt, cfg, meta)
    return model, info


def _load_exact(model: PeftModel, sd: dict, path: Path) -> None:
    expected = {_strip_prefix(k): v for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (first: {extra[0]})")
        raise FlagcoreError(f"{path}: tensors do not match the architecture: {'; '.join(parts)}")
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise FlagcoreError(
                f"{path}: tensor {k!r} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}"
            )
        if not sd[k].is_floating_point():
            raise FlagcoreError(f"{path}: tensor {k!r} has dtype {sd[k].dtype}, expected floats")
        if not torch.isfinite(sd[k]).all():
            raise FlagcoreError(f"{path}: tensor {k!r} holds NaN or infinite values")
    model.load_state_dict(
        {PEFT_PREFIX + k: v.to(torch.float32) for k, v in sd.items()}, strict=True, assign=True
    )


def load_checkpoint(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    num_heads: int | None = None,
    window: int | None = None,
) -> PeftModel:
    """A checkpoint of either format as an eval-mode module: ``model(states)`` -> (B, T, 3) logits.

    ``model.checkpoint_info`` holds the config, feature names, padding, provenance and file hash.
    """
    model, info = read_checkpoint(path, num_heads=num_heads, window=window)
    model.checkpoint_info = info  # type: ignore[assignment]  # a plain attribute, not a submodule
    if device is not None:
        model.to(device)
    return model.eval()


def import_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    num_heads: int | None = None,
    window: int | None = None,
    feature_names: list[str] | None = None,
) -> Path:
    """Convert a reviewed-format torch checkpoint into flagcore's format."""
    model, info = read_checkpoint(src, num_heads=num_heads, window=window)
    if info.source_format == "flagcore":
        raise FlagcoreError(f"{src}: already a flagcore checkpoint")
    provenance = {**info.meta.provenance, "source_sha256": info.sha256}
    return save_checkpoint(model, dst, feature_names=feature_names, provenance=provenance)


def checkpoint_summary(path: str | os.PathLike, **kw) -> dict:
    model, info = read_checkpoint(path, **kw)
    total, trainable = count_parameters(model)
    return {**info.to_dict(), "total_params": total, "trainable_params": trainable}
