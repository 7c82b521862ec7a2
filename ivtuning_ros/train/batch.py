"""Samples -> network tensors and targets, with paired augmentation (training only).

Every sample goes through the engine's own preprocessing (`runtime.preprocess`):
letterbox, IR gain control and registration into the RGB geometry, normalisation.
Augmentation then runs on the registered tensors, so one geometric transform moves
RGB, IR, boxes and mask together; photometric changes are drawn per modality. The
image stays at the top left of the input (flips mirror the image region only, zoom
windows start inside it), so each sample's ``valid_sizes`` tells the model what is
padding, as at inference; boxes are normalised to that region, as mmdet normalises
them to ``img_shape``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.sample import Sample
from ..model.box_ops import box_xyxy_to_cxcywh
from ..model.config import ModelConfig
from ..runtime.preprocess import Preprocessor, network_letterbox
from ..runtime.registration import ir_sampling_grid, scaling_homography

IGNORE = 255  # segmentation label of letterbox padding and unlabelled crops
MIN_BOX_PIXELS = 4.0


@dataclass
class Augmentation:
    """Probabilities and ranges of the paired augmentation; ``enabled`` False for evaluation.

    Photometric ranges are in normalised units (one unit = one std of the input).
    """

    enabled: bool = True
    hflip: float = 0.5
    max_zoom: float = 1.4
    rgb_brightness: float = 0.4
    rgb_contrast: float = 0.25
    ir_gain: float = 0.15
    ir_noise: float = 0.1
    crop: tuple[int, int] | None = None  # a random (height, width) window, taken last


@dataclass
class Batch:
    """rgb (B, 3, H, W); ir (B, C, H, W) or None; targets per image (labels, boxes cxcywh
    normalised to the image region); masks (B, H, W) int64 with IGNORE, or None;
    valid_sizes (B, 2) float32 (height, width) of each image region, at the top left;
    saliency (B, H, W) int64 in {0, 1, IGNORE}, or None."""

    rgb: Tensor
    ir: Tensor | None
    targets: list[dict[str, Tensor]]
    masks: Tensor | None
    valid_sizes: Tensor
    saliency: Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        return Batch(self.rgb.to(device), None if self.ir is None else self.ir.to(device),
                     [{k: v.to(device) for k, v in t.items()} for t in self.targets],
                     None if self.masks is None else self.masks.to(device),
                     self.valid_sizes.to(device),
                     None if self.saliency is None else self.saliency.to(device))


class BatchBuilder:
    """Turns `Sample`s into a `Batch` for one model config."""

    def __init__(self, config: ModelConfig, augmentation: Augmentation, use_ir: bool = True,
                 seed: int = 0) -> None:
        self.config = config
        self.augmentation = augmentation
        self.use_ir = use_ir
        self.preprocessor = Preprocessor(config.input)
        self.rng = np.random.default_rng(seed)

    def __call__(self, samples: list[Sample]) -> Batch:
        items = [self._item(sample) for sample in samples]
        rgb = torch.cat([item[0] for item in items])
        ir = torch.cat([item[1] for item in items]) if self.use_ir else None
        masks = torch.stack([item[3] for item in items]) if items[0][3] is not None else None
        valid_sizes = torch.tensor([item[4] for item in items], dtype=torch.float32)
        saliency = None
        if items[0][5] is not None:
            saliency = torch.stack([item[5] for item in items])
        return Batch(rgb, ir, [item[2] for item in items], masks, valid_sizes, saliency)

    def _item(self, sample: Sample) -> tuple[Tensor, Tensor | None, dict, Tensor | None,
                                             tuple[int, int], Tensor | None]:
        letterbox = network_letterbox(sample.rgb.shape[0], sample.rgb.shape[1],
                                      self.config.input)
        with torch.no_grad():
            rgb = self.preprocessor.rgb(torch.from_numpy(sample.rgb), letterbox)
            ir = None
            if self.use_ir:
                homography = sample.homography if sample.homography is not None else \
                    scaling_homography(*sample.ir.shape, *sample.rgb.shape[:2])
                grid = ir_sampling_grid(homography, sample.ir.shape, letterbox)
                ir = self.preprocessor.ir(torch.from_numpy(np.ascontiguousarray(sample.ir)),
                                          grid, self.config.prompter.ir_in_channels)
        boxes = letterbox.to_input(torch.from_numpy(sample.boxes).float()) if len(
            sample.boxes) else torch.zeros(0, 4)
        labels = torch.from_numpy(sample.labels).long()
        mask = _letterbox_mask(sample.mask, letterbox) if sample.mask is not None else None
        saliency = (_letterbox_mask(sample.saliency, letterbox)
                    if sample.saliency is not None else None)
        # The saliency map rides with the class mask through every geometric change: one
        # (2, H, W) stack of label maps, split again after.
        maps = _stack_maps(mask, saliency)
        valid = letterbox.valid_size
        if self.augmentation.enabled:
            rgb, ir, boxes, labels, maps, valid = self._augment(rgb, ir, boxes, labels, maps,
                                                                valid)
        mask, saliency = _split_maps(maps, mask is not None, saliency is not None)
        height, width = valid
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        target = {"labels": labels, "boxes": box_xyxy_to_cxcywh(boxes / scale)}
        return rgb, ir, target, mask, valid, saliency

    def _augment(self, rgb, ir, boxes, labels, mask, valid):
        """The paired augmentation; ``valid`` (height, width) of the top-left image region
        comes back updated."""
        aug, rng = self.augmentation, self.rng
        height, width = rgb.shape[-2:]
        valid_h, valid_w = valid
        if rng.random() < aug.hflip:
            # Mirror the image region only: the padding stays right, as mmdet flips
            # images before padding them.
            rgb, ir, mask = (_flip_columns(t, valid_w) for t in (rgb, ir, mask))
            boxes = torch.stack([valid_w - boxes[:, 2], boxes[:, 1], valid_w - boxes[:, 0],
                                 boxes[:, 3]], dim=1)
        zoom = rng.uniform(1.0, aug.max_zoom)
        if zoom > 1.0:
            crop_w, crop_h = width / zoom, height / zoom
            # The window starts inside the image, so the image stays at the top left.
            x0 = rng.uniform(0, max(0.0, valid_w - crop_w))
            y0 = rng.uniform(0, max(0.0, valid_h - crop_h))
            rgb, ir, mask = (_crop_resize(t, x0, y0, crop_w, crop_h, mode)
                             for t, mode in ((rgb, "bilinear"), (ir, "bilinear"),
                                             (mask, "nearest")))
            valid_h = min(height, round((valid_h - y0) * zoom))
            valid_w = min(width, round((valid_w - x0) * zoom))
            boxes = (boxes - torch.tensor([x0, y0, x0, y0])) * zoom
            boxes = boxes.clamp(min=0).minimum(torch.tensor([valid_w, valid_h, valid_w,
                                                             valid_h]))
            keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_PIXELS) & (
                (boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_PIXELS)
            boxes, labels = boxes[keep], labels[keep]
        if aug.crop is not None:
            rgb, ir, mask, boxes, labels, (valid_h, valid_w) = self._random_crop(
                rgb, ir, mask, boxes, labels, (valid_h, valid_w))
            height, width = rgb.shape[-2:]
        # The padding keeps the values the engine gives it, as mmdet pads after
        # augmenting: the zoom's resampling blurs the image's edge into it, and
        # photometric changes touch the image only.
        image = ((torch.arange(height)[:, None] < valid_h)
                 & (torch.arange(width)[None, :] < valid_w))
        contrast = 1 + rng.uniform(-aug.rgb_contrast, aug.rgb_contrast)
        brightness = rng.uniform(-aug.rgb_brightness, aug.rgb_brightness)
        rgb = torch.where(image, rgb * contrast + brightness, 0.0)
        mask = None if mask is None else torch.where(image, mask, IGNORE)
        if ir is not None:
            gain = 1 + rng.uniform(-aug.ir_gain, aug.ir_gain)
            noise = torch.from_numpy(rng.normal(0, aug.ir_noise, ir.shape[-2:])).float()
            ir = torch.where(image, ir * gain + noise, self._ir_padding())
        return rgb, ir, boxes, labels, mask, (valid_h, valid_w)

    def _random_crop(self, rgb, ir, mask, boxes, labels, valid):
        """A window of ``crop`` pixels starting inside the image region (so the image stays
        at the top left), padded where the input is smaller; boxes shift and clip with it."""
        crop_h, crop_w = self.augmentation.crop
        valid_h, valid_w = valid
        y0 = int(self.rng.integers(0, max(0, valid_h - crop_h) + 1))
        x0 = int(self.rng.integers(0, max(0, valid_w - crop_w) + 1))
        rgb, ir, mask = (None if t is None else _window(t, y0, x0, crop_h, crop_w, fill)
                         for t, fill in ((rgb, 0.0), (ir, float(self._ir_padding())),
                                         (mask, IGNORE)))
        valid_h, valid_w = min(crop_h, valid_h - y0), min(crop_w, valid_w - x0)
        boxes = (boxes - torch.tensor([x0, y0, x0, y0])).clamp(min=0).minimum(
            torch.tensor([valid_w, valid_h, valid_w, valid_h]))
        keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_PIXELS) & (
            (boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_PIXELS)
        return rgb, ir, mask, boxes[keep], labels[keep], (valid_h, valid_w)

    def _ir_padding(self) -> Tensor:
        """The IR input's value where the IR camera sees nothing, as the engine computes it."""
        config = self.config.input
        return (torch.zeros(()) - config.ir_mean) / config.ir_std


def _stack_maps(mask: Tensor | None, saliency: Tensor | None) -> Tensor | None:
    """The label maps present, stacked (n, H, W); None when there are none."""
    present = [m for m in (mask, saliency) if m is not None]
    return torch.stack(present) if present else None


def _split_maps(maps: Tensor | None, has_mask: bool,
                has_saliency: bool) -> tuple[Tensor | None, Tensor | None]:
    """The inverse of `_stack_maps`."""
    parts = iter(maps) if maps is not None else iter(())
    return (next(parts) if has_mask else None), (next(parts) if has_saliency else None)


def _window(tensor: Tensor, y0: int, x0: int, height: int, width: int, fill) -> Tensor:
    """The (height, width) window at (y0, x0) of the last two dimensions, ``fill`` beyond."""
    out = torch.full((*tensor.shape[:-2], height, width), fill, dtype=tensor.dtype)
    part = tensor[..., y0:y0 + height, x0:x0 + width]
    out[..., :part.shape[-2], :part.shape[-1]] = part
    return out


def _flip_columns(tensor: Tensor | None, width: int) -> Tensor | None:
    """Mirror the first ``width`` columns (the last dimension), keep the rest."""
    if tensor is None:
        return None
    return torch.cat([tensor[..., :width].flip(-1), tensor[..., width:]], dim=-1)


def _crop_resize(tensor: Tensor | None, x0: float, y0: float, w: float, h: float,
                 mode: str) -> Tensor | None:
    """Crop the window (x0, y0, w, h) of a (1, C, H, W) image or (n, H, W) / (H, W) label
    maps, resize back."""
    if tensor is None:
        return None
    labels_shape = tensor.shape
    image = tensor if tensor.dim() == 4 else tensor.reshape(1, -1, *labels_shape[-2:]).float()
    height, width = image.shape[-2:]
    theta = torch.tensor([[w / width, 0, (2 * x0 + w) / width - 1],
                          [0, h / height, (2 * y0 + h) / height - 1]], dtype=torch.float32)
    grid = F.affine_grid(theta[None], (1, image.shape[1], height, width), align_corners=False)
    if mode == "nearest":
        out = F.grid_sample(image + 1, grid, mode="nearest", align_corners=False) - 1
        return out[0].round().long().masked_fill(out[0] < 0, IGNORE).reshape(labels_shape)
    return F.grid_sample(image, grid, mode="bilinear", align_corners=False)


def _letterbox_mask(mask: np.ndarray, letterbox) -> Tensor:
    """(H, W) class ids -> (in_h, in_w) int64, nearest resize, padding = IGNORE."""
    rows, cols = letterbox.valid_slices
    resized = F.interpolate(torch.from_numpy(mask)[None, None].float(),
                            size=(rows.stop - rows.start, cols.stop - cols.start),
                            mode="nearest")[0, 0].long()
    out = torch.full((letterbox.in_h, letterbox.in_w), IGNORE, dtype=torch.long)
    out[rows, cols] = resized
    return out
