"""The inference engine: equal to the steps by hand, registration equal to OpenCV, gain
control as specified (non-finite IR pixels included), static-buffer reuse equal to fresh
eager runs across many frames."""
import cv2
import numpy as np
import pytest
import torch

from ivtuning_ros.model import build_model
from ivtuning_ros.model.config import InputConfig
from ivtuning_ros.model.postprocess import postprocess, segmentation_to_original
from ivtuning_ros.runtime import (
    Engine,
    EngineOptions,
    Preprocessor,
    count_non_finite,
    warp_ir_to_rgb,
)
from ivtuning_ros.runtime.preprocess import ir_to_unit, network_letterbox
from ivtuning_ros.runtime.registration import ir_sampling_grid, scaling_homography

HOMOGRAPHY = np.array([[1.9, 0.05, 12.0], [-0.03, 1.85, 20.0], [2e-5, 1e-5, 1.0]])


def frames(seed, rgb_size=(72, 96), ir_size=(40, 50), ir_dtype=np.uint16):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (*rgb_size, 3), dtype=np.uint8)
    if ir_dtype == np.float32:
        ir = rng.normal(30.0, 8.0, ir_size).astype(np.float32)
    else:
        ir = rng.integers(0, np.iinfo(ir_dtype).max, ir_size, dtype=ir_dtype)
    return rgb, ir


def by_hand(model, config, rgb, ir, homography, threshold=0.0, max_detections=100):
    """Preprocessing + model + post-processing written out, fresh for every frame."""
    letterbox = network_letterbox(rgb.shape[0], rgb.shape[1], config.input)
    pre = Preprocessor(config.input)
    with torch.inference_mode():
        rgb_in = pre.rgb(torch.from_numpy(rgb), letterbox)
        ir_in = None
        if ir is not None:
            grid = ir_sampling_grid(homography, ir.shape, letterbox)
            ir_in = pre.ir(torch.from_numpy(ir), grid, config.prompter.ir_in_channels)
        valid_sizes = torch.tensor([letterbox.valid_size], dtype=torch.float32)
        out = model(rgb_in, ir_in, valid_sizes=valid_sizes)
        dets = postprocess(out["pred_logits"], out["pred_boxes"], letterbox,
                           num_select=config.detection.num_select, score_threshold=threshold,
                           max_detections=max_detections)[0]
        class_map = segmentation_to_original(out["seg_logits"], letterbox)[0]
    return dets, class_map.to(torch.uint8).numpy()


def assert_result_equals(result, expected):
    dets, class_map = expected
    np.testing.assert_array_equal(result.detections.labels, dets["labels"].numpy())
    np.testing.assert_allclose(result.detections.scores, dets["scores"].numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(result.detections.boxes, dets["boxes"].numpy(), rtol=0, atol=0)
    np.testing.assert_array_equal(result.class_map, class_map)


def test_engine_equals_the_steps_by_hand(tiny_model, tiny_config):
    engine = Engine(tiny_model, tiny_config, EngineOptions(score_threshold=0.0))
    rgb, ir = frames(0)
    result = engine.infer(rgb, ir, HOMOGRAPHY)
    assert result.ir_used
    assert result.class_map.shape == rgb.shape[:2] and result.class_map.dtype == np.uint8
    assert len(result.detections.scores) > 0
    assert_result_equals(result, by_hand(tiny_model, tiny_config, rgb, ir, HOMOGRAPHY))
    assert {"preprocess", "model", "postprocess", "total"} <= set(result.timings_ms)


def test_static_buffers_across_many_frames_equal_fresh_eager_runs(tiny_model, tiny_config):
    """Buffer reuse, grid caching, homography changes and IR dropout: the logic CUDA
    graph replay relies on, checked frame by frame against fresh computations."""
    engine = Engine(tiny_model, tiny_config, EngineOptions(score_threshold=0.2,
                                                           max_detections=7))
    other = HOMOGRAPHY + np.array([[0, 0, 3.0], [0, 0, -2.0], [0, 0, 0]])  # camera bumped
    schedule = [HOMOGRAPHY] * 5 + [other] * 5 + [None] * 3 + [HOMOGRAPHY] * 3
    for frame, homography in enumerate(schedule):
        rgb, ir = frames(frame)
        ir_missing = frame in (11, 12)
        result = engine.infer(rgb, None if ir_missing else ir, homography)
        assert result.ir_used is not ir_missing
        used = homography if homography is not None else scaling_homography(
            *ir.shape, *rgb.shape[:2])
        expected = by_hand(tiny_model, tiny_config, rgb, None if ir_missing else ir, used,
                           threshold=0.2, max_detections=7)
        assert_result_equals(result, expected)
    assert len(engine._pipelines) == 2  # one layout with IR, one without


def test_threshold_and_class_filter_change_at_runtime(tiny_model, tiny_config):
    engine = Engine(tiny_model, tiny_config, EngineOptions(score_threshold=0.0))
    rgb, ir = frames(3)
    everything = engine.infer(rgb, ir).detections
    engine.set_score_threshold(float(np.median(everything.scores)))
    assert 0 < len(engine.infer(rgb, ir).detections.scores) < len(everything.scores)
    engine.set_score_threshold(0.0)
    engine.set_class_filter(["Car"])
    cars = engine.infer(rgb, ir).detections
    assert set(cars.labels.tolist()) <= {1}
    with pytest.raises(ValueError, match="unknown class name"):
        engine.set_class_filter(["Unicorn"])


@pytest.mark.parametrize("ir_size", [(48, 64), (40, 50)])
def test_warp_matches_opencv(ir_size):
    rng = np.random.default_rng(1)
    # A smooth frame: interpolation schemes then agree closely.
    small = rng.random((ir_size[0] // 8 + 1, ir_size[1] // 8 + 1)).astype(np.float32)
    ir = cv2.resize(small, (ir_size[1], ir_size[0]), interpolation=cv2.INTER_CUBIC)
    homography = np.array([[1.5, 0.1, 5.0], [-0.05, 1.4, 3.0], [1e-4, -2e-4, 1.0]])
    rgb_size = (80, 110)
    ours = warp_ir_to_rgb(torch.from_numpy(ir), homography, rgb_size).numpy()
    reference = cv2.warpPerspective(ir, homography, (rgb_size[1], rgb_size[0]),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=0)
    inside = cv2.warpPerspective(np.ones_like(ir), homography, (rgb_size[1], rgb_size[0]),
                                 flags=cv2.INTER_NEAREST) > 0
    interior = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert interior.sum() > 0.3 * interior.size
    np.testing.assert_allclose(ours[interior], reference[interior], atol=0.01)
    assert np.abs(ours - reference).mean() < 0.01


def reference_grid(homography, ir_size, letterbox):
    """`ir_sampling_grid` written out per pixel in float64 NumPy."""
    rows, cols = letterbox.valid_slices
    u = (np.arange(letterbox.in_w) - cols.start + 0.5) * letterbox.orig_w / (
        cols.stop - cols.start) - 0.5
    v = (np.arange(letterbox.in_h) - rows.start + 0.5) * letterbox.orig_h / (
        rows.stop - rows.start) - 0.5
    xx, yy = np.meshgrid(u, v)
    inside = (xx > -0.5) & (xx < letterbox.orig_w - 0.5) & (yy > -0.5) & (
        yy < letterbox.orig_h - 0.5)
    points = np.stack([xx, yy, np.ones_like(xx)], -1) @ np.linalg.inv(homography).T
    src = points[..., :2] / points[..., 2:]
    grid = (src + 0.5) / np.array([ir_size[1], ir_size[0]]) * 2 - 1
    grid[~inside] = -2.0
    return grid


@pytest.mark.parametrize("rgb_size, input_size", [((72, 96), (64, 80)), ((300, 170), (64, 64)),
                                                  ((1080, 1920), (1080, 1920))])
def test_sampling_grid_is_float32_and_equals_the_float64_reference(rgb_size, input_size):
    letterbox = network_letterbox(*rgb_size, InputConfig(height=input_size[0],
                                                         width=input_size[1]))
    grid = ir_sampling_grid(HOMOGRAPHY, (40, 50), letterbox)
    assert grid.dtype == torch.float32 and grid.shape == (1, *input_size, 2)
    expected = reference_grid(HOMOGRAPHY, (40, 50), letterbox)
    np.testing.assert_array_equal(grid[0].numpy() == -2.0, expected == -2.0)  # padding
    # float32 rounding: a few ulps (1e-6 of [-1, 1] is 2.5e-5 of a pixel of this IR frame)
    np.testing.assert_allclose(grid[0].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_letterboxed_ir_lands_on_the_letterboxed_rgb():
    """Same scene in both cameras (IR = half-resolution grey): the registered IR input
    matches the grey of the RGB input, padding included: the image at the top left, the
    padding below it."""
    config = InputConfig(height=64, width=64)
    rgb = np.zeros((48, 96, 3), np.uint8)
    rgb[10:30, 20:60] = 255
    grey = cv2.resize(rgb[..., 0], (48, 24), interpolation=cv2.INTER_AREA)
    letterbox = network_letterbox(48, 96, config)
    pre = Preprocessor(config)
    rgb_in = pre.rgb(torch.from_numpy(rgb), letterbox)[0, 0] * config.rgb_std[0] * 255 \
        + config.rgb_mean[0] * 255
    grid = ir_sampling_grid(scaling_homography(24, 48, 48, 96), (24, 48), letterbox)
    ir_in = torch.nn.functional.grid_sample(torch.from_numpy(grey).float()[None, None], grid,
                                            align_corners=False)[0, 0]
    rows, cols = letterbox.valid_slices
    assert (rows, cols) == (slice(0, 32), slice(0, 64))
    assert (ir_in[rows.stop:] == 0).all()
    assert (rgb_in[rows.stop:] == config.rgb_mean[0] * 255).all()  # padding: the mean colour
    assert (rgb_in[rows, cols] - ir_in[rows, cols]).abs().mean() < 12  # of 255


def test_percentile_gain_control_16_bit():
    config = InputConfig(ir_percentiles=[10.0, 90.0])
    ramp = torch.arange(0, 1001, dtype=torch.int32).to(torch.uint16).reshape(1, 1001)
    unit = ir_to_unit(ramp, config)
    assert unit[0, 100].item() == pytest.approx(0.0, abs=1e-6)
    assert unit[0, 900].item() == pytest.approx(1.0, abs=1e-6)
    assert unit[0, 500].item() == pytest.approx(0.5, abs=1e-6)
    assert unit.min() == 0.0 and unit.max() == 1.0  # clipped outside the percentiles


def test_fixed_range_and_float_temperature():
    inf, nan = float("inf"), float("nan")
    celsius = torch.tensor([[-10.0, 0.0, 20.0, 40.0, nan, inf, -inf]])
    unit = ir_to_unit(celsius, InputConfig(ir_agc="fixed", ir_fixed_range=[-20.0, 40.0]))
    assert unit[0].tolist() == pytest.approx([1 / 6, 1 / 3, 2 / 3, 1.0, 0.0, 1.0, 0.0])
    counts = torch.tensor([[0, 30000, 60000]], dtype=torch.int32).to(torch.uint16)
    unit = ir_to_unit(counts, InputConfig(ir_agc="fixed", ir_fixed_range=[0.0, 60000.0]))
    assert unit.tolist() == [[0.0, 0.5, 1.0]]
    mono8 = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    assert ir_to_unit(mono8, InputConfig())[0].tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_percentile_gain_control_on_a_large_frame_uses_a_subsample():
    frame = torch.linspace(0, 100, 1024 * 1280).reshape(1024, 1280)
    unit = ir_to_unit(frame, InputConfig(ir_percentiles=[1.0, 99.0]))
    assert unit.mean().item() == pytest.approx(0.5, abs=0.01)
    assert (unit[:5] == 0).all() and (unit[-5:] == 1).all()


def temperature_with_non_finite_pixels(seed=4, size=(40, 50)):
    """Float temperatures with a block of +inf, a block of -inf and scattered NaN."""
    rng = np.random.default_rng(seed)
    ir = rng.normal(30.0, 8.0, size).astype(np.float32)
    ir[2:6, 3:13] = np.inf
    ir[20:24, 30:40] = -np.inf
    ir.flat[rng.choice(ir.size, 30, replace=False)] = np.nan
    return ir


@pytest.mark.parametrize("percentiles", [[1.0, 99.0], [10.0, 75.0]])
def test_percentile_gain_control_uses_the_finite_pixels(percentiles):
    ir = temperature_with_non_finite_pixels()
    finite = np.isfinite(ir)
    assert 0 < (~finite).sum() < ir.size and ir.size <= 65536  # no subsampling here
    low, high = np.percentile(ir[finite].astype(np.float64), percentiles)
    unit = ir_to_unit(torch.from_numpy(ir), InputConfig(ir_percentiles=percentiles)).numpy()
    assert np.isfinite(unit).all() and unit.min() == 0.0 and unit.max() == 1.0
    np.testing.assert_allclose(unit[finite], np.clip((ir[finite] - low) / (high - low), 0, 1),
                               rtol=0, atol=1e-6)
    assert (unit[np.isposinf(ir)] == 1.0).all()
    assert (unit[np.isneginf(ir) | np.isnan(ir)] == 0.0).all()


@pytest.mark.parametrize("fill", [[np.nan], [np.inf], [np.nan, np.inf, -np.inf]])
@pytest.mark.parametrize("agc", ["percentile", "fixed"])
def test_frame_without_finite_pixels_maps_to_zero(fill, agc):
    ir = np.resize(np.array(fill, np.float32), (30, 40))
    unit = ir_to_unit(torch.from_numpy(ir), InputConfig(ir_agc=agc))
    if agc == "fixed":  # a fixed range needs no statistics: +inf is still hot
        np.testing.assert_array_equal(unit.numpy(), np.isposinf(ir).astype(np.float32))
    else:
        assert (unit == 0).all()


@pytest.mark.parametrize("make_ir", [temperature_with_non_finite_pixels,
                                     lambda: np.full((40, 50), np.nan, np.float32)])
def test_engine_output_stays_finite_on_non_finite_ir(tiny_model, tiny_config, make_ir):
    engine = Engine(tiny_model, tiny_config, EngineOptions(score_threshold=0.0))
    rgb, _ = frames(5)
    result = engine.infer(rgb, make_ir(), HOMOGRAPHY)
    assert result.ir_used and len(result.detections.scores) > 0
    assert np.isfinite(result.detections.scores).all()
    assert np.isfinite(result.detections.boxes).all()
    assert np.isfinite(engine.register_ir(make_ir(), HOMOGRAPHY, rgb.shape).astype(float)).all()


def test_count_non_finite():
    assert count_non_finite(temperature_with_non_finite_pixels()) == 40 + 40 + 30
    assert count_non_finite(np.full((4, 4), 65535, np.uint16)) == 0
    assert count_non_finite(np.zeros((4, 4), np.uint8)) == 0
    assert count_non_finite(np.array([[1.0, -np.inf]], np.float32)) == 1


@pytest.mark.parametrize("rgb, ir, message", [
    (np.zeros((4, 4), np.uint8), None, "rgb must be a non-empty uint8 array (H, W, 3)"),
    (np.zeros((4, 4, 3), np.float32), None, "rgb must be a non-empty uint8 array"),
    (np.zeros((0, 4, 3), np.uint8), None, "rgb must be a non-empty"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.int32), "ir must be a non-empty"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), "ir must be a non-empty"),
])
def test_bad_frames_are_named(tiny_model, tiny_config, rgb, ir, message):
    engine = Engine(tiny_model, tiny_config)
    with pytest.raises(ValueError) as error:
        engine.infer(rgb, ir)
    assert message in str(error.value)


def test_singular_homography_is_refused(tiny_model, tiny_config):
    engine = Engine(tiny_model, tiny_config)
    rgb, ir = frames(0)
    with pytest.raises(ValueError, match="homography is singular"):
        engine.infer(rgb, ir, np.zeros((3, 3)))


def test_engine_refuses_cuda_without_a_gpu(tiny_model, tiny_config):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        Engine(tiny_model, tiny_config, EngineOptions(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graph_replay_equals_eager(tiny_model, tiny_config, precision):
    graphs = Engine(tiny_model, tiny_config, EngineOptions(
        device="cuda", precision=precision, cuda_graphs=True, score_threshold=0.0))
    eager = Engine(build_model(tiny_config).eval(), tiny_config, EngineOptions(
        device="cuda", precision=precision, cuda_graphs=False, score_threshold=0.0))
    eager.model.load_state_dict(graphs.model.state_dict())
    for frame in range(5):
        rgb, ir = frames(frame)
        a, b = graphs.infer(rgb, ir, HOMOGRAPHY), eager.infer(rgb, ir, HOMOGRAPHY)
        assert "graph" in a.timings_ms
        np.testing.assert_allclose(a.detections.scores, b.detections.scores, atol=1e-3)
        assert (a.class_map == b.class_map).mean() > 0.99
