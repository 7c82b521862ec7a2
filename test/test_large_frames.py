"""Large and degenerate frames in the engine (issue 23): class maps of large frames come from
bounded-size logits, a large layout's pipeline does not outlive the next layout, and frames
too elongated for the network input are refused by a check."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ivtuning_ros.model import postprocess
from ivtuning_ros.model.postprocess import letterbox_for, segmentation_to_original
from ivtuning_ros.runtime import Engine, EngineOptions
from ivtuning_ros.runtime import engine as engine_module
from ivtuning_ros.runtime.backends.onnx_export import export_onnx
from ivtuning_ros.runtime.preprocess import Preprocessor
from ivtuning_ros.runtime.step import FrameLayout, FrameStep

from .test_backends import assert_runtimes_match_torch


def smooth_logits(classes: int, height: int, width: int) -> torch.Tensor:
    """Logits that vary slowly, as a network's upsampled output does: few class borders."""
    coarse = torch.randn(1, classes, height // 8, width // 8, generator=torch.Generator()
                         .manual_seed(0))
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def test_a_large_class_map_comes_from_bounded_logits_and_matches_the_full_resize(
        monkeypatch):
    # As 512x640 logits, a 2^21 bound and a 4096x5120 frame, scaled down by 1/10.7 a side.
    monkeypatch.setattr(postprocess, "MAX_LOGIT_PIXELS", 48 * 64 * 6.4)
    letterbox = letterbox_for(384, 480, 48, 64)  # 10 times the bound, padded right
    logits = smooth_logits(5, 48, 64)
    classes = segmentation_to_original(logits, letterbox)
    assert classes.shape == (1, 384, 480) and classes.dtype == torch.uint8
    full = F.interpolate(logits[..., :, :60], size=(384, 480), mode="bilinear",
                         align_corners=False).argmax(1)
    agreement = (classes.long() == full).float().mean().item()
    assert agreement > 0.98, f"only {agreement:.3f} of the pixels agree with the full resize"


def test_a_class_map_within_the_bound_is_the_full_resize():
    letterbox = letterbox_for(720, 1280, 48, 64)
    logits = smooth_logits(5, 48, 64)
    rows, cols = letterbox.valid_slices
    full = F.interpolate(logits[..., rows, cols], size=(720, 1280), mode="bilinear",
                         align_corners=False).argmax(1)
    assert torch.equal(segmentation_to_original(logits, letterbox), full)


def test_the_bounded_class_map_exports_and_both_runtimes_match_torch(
        tiny_model, tiny_config, monkeypatch, tmp_path):
    monkeypatch.setattr(postprocess, "MAX_LOGIT_PIXELS", 2000)  # the 70x70 frame is over it
    layout = FrameLayout((70, 70), (50, 60), "uint16")
    step = FrameStep(tiny_model, tiny_config, layout, 100, torch.device("cpu"))
    assert_runtimes_match_torch(step, export_onnx(step, tmp_path / "tiny.onnx"), tmp_path)


def test_a_large_layout_is_released_once_another_layout_runs(tiny_model, tiny_config,
                                                              monkeypatch):
    monkeypatch.setattr(engine_module, "LARGE_LAYOUT_PIXELS", 100 * 100)
    engine = Engine(tiny_model, tiny_config, EngineOptions(max_layouts=4))
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    large = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    engine.infer(small)
    result = engine.infer(large)
    assert result.class_map.shape == (120, 160)
    large_pipeline = next(reversed(engine._pipelines.values()))
    assert len(engine._pipelines) == 2  # kept while it is the most recent layout
    engine.infer(small)
    assert len(engine._pipelines) == 1
    assert large_pipeline.buffers is None  # released, not just unlisted


@pytest.mark.parametrize("shape", [(1, 65535, 3), (65535, 1, 3), (2, 20000, 3)])
def test_degenerate_shapes_are_refused_by_a_check(tiny_model, tiny_config, shape):
    engine = Engine(tiny_model, tiny_config)
    with pytest.raises(ValueError, match="is degenerate"):
        engine.infer(np.zeros(shape, np.uint8), np.zeros((512, 640), np.uint16))
    assert not engine._pipelines  # refused before any pipeline was built


def test_an_elongated_frame_that_still_covers_a_pixel_runs(tiny_model, tiny_config):
    engine = Engine(tiny_model, tiny_config)  # 64x80 input: 1 x 80 covers 1 x 1 pixel there
    result = engine.infer(np.zeros((1, 80, 3), np.uint8))
    assert result.class_map.shape == (1, 80)


def test_a_large_frame_is_shrunk_before_it_becomes_float(tiny_config):
    """A 16 MP frame is resized as uint8 (no 200 MB float copy): the network input agrees
    with the float resize within one grey level."""
    preprocessor = Preprocessor(tiny_config.input)
    rgb = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4096, 4096, 3),
                                                             dtype=np.uint8))
    letterbox = letterbox_for(4096, 4096, tiny_config.input.height, tiny_config.input.width)
    shrunk = preprocessor.rgb(rgb, letterbox)
    rows, cols = letterbox.valid_slices
    size = (rows.stop - rows.start, cols.stop - cols.start)
    as_float = F.interpolate(rgb.permute(2, 0, 1)[None].float(), size=size,
                                               mode="bilinear", align_corners=False)
    expected = (as_float - preprocessor.rgb_mean) / preprocessor.rgb_std
    one_level = 1.0 / preprocessor.rgb_std.min().item()
    assert (shrunk[..., rows, cols] - expected).abs().max() <= one_level + 1e-5
