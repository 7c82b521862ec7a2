"""Salient object detection metrics by `pysodmetrics` (py_sod_metrics), the field's
reference implementation of the MATLAB evaluation toolbox the RGB-T SOD papers use.

Per image, the prediction (uint8 0..255) is min-max normalised and the ground truth taken
as salient above 128 (pysodmetrics' ``prepare_data``, the toolbox's convention), then:
S-measure (alpha 0.5), weighted F-measure (beta^2 = 1), E-measure over 256 thresholds
and MAE, each averaged over images. E-measure is reported as the mean over the thresholds
(``E_measure_mean``: the usual E_m of RGB-T SOD tables, and this project's table), the
maximum over them (``E_measure_max``) and the adaptive-threshold value.

pysodmetrics is an optional dependency (the ``sod`` extra), imported when an evaluator is
made: its releases pin numpy, OpenCV and scikit-image below the versions the rest of the
project runs (README "Salient object detection"), so it is installed without its pins.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

GT_SALIENT = 255  # ground truth is written 0 / 255 for pysodmetrics (salient above 128)


def sod_metrics_module() -> ModuleType:
    """pysodmetrics (``py_sod_metrics``), or a one-line error saying how to install it."""
    try:
        import py_sod_metrics
    except ImportError as exc:
        raise RuntimeError(f"salient object metrics need the Python package 'pysodmetrics', "
                           f"which is not installed ({exc}): pip install 'pysodmetrics' (or "
                           f"the project's extra: pip install 'ivtuning_ros[sod]'); add "
                           f"--no-deps to keep this environment's numpy and OpenCV") from None
    return py_sod_metrics


class SODEvaluator:
    """Accumulates S-measure, weighted F-measure, E-measure and MAE over images."""

    def __init__(self) -> None:
        py_sod_metrics = sod_metrics_module()
        self.s_measure = py_sod_metrics.Smeasure()
        self.weighted_f = py_sod_metrics.WeightedFmeasure()
        self.e_measure = py_sod_metrics.Emeasure()
        self.mae = py_sod_metrics.MAE()
        self.images = 0

    def add(self, saliency: np.ndarray, ground_truth: np.ndarray) -> None:
        """One image: saliency uint8 (H, W) 0..255; ground_truth (H, W), nonzero = salient."""
        if saliency.shape != ground_truth.shape:
            raise ValueError(f"saliency {saliency.shape} and ground truth "
                             f"{ground_truth.shape} differ in size")
        gt = np.where(ground_truth > 0, GT_SALIENT, 0).astype(np.uint8)
        pred = np.asarray(saliency, np.uint8)
        for metric in (self.s_measure, self.weighted_f, self.e_measure, self.mae):
            metric.step(pred=pred, gt=gt)
        self.images += 1

    def summary(self) -> dict[str, float]:
        """S_measure, weighted_F_measure, E_measure_mean / _max / _adaptive, MAE, images."""
        if not self.images:
            raise ValueError("no images were evaluated")
        e_measure = self.e_measure.get_results()["em"]
        return {"S_measure": float(self.s_measure.get_results()["sm"]),
                "weighted_F_measure": float(self.weighted_f.get_results()["wfm"]),
                "E_measure_mean": float(np.mean(e_measure["curve"])),
                "E_measure_max": float(np.max(e_measure["curve"])),
                "E_measure_adaptive": float(e_measure["adp"]),
                "MAE": float(self.mae.get_results()["mae"]),
                "images": self.images}
