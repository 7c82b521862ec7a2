"""`ivtuning eval --fusion`: M2PN and the three baselines on the same registered pairs at
each pair's own resolution, the ten standard metrics each (mean over the pairs, per
condition) plus the dark-region lift, and a contact sheet."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..evaluation.contact_sheet import save_contact_sheet
from ..model.config import InputConfig
from ..model.image_fusion.color import luminance, restore_color
from ..model.image_fusion.m2pn import M2PN
from .baselines import BASELINES
from .metrics import METRICS, fusion_metrics
from .pairs import unit_pair

DARK_PERCENTILE = 25  # a source's darkest quarter counts as dark (dark_lift)


def fuse_pair(model: M2PN | None, rgb: torch.Tensor, ir: torch.Tensor) -> dict[str, np.ndarray]:
    """Every method's fused luminance (H, W) in [0, 1] for one pair in [0, 1]:
    rgb (1, 3, H, W), ir (1, 1, H, W)."""
    y = luminance(rgb)
    ir_np, y_np = ir[0, 0].numpy(), y[0, 0].numpy()
    fused = {name: method(ir_np, y_np) for name, method in BASELINES.items()}
    if model is not None:
        with torch.no_grad():
            fused["m2pn"] = model(ir, y).fused.clamp(0, 1)[0, 0].numpy()
    return fused


def evaluate_fusion(model: M2PN | None, config: InputConfig, dataset,
                    indices: list[int] | None = None, width: int | None = None,
                    progress: bool = True, sheet_rows: int = 4) -> tuple[dict, list[dict]]:
    """(report, examples) over the pairs at ``indices`` (default all), each at its own
    resolution (``width``: resized to it first). report[condition][method][metric]: means
    over the pairs, "all" always, one entry per condition the data set names; each method
    also has ``dark_lift``. Examples: the first ``sheet_rows`` pairs' images."""
    sums: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    counts: dict = defaultdict(int)
    examples = []
    indices = list(range(len(dataset))) if indices is None else indices
    for index in tqdm(indices, unit="pair", desc="fusion eval", disable=not progress):
        sample = dataset[index]
        rgb, ir = unit_pair(sample, config, width)
        fused = fuse_pair(model, rgb, ir)
        y = luminance(rgb)
        groups = ["all", sample.condition] if sample.condition else ["all"]
        a, b = 255 * ir[0, 0].numpy(), 255 * y[0, 0].numpy()
        for method, image in fused.items():
            values = {**fusion_metrics(255 * image, a, b),
                      "dark_lift": dark_lift(image, ir[0, 0].numpy(), y[0, 0].numpy())}
            for group in groups:
                for metric, value in values.items():
                    sums[group][method][metric] += value
        for group in groups:
            counts[group] += 1
        if len(examples) < sheet_rows:
            examples.append({"rgb": rgb, "ir": ir, "fused": fused, "name": sample.name})
    return ({group: {method: {metric: round(total / counts[group], 4)
                              for metric, total in metrics.items()}
                     for method, metrics in methods.items()}
             for group, methods in sums.items()}, examples)


def dark_lift(fused: np.ndarray, ir: np.ndarray, visible: np.ndarray) -> float:
    """How far a fused luminance rises above both sources where both are dark (each under
    its own `DARK_PERCENTILE`: a cold, unlit sky or road): the grey veil over a night
    scene. 0 or less keeps the darks; the average lies between the sources, max-absolute
    on the brighter."""
    dark = ((visible <= np.percentile(visible, DARK_PERCENTILE))
            & (ir <= np.percentile(ir, DARK_PERCENTILE)))
    return float((fused[dark] - np.maximum(ir, visible)[dark]).mean()) if dark.any() else 0.0


def contact_sheet(examples: list[dict], path: str | Path, tile_width: int = 240) -> Path:
    """Rows of pairs, each at its own aspect ratio; columns: visible, IR, then each method's
    fused image (M2PN's in the visible colour)."""
    if not examples:
        raise ValueError("no pairs to draw")
    columns = ["visible", "IR", *examples[0]["fused"]]
    rows = []
    for example in examples:
        rgb = example["rgb"]
        row = [_to_pil(rgb[0]), _to_pil(example["ir"][0])]
        for name, image in example["fused"].items():
            y = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
            row.append(_to_pil(restore_color(y, rgb)[0] if name == "m2pn" else y[0]))
        height = max(1, round(row[0].height * tile_width / row[0].width))
        rows.append([tile.resize((tile_width, height)) for tile in row])
    return save_contact_sheet(rows, list(columns), tile_width, path)


def _to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) in [0, 1] -> an RGB PIL image."""
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return Image.fromarray(array)


def markdown_tables(report: dict) -> str:
    """One table per condition: methods as rows, the ten metrics (best in bold: higher is
    better for each) and the dark-region lift (nearest 0 is best) as columns."""
    parts = []
    for condition, methods in report.items():
        lines = [f"**{condition}**", "", "| method | " + " | ".join(METRICS) + " | dark lift |",
                 "|" + " --- |" * (len(METRICS) + 2)]
        best = {m: max(v[m] for v in methods.values()) for m in METRICS}
        for method, metrics in methods.items():
            lines.append(f"| {method} | " + " | ".join(
                f"**{metrics[m]:.3f}**" if metrics[m] == best[m] else f"{metrics[m]:.3f}"
                for m in METRICS) + f" | {metrics['dark_lift']:+.3f} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
