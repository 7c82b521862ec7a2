"""Reading checkpoint files: errors that name the file, the keys and the fix."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


class WeightsError(ValueError):
    """A checkpoint that does not fit; the message names the keys and the fix."""


StateDict = dict[str, Tensor]


def load_file(path: str | Path) -> Any:
    """torch.load onto the CPU (plain data only), with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise WeightsError(f"checkpoint '{path}' cannot be read by torch.load: {exc}") from exc


def read_checkpoint(path: str | Path) -> StateDict:
    """Load a checkpoint file and unwrap the usual ``state_dict``/``model``/``module``
    nesting (``module``: EVA02's original checkpoints)."""
    data = load_file(path)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise WeightsError(f"checkpoint '{path}' does not hold a state dict of tensors")
    return data


def list_keys(what: str, keys: list[str], limit: int = 12) -> str:
    if not keys:
        return f"{what}: none"
    shown = ", ".join(keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{what} ({len(keys)}): {shown}{more}"


def state_fingerprint(state: dict[str, Tensor]) -> str:
    """SHA-256 (first 16 hex digits) of tensors: names, shapes, dtypes, bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]
