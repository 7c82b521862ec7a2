"""`ivtuning eval --sod`: the engine's saliency maps on a dataset with salient-object ground
truth (VT821 / VT1000 / VT5000, or synthetic scenes), the four SOD metrics per condition and
overall, and a contact sheet (RGB, IR, ground truth, prediction)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data import Sample
from ..ros.overlay import draw_saliency_contour
from ..runtime import Engine
from .contact_sheet import save_contact_sheet
from .sod_metrics import SODEvaluator

ALL = "all"
SHEET_COLUMNS = ("RGB", "IR", "ground truth", "saliency")


def evaluate_sod(engine: Engine, dataset: Sequence[Sample], limit: int | None = None,
                 use_ir: bool = True, progress: bool = True,
                 sheet_rows: int = 6) -> tuple[dict, list[dict]]:
    """(report, examples): report has ``dataset``, ``model``, ``input`` ("rgb+ir" or
    "rgb"), ``metrics`` {condition or "all": `SODEvaluator.summary`}; examples are the
    first ``sheet_rows`` samples with their saliency, for `contact_sheet`."""
    if engine.config.sod is None:
        raise ValueError(f"model '{engine.config.name}' has no salient object detection head "
                         f"(a 'sod' section in its config)")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    evaluators: dict[str, SODEvaluator] = {ALL: SODEvaluator()}
    examples = []
    for index in tqdm(range(count), desc="eval --sod", unit="image", disable=not progress):
        sample = dataset[index]
        if sample.saliency is None:
            raise ValueError(f"sample '{sample.name}' of {dataset.name} has no salient-object "
                             f"ground truth; use --data vt or synthetic")
        result = engine.infer(sample.rgb, sample.ir if use_ir else None, sample.homography)
        for key in {ALL, sample.condition or ALL}:
            evaluators.setdefault(key, SODEvaluator()).add(result.saliency, sample.saliency)
        if len(examples) < sheet_rows:
            examples.append({"sample": sample, "saliency": result.saliency})
    report = {"dataset": dataset.name, "model": engine.config.name,
              "input": "rgb+ir" if use_ir else "rgb", "images": count,
              "metrics": {key: evaluator.summary() for key, evaluator in evaluators.items()}}
    return report, examples


def contact_sheet(examples: list[dict], path: str | Path, tile_width: int = 200) -> Path:
    """One row per example: RGB, IR (stretched), ground truth, saliency with its 0.5 contour."""
    if not examples:
        raise ValueError("no images to draw")
    rows = []
    for example in examples:
        sample, saliency = example["sample"], example["saliency"]
        height, width = sample.rgb.shape[:2]
        ir = display_ir(sample.ir, (width, height))
        tiles = [sample.rgb, ir, np.repeat((sample.saliency > 0)[..., None] * 255, 3, axis=2),
                 saliency_view(saliency)]
        tile_height = max(1, round(height * tile_width / width))
        rows.append([Image.fromarray(np.ascontiguousarray(tile, dtype=np.uint8)).resize(
            (tile_width, tile_height)) for tile in tiles])
    return save_contact_sheet(rows, list(SHEET_COLUMNS), tile_width, path)


def display_ir(ir: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """IR stretched between its 1st and 99th percentiles, grey RGB at ``size`` (w, h)."""
    if ir is None:
        return np.zeros((size[1], size[0], 3), np.uint8)
    low, high = np.percentile(ir, (1, 99))
    unit = np.clip((ir.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)
    grey = cv2.resize((unit * 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)
    return np.repeat(grey[..., None], 3, axis=2)


def saliency_view(saliency: np.ndarray) -> np.ndarray:
    """The saliency map in grey with its 0.5 contour in yellow, RGB uint8."""
    view = np.repeat(saliency[..., None], 3, axis=2).copy()
    draw_saliency_contour(view, saliency)
    return view
