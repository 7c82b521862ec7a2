"""Parameter accounting: frozen backbone, the paper's #TP, and per-module counts."""
from __future__ import annotations

from torch import nn

from .backbone import IVTuningBackbone
from .checkpoint import adapter_state
from .model import IVTuningModel
from .swin import swin_stages


def count(module: nn.Module) -> int:
    """Number of parameters in a module."""
    return sum(p.numel() for p in module.parameters())


def parameter_summary(backbone: IVTuningBackbone) -> dict:
    """Parameter counts of an IV-tuning backbone.

    Returns a dict with ``backbone_frozen_params`` (the torchvision Swin),
    ``backbone_trainable_params`` (IR embedding + prompter: the paper's #TP),
    ``mp_alpha_params``, ``neck_norm_params`` (per-stage output norms, trained
    with the heads) and ``modules``: rows of {name, params, trainable}.
    """
    rows = [{"name": "swin.patch_embed", "params": count(backbone.swin.features[0]),
             "trainable": False}]
    for stage, (merge, blocks) in enumerate(swin_stages(backbone.swin)):
        if merge is not None:
            rows.append({"name": f"swin.patch_merging{stage - 1}", "params": count(merge),
                         "trainable": False})
        rows.append({"name": f"swin.stage{stage} ({len(blocks)} blocks)",
                     "params": count(blocks), "trainable": False})
    rows.append({"name": "ir_patch_embed", "params": count(backbone.ir_patch_embed),
                 "trainable": True})
    rows.append({"name": "mp_alpha", "params": count(backbone.mp_alpha), "trainable": True})
    for stage, betas in enumerate(backbone.mp_beta):
        rows.append({"name": f"mp_beta.stage{stage} ({len(betas)} blocks)",
                     "params": count(betas), "trainable": True})
    trainable = count(backbone.ir_patch_embed) + count(backbone.mp_alpha) + count(backbone.mp_beta)
    return {
        "backbone_frozen_params": count(backbone.swin),
        "backbone_trainable_params": trainable,
        "mp_alpha_params": count(backbone.mp_alpha),
        "neck_norm_params": count(backbone.out_norms),
        "modules": rows,
    }


def model_summary(model: IVTuningModel) -> dict:
    """`parameter_summary` of the backbone plus the heads.

    Adds ``detection_head_params`` (neck, encoder, queries, decoder, branches; the
    backbone's output norms count here too), ``segmentation_head_params``,
    ``trainable_params`` (everything IV-tuning trains) and
    ``adapter_checkpoint_mb`` (the size of an adapter checkpoint's tensors, MiB).
    """
    summary = parameter_summary(model.backbone)
    detection = count(model.detection) if model.detection is not None else 0
    segmentation = count(model.segmentation) if model.segmentation is not None else 0
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
    adapter_bytes = sum(t.numel() * t.element_size() for t in adapter_state(model).values())
    summary.update({
        "detection_head_params": detection + summary["neck_norm_params"],
        "segmentation_head_params": segmentation,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "adapter_checkpoint_mb": round(adapter_bytes / 2**20, 2),
    })
    return summary
