"""DINO on padded inputs, as mmdet 3.3 treats them (images at the top left, padding right
and bottom): no padding is the unpadded path bit for bit, padded tokens cannot change
what is detected, the selected anchors are proposals of image tokens, the engine's
letterbox is the image padded by hand, training batches keep the same layout, and the
forward stays free of host synchronisation.

Parity of the padded path with mmdet's own outputs is `test_dino_parity.py`.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ivtuning_ros.data import Sample
from ivtuning_ros.model.box_ops import box_cxcywh_to_xyxy
from ivtuning_ros.model.padding import level_masks
from ivtuning_ros.model.postprocess import select_detections
from ivtuning_ros.runtime import Engine, EngineOptions
from ivtuning_ros.train.batch import IGNORE, Augmentation, BatchBuilder

INPUT = (64, 80)  # ivt_tiny_test.yaml
# Image 0 loses rows (a wide frame), image 1 columns (a tall one).
PADDED = torch.tensor([[45.0, 80.0], [64.0, 53.0]])
UNPADDED = torch.tensor([[64.0, 80.0], [64.0, 80.0]])


def stage_maps(model, config, seed=0):
    """The backbone's four stage maps for a batch of two random RGB+IR inputs."""
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.randn(2, 3, *INPUT, generator=generator)
    ir = torch.randn(2, config.prompter.ir_in_channels, *INPUT, generator=generator)
    with torch.no_grad():
        return model.backbone(rgb, ir).features


def run_head(head, features, valid_sizes, garbage_in=None, garbage_seed=0, scale=1.0):
    """The head in training mode (no dropout: every layer's outputs and the selected
    encoder proposals) plus its encoder memory.

    ``garbage_in`` (B, 2) valid sizes: the neck's output maps get random values
    (times ``scale``) wherever those sizes put padding, whatever the head is told.
    """
    captured = {}
    hooks = [head.encoder[-1].register_forward_hook(
        lambda _module, _inputs, output: captured.update(memory=output))]
    if garbage_in is not None:
        generator = torch.Generator().manual_seed(garbage_seed)

        def fill(_module, _inputs, maps):
            masks = level_masks(garbage_in, INPUT, [m.shape[-2:] for m in maps])
            return [torch.where(mask[:, None], torch.randn(m.shape, generator=generator) * scale,
                                m) for m, mask in zip(maps, masks, strict=True)]
        hooks.append(head.neck.register_forward_hook(fill))
    try:
        with torch.no_grad():
            outputs = head.train()(features, valid_sizes=valid_sizes)
    finally:
        head.eval()
        for hook in hooks:
            hook.remove()
    return captured["memory"], outputs


def all_outputs(outputs):
    """Every tensor the head returns, by name: the last layer, each earlier one, the
    selected encoder proposals."""
    named = {"pred_logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"]}
    for index, layer in enumerate(outputs["aux_outputs"]):
        named.update({f"{key}_{index}": layer[key] for key in ("pred_logits", "pred_boxes")})
    named.update({f"{key}_enc": value for key, value in outputs["enc_outputs"].items()})
    return named


def image_tokens(valid_sizes, spatial_shapes):
    """(B, S) True where the token is image, as mmdet's masks say."""
    masks = level_masks(valid_sizes, INPUT, spatial_shapes)
    return torch.cat([~m.flatten(1) for m in masks], dim=1)


def spatial_shapes(head, features):
    with torch.no_grad():
        return [tuple(m.shape[-2:]) for m in head.neck([features[s]
                                                        for s in head.backbone_stages])]


@pytest.mark.parametrize("input_size", [(64, 80), (75, 101), (768, 1024)])
def test_level_masks_are_mmdets_resized_input_mask(input_size):
    """Row and column vectors resized separately give mmdet's masks: the input-size mask
    through F.interpolate (nearest), cast to bool."""
    height, width = input_size
    shapes = [(-(-height // s), -(-width // s)) for s in (4, 8, 16, 32, 64)] + [(3, 7)]
    heights = {1, 2, height // 3, height // 2 + 1, height - 1, height}
    widths = {1, 3, width // 3 + 1, width // 2, width - 1, width}
    sizes = torch.tensor([[h, w] for h in sorted(heights) for w in sorted(widths)],
                         dtype=torch.float32)
    padded = torch.ones(len(sizes), height, width)
    for index, (h, w) in enumerate(sizes.long().tolist()):
        padded[index, :h, :w] = 0
    for ours, shape in zip(level_masks(sizes, input_size, shapes), shapes, strict=True):
        assert torch.equal(ours, F.interpolate(padded[None], size=shape).to(torch.bool)[0])


def test_valid_sizes_must_be_one_height_and_width_per_image(tiny_model, tiny_config):
    features = stage_maps(tiny_model, tiny_config)
    with pytest.raises(ValueError, match=r"valid_sizes must be \(B, 2\)"):
        tiny_model.detection(features, valid_sizes=torch.tensor([45.0, 80.0]))


def test_no_padding_is_the_unpadded_path_bit_for_bit(tiny_model, tiny_config):
    features = stage_maps(tiny_model, tiny_config)
    head = tiny_model.detection
    memory, outputs = run_head(head, features, None)
    masked_memory, masked = run_head(head, features, UNPADDED)
    assert torch.equal(masked_memory, memory)
    expected = all_outputs(outputs)
    for name, value in all_outputs(masked).items():
        assert torch.equal(value, expected[name]), name


def test_an_unpadded_image_in_a_padded_batch_is_unaffected(tiny_model, tiny_config):
    """mmdet masks every image once one is padded; the unpadded one's masks are empty."""
    features = stage_maps(tiny_model, tiny_config)
    head = tiny_model.detection
    _, mixed = run_head(head, features, torch.tensor([[45.0, 80.0], [64.0, 80.0]]))
    _, alone = run_head(head, [f[1:] for f in features], None)
    expected = all_outputs(alone)
    for name, value in all_outputs(mixed).items():
        torch.testing.assert_close(value[1:], expected[name], rtol=1e-4, atol=1e-5,
                                   msg=lambda message, name=name: f"{name}: {message}")


def test_padded_tokens_cannot_change_detections(tiny_model, tiny_config):
    """Different garbage in the padded part of every level's map: the image tokens'
    memory, the query selection and every layer's boxes and logits stay bit-identical.
    Unmasked, the same garbage changes them."""
    features = stage_maps(tiny_model, tiny_config)
    head = tiny_model.detection
    runs = [run_head(head, features, PADDED, garbage_in=PADDED, garbage_seed=seed)
            for seed in (1, 2)]
    image = image_tokens(PADDED, spatial_shapes(head, features))
    assert 0 < image.sum() < image.numel()
    (memory_a, outputs_a), (memory_b, outputs_b) = runs
    assert torch.equal(memory_a[image], memory_b[image])
    assert not torch.equal(memory_a[~image], memory_b[~image])  # the garbage did arrive
    expected = all_outputs(outputs_b)
    for name, value in all_outputs(outputs_a).items():
        assert torch.equal(value, expected[name]), name
    unmasked = [run_head(head, features, None, garbage_in=PADDED, garbage_seed=seed)[1]
                for seed in (1, 2)]
    assert not torch.allclose(unmasked[0]["pred_boxes"], unmasked[1]["pred_boxes"])


def image_proposals(valid_sizes, shapes):
    """Per image, (N, 4) the valid proposals of its image tokens, written out: pixel centre
    over the level's image extent (rows and columns of the mask), w = h = 0.05 * 2^level,
    every coordinate in (0.01, 0.99)."""
    masks = level_masks(valid_sizes, INPUT, shapes)
    out = []
    for image in range(len(valid_sizes)):
        boxes = []
        for level, mask in enumerate(masks):
            rows, cols = int((~mask[image, :, 0]).sum()), int((~mask[image, 0, :]).sum())
            y, x = torch.meshgrid((torch.arange(rows) + 0.5) / rows,
                                  (torch.arange(cols) + 0.5) / cols, indexing="ij")
            size = torch.full_like(x, 0.05 * 2**level)
            boxes.append(torch.stack([x, y, size, size], dim=-1).flatten(0, 1))
        boxes = torch.cat(boxes)
        out.append(boxes[((boxes > 0.01) & (boxes < 0.99)).all(dim=-1)])
    return out


def test_selected_anchors_are_proposals_of_image_tokens(tiny_model, tiny_config):
    """With the encoder's box branch at its zero initialisation, each anchor is the
    proposal of the token it selected. Loud garbage in the padding: every anchor is an
    image token's proposal, its centre inside the image, or mmdet's +inf box of an
    invalid proposal (sigmoid: (1, 1, 1, 1)), never a padded token's."""
    head = tiny_model.detection
    last = head.reg_branches[-1].layers[-1]
    assert not last.weight.any() and not last.bias.any()
    features = stage_maps(tiny_model, tiny_config)
    _, outputs = run_head(head, features, PADDED, garbage_in=PADDED, garbage_seed=3,
                          scale=100.0)
    anchors = outputs["enc_outputs"]["pred_boxes"]
    allowed = image_proposals(PADDED, spatial_shapes(head, features))
    for image, boxes in enumerate(anchors):
        marker = (boxes == 1).all(dim=-1)
        distance = torch.cdist(boxes[~marker].double(), allowed[image].double())
        assert (distance.min(dim=1).values < 1e-6).all()
        assert (boxes[~marker, :2] < 1).all()
    # Unmasked, the same garbage draws anchors into the padding (boxes then normalise to
    # the whole input): the assertion above has something to catch.
    _, unmasked = run_head(head, features, None, garbage_in=PADDED, garbage_seed=3,
                           scale=100.0)
    centres = unmasked["enc_outputs"]["pred_boxes"][..., :2] * torch.tensor(INPUT[::-1])
    in_padding = (centres[0, :, 1] > PADDED[0, 0]).any() or (centres[1, :, 0]
                                                             > PADDED[1, 1]).any()
    assert in_padding


def test_engine_on_a_1280x720_frame_equals_the_image_padded_by_hand(tiny_model, tiny_config):
    """1280x720 into 80x64: scale 1/16, an 80x45 image at the top left, 19 rows of padding
    (the mean colour) below. Detections come back as mmdet rescales them: fractions of
    the image region times the original size."""
    rgb = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    engine = Engine(tiny_model, tiny_config, EngineOptions(score_threshold=0.0))
    result = engine.infer(rgb)

    config = tiny_config.input
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    image = F.interpolate(image, size=(45, 80), mode="bilinear", align_corners=False)
    mean = torch.tensor(config.rgb_mean).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(config.rgb_std).view(1, 3, 1, 1) * 255.0
    canvas = torch.zeros(1, 3, *INPUT)
    canvas[..., :45, :] = (image - mean) / std
    with torch.inference_mode():
        out = tiny_model(canvas, None, valid_sizes=torch.tensor([[45.0, 80.0]]))
    scores, labels, boxes = select_detections(out["pred_logits"], out["pred_boxes"],
                                              tiny_config.detection.num_select)
    size = torch.tensor([1280.0, 720.0] * 2)
    boxes = torch.minimum((boxes * size).clamp(min=0), size)
    np.testing.assert_array_equal(result.detections.labels, labels[0].numpy())
    np.testing.assert_array_equal(result.detections.scores, scores[0].numpy())
    np.testing.assert_allclose(result.detections.boxes, boxes[0].numpy(), rtol=0, atol=1e-4)
    class_map = F.interpolate(out["seg_logits"][..., :45, :], size=(720, 1280),
                              mode="bilinear", align_corners=False).argmax(1)[0]
    np.testing.assert_array_equal(result.class_map, class_map.numpy())


def bright_square_sample(height, width):
    """A white square (a "Car") on black, RGB and IR alike, with its box and mask."""
    rgb = np.zeros((height, width, 3), np.uint8)
    y0, x0, side = height // 4, width // 5, min(height, width) // 3
    rgb[y0:y0 + side, x0:x0 + side] = 255
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y0 + side, x0:x0 + side] = 1
    return Sample(rgb=rgb, ir=np.ascontiguousarray(rgb[..., 0]), mask=mask, labels=[1],
                  boxes=[[x0, y0, x0 + side, y0 + side]])


@pytest.mark.parametrize("seed", range(4))
def test_training_batches_keep_the_image_at_the_top_left(tiny_config, seed):
    """Frames of two aspect ratios, flipped and zoomed: each sample's valid size bounds
    its image, the padding keeps the engine's values (RGB 0, IR its normalised zero,
    mask IGNORE), and its box, normalised to the image region, frames the square."""
    builder = BatchBuilder(tiny_config, Augmentation(hflip=1.0), seed=seed)
    batch = builder([bright_square_sample(40, 80), bright_square_sample(64, 32)])
    ir_padding = -tiny_config.input.ir_mean / tiny_config.input.ir_std
    rows, cols = torch.arange(INPUT[0])[:, None], torch.arange(INPUT[1])[None, :]
    for index, (valid_h, valid_w) in enumerate(batch.valid_sizes.long().tolist()):
        padding = (rows >= valid_h) | (cols >= valid_w)
        assert padding.any() and not padding.all()
        assert (batch.rgb[index][:, padding] == 0).all()
        assert (batch.ir[index][:, padding] == ir_padding).all()
        assert (batch.masks[index][padding] == IGNORE).all()
        box = box_cxcywh_to_xyxy(batch.targets[index]["boxes"][0])
        box = box * torch.tensor([valid_w, valid_h] * 2)
        square = (batch.rgb[index, 0] > 0.6).nonzero()
        found = torch.cat([square.amin(0).flip(0), square.amax(0).flip(0) + 1]).float()
        torch.testing.assert_close(box, found, rtol=0, atol=2.0)
    without = BatchBuilder(tiny_config, Augmentation(enabled=False))
    assert without([bright_square_sample(40, 80), bright_square_sample(64, 32)]
                   ).valid_sizes.tolist() == [[40.0, 80.0], [64.0, 32.0]]


class HostSyncs(TorchDispatchMode):
    """Records the ops a CUDA graph cannot capture: reading a value back to the host
    (``.item()``, ``bool(tensor)``, ``.tolist()`` of a device tensor), data-dependent
    shapes, and tensors made from host data (a host-to-device copy on a GPU)."""

    FORBIDDEN = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
                 torch.ops.aten.masked_select.default, torch.ops.aten.lift_fresh.default}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FORBIDDEN or (func is torch.ops.aten._to_copy.default
                                      and kwargs.get("device") == torch.device("cpu")):
            self.calls.append(str(func))
        return func(*args, **kwargs)


@pytest.mark.parametrize("valid_sizes", [None, PADDED])
def test_the_head_forward_never_synchronises_with_the_host(tiny_model, tiny_config,
                                                          valid_sizes):
    """What the engine captures into a CUDA graph, checked on the CPU: no op of the head's
    forward reads a value back or makes a tensor from host data."""
    features = stage_maps(tiny_model, tiny_config)
    with torch.inference_mode(), HostSyncs() as syncs:
        tiny_model.detection(features, valid_sizes=valid_sizes)
    assert syncs.calls == []


def test_the_sync_detector_catches_a_host_read():
    with HostSyncs() as syncs:
        torch.ones(3).sum().item()
        torch.tensor([1.0, 2.0])
    assert len(syncs.calls) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_captured_head_reads_the_valid_sizes_buffer(tiny_model, tiny_config):
    """Captured once, replayed with other valid sizes copied into the same buffer: equal to
    eager runs, so nothing of the padding was baked into the graph."""
    head = tiny_model.detection.cuda()
    features = [f.cuda() for f in stage_maps(tiny_model.cuda(), tiny_config)]
    valid_sizes = PADDED.cuda()
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                head(features, valid_sizes=valid_sizes)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = head(features, valid_sizes=valid_sizes)
        for sizes in (PADDED, torch.tensor([[32.0, 80.0], [64.0, 40.0]]), UNPADDED):
            valid_sizes.copy_(sizes)
            graph.replay()
            eager = head(features, valid_sizes=sizes.cuda())
            for key in ("pred_logits", "pred_boxes"):
                torch.testing.assert_close(captured[key], eager[key], rtol=1e-5, atol=1e-5)
