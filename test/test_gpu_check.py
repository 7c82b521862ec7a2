"""The GPU check (issue 22, README "GPU check"): it stops in one line where it cannot run,
its CPU dry run executes every part with the CUDA pieces reported as skipped, its parts are
held to their time boxes, and it runs every test that needs CUDA; plus the CUDA test of
graphs freed on eviction.

The interpreter "without rclpy, OpenVINO or the venv" is simulated: this machine's own
python3 has no PyTorch, so the tests run this venv's python with those packages hidden
(test_cli_without_ros), and ``python -S`` (no site-packages at all) for the missing-PyTorch
line.
"""
import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ivtuning_ros.gpu_check import check
from ivtuning_ros.runtime import Engine, EngineOptions

from .test_cli_without_ros import GPU_MACHINE_LACKS, hidden_env

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphs_are_freed_on_eviction(tiny_model, tiny_config):
    """An evicted frame layout hands back its graph, the graph's private memory pool and its
    buffers: memory stays flat while two layouts take turns in a one-entry LRU."""
    engine = Engine(tiny_model, tiny_config, EngineOptions(device="cuda", cuda_graphs=True,
                                                           max_layouts=1))
    rng = np.random.default_rng(0)

    def run(size):
        rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        result = engine.infer(rgb, rng.integers(0, 65535, size, dtype=np.uint16))
        assert "graph" in result.timings_ms  # captured, not the eager fallback
        return next(iter(engine._pipelines.values()))

    first = run((64, 80))
    run((72, 96))
    assert first.graph is None and first.buffers is None and not first.graph_outputs
    torch.cuda.synchronize()
    settled = torch.cuda.memory_allocated()
    for _ in range(5):
        run((64, 80))
        run((72, 96))
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= settled + MIB


def test_the_check_runs_every_test_that_needs_cuda():
    """Every test that skips without CUDA (a skipif on torch.cuda.is_available()) is one of
    the check's CUDA_TESTS, and every entry names such a test."""
    found = set()
    for path in sorted((REPO / "test").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    "skipif" in ast.unparse(d) and "cuda.is_available" in ast.unparse(d)
                    for d in node.decorator_list):
                found.add(f"test/{path.name}::{node.name}")
    assert found == set(check.CUDA_TESTS)


@pytest.mark.parametrize("case", ["no CUDA", "no PyTorch"])
def test_make_gpu_check_stops_in_one_line_where_it_cannot_run(case, tmp_path):
    """`make gpu-check` with an interpreter without rclpy, OpenVINO or the venv's other
    packages: up to the CUDA requirement, then one line and exit status 2; the report says
    why. Without PyTorch at all (``python -S``), one line saying so."""
    if case == "no CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    python = sys.executable if case == "no CUDA" else f"{sys.executable} -S"
    out = tmp_path / "out"
    env = hidden_env(tmp_path, GPU_MACHINE_LACKS, GPU_CHECK_OUT=str(out))
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # when `make test` runs this test
        env.pop(name, None)
    done = subprocess.run(["make", "-s", "--no-print-directory", "gpu-check", f"PYTHON={python}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("make")]
    assert done.returncode != 0 and done.stdout == "", done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("gpu-check: "), done.stderr
    expected = "CUDA is not available" if case == "no CUDA" else "PyTorch does not import"
    assert expected in lines[0]
    report = json.loads((out / check.REPORT).read_text())
    assert report["status"] == "stopped" and expected in report["stopped"]
    if case == "no CUDA":
        assert report["environment"]["torch"] == torch.__version__
        assert report["environment"]["packages"]["rclpy"] is None  # it ran without


def test_cpu_dry_run_executes_every_part(tmp_path):
    """`--cpu-dry-run` (no ROS, OpenVINO or TensorRT): every part runs on the CPU at tiny
    sizes, the CUDA pieces are reported as skipped with the reason, and every key of the
    report is documented in README's GPU check section."""
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "tools/gpu_check.py", "--cpu-dry-run"], cwd=REPO,
                          env=hidden_env(tmp_path, GPU_MACHINE_LACKS, GPU_CHECK_OUT=str(out)),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / check.REPORT).read_text())
    assert report["mode"] == "cpu-dry-run" and report["status"] == "passed"
    parts = report["parts"]
    assert list(parts) == list(check.BOXES)
    tests = parts["cuda_tests"]["tests"]
    assert parts["cuda_tests"]["status"] == "skipped"
    assert {t["test"].split("[")[0] for t in tests} == set(check.CUDA_TESTS)
    assert all(t["outcome"] == "skipped" for t in tests)
    assert parts["parity"]["variants"]["cpu_fp32"]["identical_detections"] == 1
    for name in ("bench_realtime", "bench_swin_l"):
        variants = parts[name]["variants"]
        assert set(variants) == {"eager_fp32", "amp_fp16", "amp_bf16"}, name
        assert all(v["total_ms"]["p99"] >= v["total_ms"]["p50"] > 0 for v in variants.values())
        assert f"{name}/amp_fp16_graphs" in report["skipped"]
    assert parts["onnxruntime"]["status"] == "passed"
    assert parts["tensorrt"]["status"] == "skipped" and "tensorrt" in parts["tensorrt"]["reason"]
    log = (out / check.LOG).read_text().splitlines()
    assert len(log) == len(parts) + 2 and log[-1].startswith("gpu-check: passed")
    section = (REPO / "README.md").read_text().split("### GPU check", 1)[-1].split("\n## ")[0]
    keys = {*report, *report["environment"], *(k for p in parts.values() for k in p),
            *(k for p in ("bench_realtime", "bench_swin_l")
              for v in parts[p]["variants"].values() for k in v)}
    assert not [key for key in keys if f"`{key}`" not in section], "undocumented report keys"


WORKER = """\
import json, os, sys, time
events, parts = sys.argv[sys.argv.index("--events") + 1], sys.argv[5:]
def emit(event):
    with open(events, "a") as stream:
        stream.write(json.dumps(event) + "\\n")
for spec in parts:
    name = spec.split("=")[0]
    emit({"start": name, "time": time.time(), "seconds": 1.0})
    if name == "hang":
        time.sleep(60)
    if name == "crash":
        os._exit(3)
    emit({"done": name, "result": {"status": "passed", "seconds": 0.0}})
"""


def test_a_part_past_its_box_or_crashing_ends_alone(tmp_path, monkeypatch):
    """A part still running past its box is stopped and reported timed out, a crash is that
    part's failure, and a new worker runs the parts after each."""
    monkeypatch.setattr(check, "GRACE_S", 0.5)
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(WORKER))
    names = ["a", "hang", "b", "crash", "c"]
    report = check.Report(tmp_path / "out", "gpu", 60.0, parts=names)
    check.run_worker_parts(names, dict.fromkeys(names, 1.0), 1e12, False, tmp_path, report,
                           worker=(sys.executable, str(worker)))
    status = {name: entry["status"] for name, entry in report.data["parts"].items()}
    assert status == {"a": "passed", "hang": "timed_out", "b": "passed", "crash": "failed",
                      "c": "passed"}
    assert "exited with 3" in report.data["parts"]["crash"]["reason"]
    assert report.data["skipped"] == {}  # a part that overran is a failure, not a skip
