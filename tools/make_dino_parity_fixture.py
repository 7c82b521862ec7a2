"""Write test/fixtures/dino_parity.pt: mmdet 3.3's DINO (4-scale) on fixed inputs.

`test/test_dino_parity.py` converts the checkpoint in this file with `ivtuning convert`,
runs our DINO head on the same neck inputs and compares the outputs stage by stage.

What it holds (one `torch.save` dict, readable with ``weights_only=True``):

* ``state_dict``: the mmdet DINO detector's weights, random (fixed seed) and
  non-trivial everywhere (biases, sampling offsets, GroupNorm/LayerNorm affine
  parameters too), without ``backbone.*`` keys: the backbone is not run. The
  file is therefore also an mmdet checkpoint (``{'state_dict': ...}``).
* ``meta``: the sizes, and ``overrides``: the ``--set`` values that turn
  ``models/ivt_tiny_test.yaml`` into the same detector.
* ``cases``: ``unpadded`` (every image fills the batch input: mmdet uses no
  masks) and ``padded`` (images at the top left of a larger batch input:
  ``img_shape`` < ``batch_input_shape``, so masks, valid ratios, masked
  position encodings and masked proposals are exercised). Each case has the
  neck inputs ``features`` (the backbone stages 1-3 as a Swin with the tiny
  config's widths would give them, after its output norms), ``batch_input_shape``,
  ``img_shapes`` (B x (h, w)), and mmdet's outputs: ``memory`` (B, S, D) with
  ``memory_mask`` (B, S) (True = padded token, all False without padding),
  the query selection ``topk_indices`` (B, Q), ``topk_logits`` (B, Q, K) and
  ``topk_boxes`` (B, Q, 4) (the decoder's initial anchors), and per decoder layer
  ``layer_logits`` (L, B, Q, K) and ``layer_boxes`` (L, B, Q, 4); the last layer
  is the detector's prediction.

Set up the throwaway venv (mmdet is no dependency of this project) and run:

    python3 -m venv /tmp/mmdet-venv
    /tmp/mmdet-venv/bin/pip install torch==2.13.0          # a CPU build is enough
    /tmp/mmdet-venv/bin/pip install --no-deps mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0
    /tmp/mmdet-venv/bin/pip install numpy addict rich termcolor yapf terminaltables \\
        shapely six tqdm scipy pyyaml opencv-python-headless packaging matplotlib pycocotools
    /tmp/mmdet-venv/bin/python tools/make_dino_parity_fixture.py --out test/fixtures/dino_parity.pt

Two stand-ins make mmdet run here, both set up by this script:

* mmcv-lite ships no compiled ops, and importing mmdet fails on ``mmcv._ext``. A
  module registered under that name (every op a function that raises) lets it
  import. On CPU, mmcv's ``MultiScaleDeformableAttention.forward`` then calls its
  pure-PyTorch ``multi_scale_deformable_attn_pytorch`` by itself (its compiled op is
  used for CUDA tensors only), so no attention code is patched; were a compiled op
  called, the stand-in would raise.
* mmdet's ``DinoTransformerDecoder`` calls ``coordinate_to_encoding`` with its
  default ``num_feats=128``, correct only for 256-wide models (its
  ``ref_point_head`` reads 2 * embed_dims). The script binds ``num_feats`` to
  embed_dims // 2, the generalisation our head makes; at 256 this is mmdet's own call.
"""
from __future__ import annotations

import argparse
import functools
import sys
import types
from pathlib import Path

import torch
from torch import Tensor, nn

SEED = 1
NUM_CLASSES = 6
STAGE_DIMS = [32, 64, 128]  # ivt_tiny_test.yaml: embed_dim 16, stages 1-3
EMBED_DIMS, NUM_HEADS, NUM_POINTS, FFN_DIMS = 32, 2, 2, 64  # ivt_tiny_test.yaml detection
ENCODER_LAYERS, DECODER_LAYERS, NUM_QUERIES = 2, 3, 20
NUM_LEVELS = len(STAGE_DIMS) + 1  # DINO-4scale: three stages and one extra level
OVERRIDES = [f"detection.encoder_layers={ENCODER_LAYERS}",
             f"detection.decoder_layers={DECODER_LAYERS}",
             f"detection.num_queries={NUM_QUERIES}"]
BATCH_INPUT = (96, 128)  # (H, W); stage strides 8, 16, 32
CASES = {
    "unpadded": [BATCH_INPUT, BATCH_INPUT],
    "padded": [(75, 101), (96, 88), BATCH_INPUT],  # both sides, width only, none
}
MIN_SCORE_GAP = 1e-4  # adjacent top-k scores closer than this could swap in our fp32 head
# The encoder proposals' box branch is this much larger, so some anchors lie within 1e-3
# of 0 or 1, where the decoder's inverse_sigmoid eps (1e-3) and the head's (1e-5) matter.
ANCHOR_SCALE = 5.0


def install_mmcv_ext_stand_in() -> None:
    """Register a fake ``mmcv._ext`` whose every op raises (mmcv-lite compiles none)."""
    def op(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError(f"mmcv._ext.{name} is not compiled in mmcv-lite")
        return missing

    ext = types.ModuleType("mmcv._ext")
    ext.__getattr__ = op  # module-level __getattr__ (PEP 562)
    sys.modules["mmcv._ext"] = ext


def detector_config() -> dict:
    """mmdet's dino-4scale config at the tiny sizes (the unused backbone a tiny Swin)."""
    msda = dict(embed_dims=EMBED_DIMS, num_levels=NUM_LEVELS, num_heads=NUM_HEADS,
                num_points=NUM_POINTS, dropout=0.0)
    ffn = dict(embed_dims=EMBED_DIMS, feedforward_channels=FFN_DIMS, ffn_drop=0.0)
    return dict(
        type="DINO", num_queries=NUM_QUERIES, with_box_refine=True, as_two_stage=True,
        num_feature_levels=NUM_LEVELS,
        backbone=dict(type="SwinTransformer", embed_dims=16, depths=[2, 2, 2, 2],
                      num_heads=[1, 2, 2, 4], window_size=4, out_indices=(1, 2, 3)),
        neck=dict(type="ChannelMapper", in_channels=STAGE_DIMS, kernel_size=1,
                  out_channels=EMBED_DIMS, act_cfg=None,
                  norm_cfg=dict(type="GN", num_groups=32), num_outs=NUM_LEVELS),
        encoder=dict(num_layers=ENCODER_LAYERS,
                     layer_cfg=dict(self_attn_cfg=msda, ffn_cfg=ffn)),
        decoder=dict(num_layers=DECODER_LAYERS, return_intermediate=True, post_norm_cfg=None,
                     layer_cfg=dict(self_attn_cfg=dict(embed_dims=EMBED_DIMS,
                                                       num_heads=NUM_HEADS, dropout=0.0),
                                    cross_attn_cfg=msda, ffn_cfg=ffn)),
        positional_encoding=dict(num_feats=EMBED_DIMS // 2, normalize=True, offset=0.0,
                                 temperature=20),
        bbox_head=dict(type="DINOHead", num_classes=NUM_CLASSES, embed_dims=EMBED_DIMS,
                       sync_cls_avg_factor=True,
                       loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0,
                                     alpha=0.25, loss_weight=1.0),
                       loss_bbox=dict(type="L1Loss", loss_weight=5.0),
                       loss_iou=dict(type="GIoULoss", loss_weight=2.0)),
        dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                    group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=100)),
        test_cfg=dict(max_per_img=NUM_QUERIES),
    )


def build_detector() -> nn.Module:
    """mmdet's DINO with the decoder's position encoding sized for EMBED_DIMS."""
    from mmdet.models.layers.transformer import dino_layers
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    dino_layers.coordinate_to_encoding = functools.partial(
        dino_layers.coordinate_to_encoding, num_feats=EMBED_DIMS // 2)
    return MODELS.build(detector_config()).eval()


def randomize(model: nn.Module, generator: torch.Generator) -> None:
    """Random weights everywhere: matrices ~ N(0, 1/fan_in), vectors ~ N(0, 0.2^2).

    Norm scales are 1 + N(0, 0.2^2); sampling-offset biases ~ N(0, 1) (about a
    pixel of the level in the encoder) so samples fall off the pixel grid; the
    proposals' last box layer is ANCHOR_SCALE times larger.
    """
    anchor_layer = f"bbox_head.reg_branches.{DECODER_LAYERS}.4.weight"
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() > 1:
                value = noise / parameter[0].numel() ** 0.5
                value = value * ANCHOR_SCALE if name == anchor_layer else value
            elif name.endswith("sampling_offsets.bias"):
                value = noise
            elif ".norm" in name or ".gn." in name or "_norm." in name:
                value = noise * 0.2 + (1.0 if name.endswith("weight") else 0.0)
            else:
                value = noise * 0.2
            parameter.copy_(value)


def head_state(model: nn.Module) -> dict[str, Tensor]:
    """The detector's state dict without the (unused) backbone."""
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def data_samples(img_shapes: list[tuple[int, int]]) -> list:
    from mmdet.structures import DetDataSample

    return [DetDataSample(metainfo=dict(img_shape=shape, batch_input_shape=BATCH_INPUT))
            for shape in img_shapes]


def stage_features(batch: int, generator: torch.Generator) -> list[Tensor]:
    """Random stage 1-3 maps for a BATCH_INPUT network input (strides 8, 16, 32)."""
    height, width = BATCH_INPUT
    return [torch.randn(batch, dim, height // stride, width // stride, generator=generator)
            for dim, stride in zip(STAGE_DIMS, (8, 16, 32), strict=True)]


def top_k(model: nn.Module, memory: Tensor, memory_mask: Tensor | None,
          spatial_shapes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """mmdet's query selection, recomputed to expose indices and scores (as `pre_decoder`)."""
    output_memory, proposals = model.gen_encoder_output_proposals(memory, memory_mask,
                                                                  spatial_shapes)
    logits = model.bbox_head.cls_branches[DECODER_LAYERS](output_memory)
    boxes = model.bbox_head.reg_branches[DECODER_LAYERS](output_memory) + proposals
    indices = logits.max(-1).values.topk(NUM_QUERIES + 1, dim=1).indices
    check_selection_margin(logits.max(-1).values, boxes, indices)
    indices = indices[:, :NUM_QUERIES].clone()  # its own storage: torch.save keeps whole ones
    gather = functools.partial(torch.gather, dim=1)
    return (indices, gather(logits, index=indices[..., None].expand(-1, -1, NUM_CLASSES)),
            gather(boxes, index=indices[..., None].expand(-1, -1, 4)).sigmoid())


def check_selection_margin(scores: Tensor, boxes: Tensor, indices: Tensor) -> None:
    """Fail unless adjacent top-(Q+1) scores differ by MIN_SCORE_GAP.

    Exact ties are allowed between tokens with equal boxes (padded or invalid
    proposals: same memory, box +inf): their order changes nothing.
    """
    for image in range(scores.shape[0]):
        ranked = scores[image, indices[image]]
        ranked_boxes = boxes[image, indices[image]]
        for rank in range(NUM_QUERIES):
            gap = (ranked[rank] - ranked[rank + 1]).item()
            same = gap == 0 and torch.equal(ranked_boxes[rank], ranked_boxes[rank + 1])
            if gap < MIN_SCORE_GAP and not same:
                raise SystemExit(f"top-k ranks {rank}/{rank + 1} of image {image} differ by "
                                 f"{gap:.2e} only: choose another SEED")


def run_case(model: nn.Module, img_shapes: list[tuple[int, int]],
             generator: torch.Generator) -> dict:
    """Neck -> encoder -> query selection -> decoder -> head, keeping each stage's output."""
    features = stage_features(len(img_shapes), generator)
    samples = data_samples(img_shapes)
    with torch.no_grad():
        encoder_inputs, decoder_inputs = model.pre_transformer(model.neck(features), samples)
        encoded = model.forward_encoder(**encoder_inputs)
        selected, _ = model.pre_decoder(**encoded, batch_data_samples=samples)
        decoder_inputs.update(selected)
        decoded = model.forward_decoder(**decoder_inputs)
        layer_logits, layer_boxes = model.bbox_head(decoded["hidden_states"],
                                                    decoded["references"])
        indices, topk_logits, topk_boxes = top_k(model, encoded["memory"],
                                                 encoded["memory_mask"],
                                                 encoded["spatial_shapes"])
    if not torch.equal(topk_boxes, selected["reference_points"]):
        raise SystemExit("recomputed query selection differs from mmdet's pre_decoder")
    memory = encoded["memory"]
    mask = encoded["memory_mask"]
    return {
        "features": features,
        "batch_input_shape": list(BATCH_INPUT),
        "img_shapes": [list(shape) for shape in img_shapes],
        "memory": memory,
        "memory_mask": mask if mask is not None else torch.zeros(memory.shape[:2], dtype=bool),
        "topk_indices": indices,
        "topk_logits": topk_logits,
        "topk_boxes": topk_boxes,
        "layer_logits": layer_logits,
        "layer_boxes": layer_boxes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("test/fixtures/dino_parity.pt"))
    args = parser.parse_args()
    install_mmcv_ext_stand_in()
    import mmdet

    generator = torch.Generator().manual_seed(SEED)
    model = build_detector()
    randomize(model, generator)
    cases = {name: run_case(model, shapes, generator) for name, shapes in CASES.items()}
    meta = {"mmdet": mmdet.__version__, "torch": str(torch.__version__), "seed": SEED,
            "stage_dims": STAGE_DIMS, "hidden_dim": EMBED_DIMS, "num_heads": NUM_HEADS,
            "num_points": NUM_POINTS, "ffn_dim": FFN_DIMS, "encoder_layers": ENCODER_LAYERS,
            "decoder_layers": DECODER_LAYERS, "num_queries": NUM_QUERIES,
            "num_levels": NUM_LEVELS, "num_classes": NUM_CLASSES,
            "base_config": "models/ivt_tiny_test.yaml", "overrides": OVERRIDES}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": head_state(model), "meta": meta, "cases": cases}, args.out)
    print(f"wrote {args.out}: {args.out.stat().st_size / 1024:.0f} KiB, "
          f"{len(head_state(model))} tensors, cases {', '.join(cases)}")


if __name__ == "__main__":
    main()
