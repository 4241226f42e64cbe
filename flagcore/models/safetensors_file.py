"""safetensors files as flagcore writes and reads them: tensors plus a header of JSON strings.

Both of flagcore's checkpoint formats (FLAG-TRADER's, ``models.checkpoint``, and CGDT's,
``models.cgdt_file``) are one safetensors file whose header metadata says which format it is.
Writing is atomic; reading turns every failure of the file into one line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from flagcore.data.tables import first_line
from flagcore.errors import FlagcoreError

FLAG_TRADER_FORMAT = "flagcore-checkpoint/1"
CGDT_FORMAT = "flagcore-cgdt/1"


def write_safetensors(
    tensors: dict[str, torch.Tensor],
    path: str | os.PathLike,
    header: dict[str, str],
) -> Path:
    """Write a safetensors file atomically: a crash leaves the old file or none, never half of one.

    Parameters
    ----------
    tensors : name -> contiguous CPU tensor.
    path : the file; its folder is made if needed.
    header : the metadata, string -> string (flagcore stores JSON in the values).

    Returns
    -------
    Path : the file written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_safetensors(
    path: Path,
    refusal: Callable[[str], str] | None = None,
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(header, tensors) of a safetensors file; an unreadable file is refused with one line.

    Parameters
    ----------
    path : the file.
    refusal : the message for an unreadable file, given the reason (default
        ``"{path}: not a readable safetensors file ({reason})"``).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is no dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        reason = first_line(e)
        raise FlagcoreError(
            refusal(reason) if refusal else f"{path}: not a readable safetensors file ({reason})"
        ) from None
    return header, tensors


def header_format(path: Path) -> str | None:
    """The ``format`` entry of a safetensors file's header; None without one or for an unreadable file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format")
    except (SafetensorError, OSError, ValueError):
        return None
