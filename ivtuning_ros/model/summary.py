"""Parameter accounting: frozen backbone, the paper's #TP, and per-module counts."""
from __future__ import annotations

from torch import nn

from .adapters.base import AdaptedBackbone, count
from .checkpoint import adapter_state
from .model import IVTuningModel


def parameter_summary(backbone: AdaptedBackbone) -> dict:
    """Parameter counts of an adapted backbone, from its own definition of what it trains.

    Returns a dict with ``backbone_frozen_params`` (the frozen foundation model),
    ``backbone_trainable_params`` (what the method trains inside the backbone, its
    ``adapter_parts``: for IV-tuning the IR embedding and the prompter, the paper's #TP),
    ``reusable_frozen_params`` (parts the method learnt once and shares, frozen for tasks:
    DRA's modality LoRA), ``mp_alpha_params`` (IV-tuning only), ``neck_norm_params`` (the
    outputs' norms or pyramid, trained with the heads) and ``modules``: rows of {name,
    params, trainable}.
    """
    rows = [{"name": name, "params": params, "trainable": False}
            for name, params in backbone.frozen_parts()]
    reusable = backbone.reusable_parts()
    rows += [{"name": f"{name} (learnt once, frozen)", "params": count(module),
              "trainable": False} for name, module in reusable.items()]
    parts = backbone.adapter_parts()
    for name, module in parts.items():
        rows += _part_rows(name, module)
    summary = {
        "backbone_frozen_params": count(backbone.frozen),
        "backbone_trainable_params": sum(count(module) for module in parts.values()),
        "reusable_frozen_params": sum(count(module) for module in reusable.values()),
        "neck_norm_params": count(backbone.neck()),
        "modules": rows,
    }
    if "mp_alpha" in parts:
        summary["mp_alpha_params"] = count(parts["mp_alpha"])
    return summary


def _part_rows(name: str, module: nn.Module) -> list[dict]:
    """One row per stage for per-stage lists of per-block modules, else one row."""
    stages = list(module) if isinstance(module, nn.ModuleList) else []
    if stages and all(isinstance(stage, nn.ModuleList) for stage in stages):
        return [{"name": f"{name}.stage{index} ({len(stage)} blocks)", "params": count(stage),
                 "trainable": True} for index, stage in enumerate(stages)]
    return [{"name": name, "params": count(module), "trainable": True}]


def model_summary(model: IVTuningModel) -> dict:
    """`parameter_summary` of the backbone plus the heads.

    Adds ``detection_head_params`` (channel mapper, encoder, queries, decoder, branches),
    ``segmentation_head_params``, ``sod_head_params``,
    ``trainable_params`` (everything IV-tuning trains) and
    ``adapter_checkpoint_mb`` (the size of an adapter checkpoint's tensors, MiB).
    """
    summary = parameter_summary(model.backbone)
    detection = count(model.detection) if model.detection is not None else 0
    segmentation = count(model.segmentation) if model.segmentation is not None else 0
    sod = count(model.sod) if model.sod is not None else 0
    if model.detection is not None:
        for name in ("neck", "encoder", "decoder", "cls_branches", "reg_branches"):
            summary["modules"].append({"name": f"detection.{name}",
                                       "params": count(getattr(model.detection, name)),
                                       "trainable": True})
        other = detection - sum(row["params"] for row in summary["modules"]
                                if row["name"].startswith("detection."))
        summary["modules"].append({"name": "detection (queries, level embed, other)",
                                   "params": other, "trainable": True})
    if model.segmentation is not None:
        summary["modules"].append({"name": "segmentation", "params": segmentation,
                                   "trainable": True})
    if model.sod is not None:
        summary["modules"].append({"name": "sod (CPNet decoder)", "params": sod,
                                   "trainable": True})
    summary["modules"].append({"name": "backbone neck (output norms / pyramid)",
                               "params": summary["neck_norm_params"], "trainable": True})
    adapter_bytes = sum(t.numel() * t.element_size() for t in adapter_state(model).values())
    summary.update({
        "detection_head_params": detection,
        "segmentation_head_params": segmentation,
        "sod_head_params": sod,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "adapter_checkpoint_mb": round(adapter_bytes / 2**20, 2),
    })
    return summary
