"""The `ivtuning` command without ROS (issue 22): a command imports ROS only when it needs
it, every other command starts and answers --help with rclpy hidden from the import system,
and a command that needs a missing package says which in one line. Also on the GPU
machine's package set (no ROS, OpenVINO, TensorRT, pycocotools, mcap, ...), where `ivtuning
bench` must run.

Each case runs in a fresh interpreter whose ``sitecustomize`` sets ``sys.modules[name] =
None`` for the hidden packages: importing one then fails as if it were not installed.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "models" / "ivt_tiny_test.yaml")
ROS = ("rclpy", "rosidl_runtime_py", "rcl_interfaces", "builtin_interfaces", "lifecycle_msgs",
       "sensor_msgs", "std_msgs", "geometry_msgs", "visualization_msgs", "diagnostic_msgs",
       "vision_msgs", "ament_index_python", "launch", "launch_ros", "launch_testing",
       "launch_pytest")
# Issue 22's GPU machine has PyTorch, torchvision, timm, onnx, onnxruntime, OpenCV, SciPy,
# Pillow, PyYAML, tqdm and pytest: none of these (matplotlib and tensorboard are not on its
# list either).
GPU_MACHINE_LACKS = (*ROS, "openvino", "tensorrt", "pycocotools", "mcap", "mcap_ros2",
                     "matplotlib", "tensorboard", "open_clip")
NON_ROS_COMMANDS = ("info", "convert", "bench", "export", "demo", "eval", "train", "compare",
                    "train-fusion", "calibrate")
SITECUSTOMIZE = """\
import os
import sys

for name in filter(None, os.environ.get("HIDDEN_PACKAGES", "").split(",")):
    sys.modules[name] = None  # `import name` fails as if it were not installed
"""
# Runs each argv (argv[1], JSON) through `main` in this one process; prints the outcomes.
# ["hide"] hides the ROS packages (argv[2]) from there on, after noting those loaded so far.
RUN_COMMANDS = """\
import contextlib, io, json, sys
from ivtuning_ros.commands.cli import main

ros = json.loads(sys.argv[2])

def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

results = {}
for argv in json.loads(sys.argv[1]):
    if argv == ["hide"]:  # from here on, ROS cannot be imported
        results["ros_loaded_before"] = sorted(m for m in sys.modules if m.split(".")[0] in ros)
        for name in ros:
            sys.modules.setdefault(name, None)
        continue
    results[" ".join(argv)] = run(argv)
print(json.dumps(results))
"""


def hidden_env(tmp_path: Path, hidden: tuple[str, ...], **extra: str) -> dict[str, str]:
    """The environment of a Python subprocess that cannot import ``hidden``."""
    folder = tmp_path / "hide"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(folder), str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "HIDDEN_PACKAGES": ",".join(hidden), **extra}


def run_commands(tmp_path: Path, hidden: tuple[str, ...], commands: list[list[str]]) -> dict:
    done = subprocess.run([sys.executable, "-c", RUN_COMMANDS, json.dumps(commands),
                           json.dumps(ROS)],
                          cwd=REPO, env=hidden_env(tmp_path, hidden), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_one_line_naming(result: dict, package: str) -> None:
    assert result["code"] == 2, result
    assert result["out"] == "" and result["err"].count("\n") == 1, result
    assert f"'{package}'" in result["err"] and "Traceback" not in result["err"], result


def test_non_ros_commands_need_no_ros_and_help_without_rclpy(tmp_path):
    """`ivtuning bench` imports no ROS module; with rclpy hidden every non-ROS command's
    --help works, and `replay` and `demo` (which need ROS) say so in one line."""
    commands = [["bench", "--help"], ["hide"], *([c, "--help"] for c in NON_ROS_COMMANDS),
                ["replay", "--help"], ["demo", "--frames", "1"], ["--help"]]
    results = run_commands(tmp_path, (), commands)
    assert results.pop("ros_loaded_before") == []
    for command in NON_ROS_COMMANDS:
        result = results[f"{command} --help"]
        assert result["code"] == 0 and f"usage: ivtuning {command}" in result["out"], result
    assert_one_line_naming(results["replay --help"], "rclpy")
    assert_one_line_naming(results["demo --frames 1"], "rclpy")
    listing = results["--help"]
    assert listing["code"] == 0 and "unavailable here: needs 'rclpy'" in listing["out"]


def test_bench_runs_on_the_gpu_machines_packages(tmp_path):
    """With only what issue 22's GPU machine has: `ivtuning bench` runs (tiny model), the
    model commands answer --help, and a command that needs more says what in one line."""
    bench = ["bench", "--config", TINY, "--repeats", "1", "--warmup", "0", "--json"]
    commands = [bench, *([c, "--help"] for c in ("info", "convert", "export", "calibrate")),
                ["eval", "--help"], ["train", "--help"], ["replay", "--help"]]
    results = run_commands(tmp_path, GPU_MACHINE_LACKS, commands)
    report = json.loads(results[" ".join(bench)]["out"])
    assert report["config"] == "ivt_tiny_test" and "iv_tuning" in report["engine"]
    for command in ("info", "convert", "export", "calibrate"):
        assert results[f"{command} --help"]["code"] == 0, results[f"{command} --help"]
    assert_one_line_naming(results["eval --help"], "matplotlib")
    assert_one_line_naming(results["train --help"], "tensorboard")
    assert_one_line_naming(results["replay --help"], "rclpy")
