"""Exported back-ends: ONNX export with metadata, OpenVINO and ONNX Runtime against eager
torch fp32, run-time threshold and class filter, missing packages, `ivtuning export --onnx`."""
import sys

import numpy as np
import pytest
import torch

from ivtuning_ros.commands.cli import main as cli_main
from ivtuning_ros.model import build_model, load_checkpoint, save_checkpoint
from ivtuning_ros.model.config import load_config
from ivtuning_ros.runtime import Engine, EngineOptions
from ivtuning_ros.runtime.backends import BackendUnavailable, open_runner, parity, require
from ivtuning_ros.runtime.backends.onnx_export import (
    example_inputs,
    export_onnx,
    read_metadata,
)
from ivtuning_ros.runtime.benchmark import bench_backends, synthetic_frames
from ivtuning_ros.runtime.step import FrameLayout, FrameStep

from .conftest import MODELS

EXPORTED = ("openvino", "onnxruntime")


def _frame(seed=0, rgb_shape=(70, 70), ir_shape=(50, 60), ir_dtype=np.uint16):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (*rgb_shape, 3), dtype=np.uint8)
    high = 256 if ir_dtype == np.uint8 else 65536
    return rgb, rng.integers(0, high, ir_shape).astype(ir_dtype)


def test_export_carries_metadata_and_both_runtimes_match_torch(tiny_model, tiny_config,
                                                               tmp_path):
    # Letterboxed (70x70 into 64x80), IR of another size and 16-bit: every part of the step.
    layout = FrameLayout((70, 70), (50, 60), "uint16")
    step = FrameStep(tiny_model, tiny_config, layout, 100, torch.device("cpu"))
    path = export_onnx(step, tmp_path / "tiny.onnx", source="tiny.pth")
    metadata = read_metadata(path)
    assert metadata["ivtuning.config_name"] == tiny_config.name
    assert metadata["ivtuning.source"] == "tiny.pth"
    assert metadata["ivtuning.opset"] == "17"
    assert '"ir_dtype": "uint16"' in metadata["ivtuning.layout"]
    assert len(metadata["ivtuning.weights_fingerprint"]) == 16

    assert_runtimes_match_torch(step, path, tmp_path)


@pytest.mark.parametrize("method", ["cpal", "dra"])
def test_every_adapter_method_exports_and_both_runtimes_match_torch(method, tmp_path):
    # Fewer blocks halve the export time; stage 2 keeps a shifted-window block.
    small = ["backbone.depths=[1,2,1,1]", "detection.decoder_layers=1"]
    if method == "dra":
        small += ["dra.psst.prototypes=64", "dra.psst.head_hidden=64"]
    config = load_config(MODELS / "ivt_tiny_test.yaml", [f"method={method}", *small])
    torch.manual_seed(0)
    model = build_model(config).eval()
    step = FrameStep(model, config, FrameLayout((70, 70), (50, 60), "uint16"), 100,
                     torch.device("cpu"))
    assert_runtimes_match_torch(step, export_onnx(step, tmp_path / f"{method}.onnx"), tmp_path)


def assert_runtimes_match_torch(step: FrameStep, path, tmp_path) -> None:
    """Both exported runtimes give torch's detections and segmentation on one frame."""
    inputs = example_inputs(step)
    rgb, ir = _frame()
    inputs.update(rgb=rgb, ir=ir.astype(np.float32))
    with torch.inference_mode():
        expected = step(torch.from_numpy(rgb), torch.from_numpy(ir),
                        torch.from_numpy(inputs["grid"]), torch.tensor(0.0),
                        torch.from_numpy(inputs["class_mask"]))
    for backend in EXPORTED:
        found = open_runner(backend, path, torch.device("cpu"), "fp32", tmp_path).run(inputs)
        assert set(found) == set(expected)
        np.testing.assert_allclose(found["boxes"], expected["boxes"].numpy(), atol=1e-3)
        np.testing.assert_allclose(found["scores"], expected["scores"].numpy(), atol=1e-5)
        np.testing.assert_array_equal(found["labels"], expected["labels"].numpy())
        np.testing.assert_array_equal(found["keep"], expected["keep"].numpy())
        assert (found["class_map"] == expected["class_map"].numpy()).mean() >= 0.999, backend


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One export cache for the back-ends: the second reuses the first one's exports."""
    return tmp_path_factory.mktemp("engine_cache")


@pytest.mark.parametrize("backend", EXPORTED)
def test_engine_threshold_and_class_filter_change_without_reexport(tiny_model, tiny_config,
                                                                   shared_cache, backend):
    reference = Engine(tiny_model, tiny_config, EngineOptions(score_threshold=0.0))
    engine = Engine(tiny_model, tiny_config, EngineOptions(
        score_threshold=0.0, cache_dir=str(shared_cache), backend=backend, precision="fp32"))
    assert (engine.backend, engine.precision) == (backend, "fp32")
    rgb, ir = _frame(ir_dtype=np.uint8, ir_shape=(70, 70))
    first = engine.infer(rgb, ir)
    pipeline = next(iter(engine._pipelines.values()))
    exports = sorted((shared_cache / "onnx").glob("*.onnx"))
    assert pipeline.onnx_path in exports
    _assert_same(reference.infer(rgb, ir), first)

    threshold = float(np.median(first.detections.scores))
    kept_class = int(first.detections.labels[0])
    for each in (reference, engine):
        each.set_score_threshold(threshold)
        each.set_class_filter([tiny_config.detection.classes[kept_class]])
    filtered = engine.infer(rgb, ir)
    assert 0 < len(filtered.detections.labels) < len(first.detections.labels)
    assert set(filtered.detections.labels) == {kept_class}
    assert (filtered.detections.scores >= threshold).all()
    _assert_same(reference.infer(rgb, ir), filtered)
    assert next(iter(engine._pipelines.values())) is pipeline  # the same compiled model
    assert sorted((shared_cache / "onnx").glob("*.onnx")) == exports  # nothing re-exported

    rgb_only = engine.infer(rgb, None)  # another layout: another export (or the cached one)
    assert not rgb_only.ir_used
    _assert_same(reference.infer(rgb, None), rgb_only)
    assert len(list((shared_cache / "onnx").glob("*.onnx"))) == 2


def _assert_same(expected, found):
    np.testing.assert_array_equal(found.detections.labels, expected.detections.labels)
    np.testing.assert_allclose(found.detections.boxes, expected.detections.boxes, atol=1e-3)
    np.testing.assert_allclose(found.detections.scores, expected.detections.scores, atol=1e-5)
    assert (found.class_map == expected.class_map).mean() >= 0.999
    assert found.ir_used == expected.ir_used


def test_demo_model_gives_identical_detections_on_synthetic_scenes(tmp_path):
    """Trained weights, where parity matters: every back-end, every condition."""
    model, config = load_checkpoint(MODELS / "ivt_demo.pth")
    scenes = synthetic_frames(config, 3)  # day, night, fog
    report = bench_backends(model, config, ["openvino:fp32", "onnxruntime"], scenes,
                            repeats=1, warmup=0, cache_dir=str(tmp_path))
    assert set(report) >= {"torch_fp32", "openvino_fp32", "onnxruntime_fp32"}
    assert report["torch_fp32"]["parity"]["identical_detections"] == 3
    for name in ("openvino_fp32", "onnxruntime_fp32"):
        parity = report[name]["parity"]
        assert parity["identical_detections"] == 3, (name, parity)
        assert parity["max_abs_box_diff_px"] < 0.05, (name, parity)
        assert parity["max_abs_score_diff"] < 1e-4, (name, parity)
        assert parity["segmentation_agreement"] >= 0.999, (name, parity)
        assert report[name]["latency_ms"]["p50"] > 0


def test_a_missing_runtime_names_the_package(tiny_model, tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if not installed
    with pytest.raises(BackendUnavailable, match=r"pip install 'openvino'"):
        Engine(tiny_model, tiny_config, EngineOptions(backend="openvino"))
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        require("tensorrt_not_installed_here", "tensorrt")
    with pytest.raises(BackendUnavailable, match="NVIDIA GPU"):
        Engine(tiny_model, tiny_config, EngineOptions(backend="tensorrt"))
    with pytest.raises(ValueError, match="backend must be one of"):
        Engine(tiny_model, tiny_config, EngineOptions(backend="tflite"))
    with pytest.raises(ValueError, match="fp32 only"):
        Engine(tiny_model, tiny_config, EngineOptions(backend="onnxruntime", precision="fp16"))


def test_cli_exports_into_the_cache_the_engine_reads(tiny_model, tiny_config, tmp_path,
                                                     capsys):
    checkpoint = tmp_path / "tiny.pth"
    save_checkpoint(tiny_model, tiny_config, checkpoint)
    cache = tmp_path / "cache"
    # In-process, as the refusals below (the console script is `main`; a subprocess costs
    # ~8 s here).
    command = ["export", str(checkpoint), str(cache), "--onnx", "--rgb-size", "70", "70",
               "--ir-size", "50", "60", "--quiet"]
    assert cli_main(command) == 0
    written = list((cache / "onnx").glob("*.onnx"))
    assert len(written) == 1 and str(written[0]) in capsys.readouterr().out
    stamp = written[0].stat().st_mtime_ns

    model, config = load_checkpoint(checkpoint)
    engine = Engine(model, config, EngineOptions(backend="onnxruntime", cache_dir=str(cache)))
    engine.infer(*_frame())
    assert next(iter(engine._pipelines.values())).onnx_path == written[0]
    assert written[0].stat().st_mtime_ns == stamp  # found, not exported again

    assert cli_main(command) == 2
    again = capsys.readouterr().err
    assert again.count("\n") == 1 and "--force" in again
    assert cli_main(["bench", "--checkpoint", str(checkpoint), "--backend", "tflite"]) == 2
    bad = capsys.readouterr().err
    assert bad.count("\n") == 1 and "backend must be one of" in bad


def test_tensorrt_variant_and_its_parity_check_run_on_the_cpu(tiny_model, tiny_config,
                                                             tmp_path):
    """TensorRT's export (gain control outside the graph) and the probe-frame check that
    guards a new TensorRT engine, here with ONNX Runtime standing in for TensorRT."""
    layout = FrameLayout((70, 70), (50, 60), "uint16")
    step = FrameStep(tiny_model, tiny_config, layout, 100, torch.device("cpu"),
                     gain_in_graph=False)
    path = export_onnx(step, tmp_path / "trt_variant.onnx")
    runner = open_runner("onnxruntime", path, torch.device("cpu"), None, tmp_path)
    report = parity.compare(step, runner, parity.probe_inputs(step, gain_in_graph=False))
    assert report["label_agreement"] == 1.0
    assert report["max_score_diff"] < 1e-5
    assert report["segmentation_agreement"] >= 0.999
    parity.check(report, "tensorrt")
    with pytest.raises(BackendUnavailable, match="miscompile"):
        parity.check({**report, "segmentation_agreement": 0.5}, "tensorrt")
