"""The CGDT checkpoint format: one safetensors file, its config and training record in the header.

The tensors are the CGDT's state dict (policy, critic and the training statistics inference
needs); the header holds the format tag, the config and, as JSON, the class order and the
training provenance (``model.info``). ``load_cgdt`` refuses any other file in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from flagcore.errors import FlagcoreError
from flagcore.models.cgdt import CGDT, CGDTConfig
from flagcore.models.safetensors_file import CGDT_FORMAT, read_safetensors, write_safetensors
from flagcore.vocab import CLASS_NAMES

FORMAT = CGDT_FORMAT


def save_cgdt(model: CGDT, path: str | os.PathLike) -> Path:
    """Write ``model`` as one safetensors file with a JSON header, atomically.

    Parameters
    ----------
    model : a trained CGDT.
    path : the file; its folder is made if needed.

    Returns
    -------
    Path : the file written.
    """
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
    """A CGDT saved by ``save_cgdt``, in eval mode; any other file is refused with FlagcoreError.

    Parameters
    ----------
    path : the ``.safetensors`` file.

    Returns
    -------
    CGDT : frozen (no gradients), in eval mode, ``info`` holding its training record.
    """
    p = Path(path)
    if not p.exists():
        raise FlagcoreError(f"{p}: no such CGDT checkpoint")
    if p.is_dir():
        raise FlagcoreError(f"{p}: is a folder, expected a CGDT .safetensors file")
    header, tensors = read_safetensors(
        p, lambda reason: f"{p}: not a CGDT checkpoint (not a readable safetensors file: {reason})"
    )
    if header.get("format") != FORMAT:
        raise FlagcoreError(
            f"{p}: not a CGDT checkpoint (header format {header.get('format')!r}, expected {FORMAT!r})"
        )
    cfg, meta = _read_header(header, p)
    model = CGDT(cfg)
    _check_tensors(model, tensors, p)
    model.load_state_dict(tensors, strict=True)
    model.info = dict(meta.get("info", {}))
    for q in model.parameters():
        q.requires_grad_(False)
    return model.eval()


def _read_header(header: dict[str, str], p: Path) -> tuple[CGDTConfig, dict]:
    """The config and the meta of a CGDT header; refuses a damaged one or another class order."""
    try:
        cfg = CGDTConfig.from_dict(json.loads(header["config"]))
        meta = json.loads(header.get("meta", "{}"))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise FlagcoreError(f"{p}: CGDT header is damaged ({type(e).__name__}: {e})") from None
    except FlagcoreError as e:
        raise FlagcoreError(f"{p}: {e}") from None
    if tuple(meta.get("class_order", CLASS_NAMES)) != CLASS_NAMES:
        raise FlagcoreError(f"{p}: class order {meta.get('class_order')} differs from {list(CLASS_NAMES)}")
    return cfg, meta


def _check_tensors(model: CGDT, tensors: dict[str, torch.Tensor], p: Path) -> None:
    """Refuse tensors that do not fit the architecture exactly, or that hold NaN or infinities."""
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


def describe_cgdt(model: CGDT) -> dict:
    """Config, parameter counts and the inference target, for reports.

    Parameters
    ----------
    model : a CGDT.

    Returns
    -------
    dict : ``config``, ``policy_params``, ``critic_params``, ``target_rtg`` (in return units) and
    ``class_weight``.
    """
    n_pol = sum(p.numel() for p in model.policy.parameters())
    n_cri = sum(p.numel() for p in model.critic.parameters())
    return {
        "config": model.config.to_dict(),
        "policy_params": n_pol,
        "critic_params": n_cri,
        "target_rtg": float(model.target_rtg * model.rtg_std + model.rtg_mean),
        "class_weight": [float(w) for w in model.class_weight],
    }
