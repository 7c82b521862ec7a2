"""`ivtuning eval --fusion`: M2PN and the three baselines on the same registered pairs,
the ten standard metrics each (mean over the pairs, per condition), and a contact sheet."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from ..model import ModelConfig
from ..model.fusion.color import luminance, restore_color, unnormalise
from ..model.fusion.m2pn import M2PN
from ..train.batch import Augmentation, BatchBuilder
from .baselines import BASELINES
from .metrics import METRICS, fusion_metrics


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


def evaluate_fusion(model: M2PN | None, config: ModelConfig, dataset,
                    limit: int | None = None, progress: bool = True,
                    sheet_rows: int = 4) -> tuple[dict, list[dict]]:
    """(report, examples): report[condition][method][metric] means over the pairs (plus
    'all'), and the first ``sheet_rows`` pairs' images for the contact sheet."""
    builder = BatchBuilder(config, Augmentation(), use_ir=True)
    sums: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    counts: dict = defaultdict(int)
    examples = []
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in tqdm(range(count), unit="pair", desc="fusion eval", disable=not progress):
        sample = dataset[index]
        batch = builder([sample])
        height, width = batch.valid_sizes[0].round().long().tolist()
        rgb, ir = unnormalise(batch.rgb[..., :height, :width], batch.ir[..., :height, :width],
                              config.input)
        fused = fuse_pair(model, rgb, ir)
        condition = sample.condition or "real"
        a, b = 255 * ir[0, 0].numpy(), 255 * luminance(rgb)[0, 0].numpy()
        for method, image in fused.items():
            for metric, value in fusion_metrics(255 * image, a, b).items():
                sums[condition][method][metric] += value
                sums["all"][method][metric] += value
        counts[condition] += 1
        counts["all"] += 1
        if len(examples) < sheet_rows:
            examples.append({"rgb": rgb, "ir": ir, "fused": fused, "condition": condition})
    report = {condition: {method: {metric: round(total / counts[condition], 4)
                                   for metric, total in metrics.items()}
                          for method, metrics in methods.items()}
              for condition, methods in sums.items()}
    return report, examples


def contact_sheet(examples: list[dict], path: str | Path, tile_width: int = 240) -> Path:
    """Rows of pairs; columns: visible, IR, then each method's fused image (M2PN's in the
    visible colour)."""
    columns = ["visible", "IR", *examples[0]["fused"]] if examples else []
    tiles = []
    for example in examples:
        rgb = example["rgb"]
        row = [_to_pil(rgb[0]), _to_pil(example["ir"][0])]
        for name, image in example["fused"].items():
            y = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
            row.append(_to_pil(restore_color(y, rgb)[0] if name == "m2pn" else y[0]))
        tiles.append(row)
    if not tiles:
        raise ValueError("no pairs to draw")
    scale = tile_width / tiles[0][0].width
    tile_height = round(tiles[0][0].height * scale)
    sheet = Image.new("RGB", (tile_width * len(columns), 18 + tile_height * len(tiles)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for column, name in enumerate(columns):
        draw.text((column * tile_width + 4, 3), name, fill="black")
    for row_index, row in enumerate(tiles):
        for column, tile in enumerate(row):
            sheet.paste(tile.resize((tile_width, tile_height)),
                        (column * tile_width, 18 + row_index * tile_height))
    path = Path(path)
    sheet.save(path)
    return path


def _to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) in [0, 1] -> an RGB PIL image."""
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return Image.fromarray(array)


def markdown_tables(report: dict) -> str:
    """One table per condition: methods as rows, the ten metrics as columns."""
    parts = []
    for condition, methods in report.items():
        lines = [f"**{condition}**", "", "| method | " + " | ".join(METRICS) + " |",
                 "|" + " --- |" * (len(METRICS) + 1)]
        for method, metrics in methods.items():
            best = {m: max(v[m] for v in methods.values()) for m in METRICS}
            lines.append(f"| {method} | " + " | ".join(
                f"**{metrics[m]:.3f}**" if metrics[m] == best[m] else f"{metrics[m]:.3f}"
                for m in METRICS) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
