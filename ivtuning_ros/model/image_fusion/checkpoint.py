"""M2PN checkpoint files: the network's sizes, its weights and its memory bank."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..weights import WeightsError, load_file
from .m2pn import M2PN, M2PNConfig

FORMAT, VERSION = "ivtuning-fusion", 1


def save_fusion(model: M2PN, path: str | Path, *, half: bool = False, **metadata) -> None:
    """Write sizes, weights and memory (``half``: fp16 tensors) plus any ``metadata``."""
    state = {k: v.half() if half and v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "version": VERSION,
                "config": dataclasses.asdict(model.config), "state_dict": state,
                "metadata": metadata}, path)


def load_fusion(path: str | Path) -> M2PN:
    """The M2PN a file holds, in eval mode, fp32."""
    payload = load_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"'{path}' is not an M2PN fusion checkpoint (write one with "
                           "`ivtuning train-fusion`)")
    model = M2PN(M2PNConfig(**payload["config"]))
    try:
        model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
    except RuntimeError as exc:
        raise WeightsError(f"fusion checkpoint '{path}' does not fit its own config: {exc}") \
            from exc
    return model.eval()
