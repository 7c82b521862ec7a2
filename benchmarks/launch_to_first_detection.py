"""Time from `ros2 launch ivtuning_ros perception.launch.py` to the first Detection2DArray,
on a plain colcon build with the demo weights, per back-end, with a cold and a warm
back-end cache (a fresh ``IVTUNING_CACHE`` folder, then the same folder again).

Cameras (RoadScene pairs, 5 Hz) run in a process of their own from before the launch, as
on a robot whose drivers are up. Each start also reports the node's own milestones (read
off its log): model loaded, engine ready. Prints one JSON object.

    .venv/bin/python benchmarks/launch_to_first_detection.py --backends torch openvino
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from tqdm import tqdm
from vision_msgs.msg import Detection2DArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test.launch.workspace import build_workspace, cameras, ros2_launch, ros_setup  # noqa: E402

RGB, IR = "/bench/rgb/image_raw", "/bench/thermal/image_raw"
STAMP = re.compile(r"\[(\d+\.\d+)\] \[ivtuning_perception\]: (loaded checkpoint|engine ready)")


def one_start(env: dict[str, str], checkpoint: Path, backend: str, timeout: float) -> dict:
    """Launch, wait for the first detection, Ctrl-C; seconds from the launch's start."""
    context = rclpy.Context()
    rclpy.init(context=context)
    client = rclpy.create_node("first_detection_bench", context=context)
    first: list[float] = []
    client.create_subscription(Detection2DArray, "/ivtuning_perception/detections",
                               lambda msg: first.append(time.time()), 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    started = time.time()
    launched = ros2_launch(env, checkpoint=str(checkpoint), device="cpu", backend=backend,
                           rgb_image=RGB, ir_image=IR)
    try:
        while not first and time.time() - started < timeout:
            if launched.process.poll() is not None:
                raise RuntimeError(f"ros2 launch exited:\n{launched.output}")
            executor.spin_once(timeout_sec=0.05)
        launched.stop()
    finally:
        launched.kill()
        executor.shutdown()
        client.destroy_node()
        context.try_shutdown()
    if not first:
        raise RuntimeError(f"no detection within {timeout:g} s:\n{launched.output}")
    milestones = {name.replace(" ", "_"): round(float(stamp) - started, 2)
                  for stamp, name in STAMP.findall(launched.output)}
    return {"first_detection_s": round(first[0] - started, 2), **milestones}


def summary(runs: list[dict]) -> dict:
    values = [run["first_detection_s"] for run in runs]
    return {"median_s": round(statistics.median(values), 2), "min_s": min(values),
            "max_s": max(values), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["torch", "openvino"])
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 200 + 20))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    setup = ros_setup()
    if setup is None:
        sys.exit("launch_to_first_detection: no ROS 2 launch tools (a distribution under "
                 "/opt/ros, or the kit at ../shared/ros2 installed by `make test`)")
    root = Path(tempfile.mkdtemp(prefix="ivtuning_ws_"))
    env = build_workspace(root, setup)
    checkpoint = root / "install" / "ivtuning_ros" / "share" / "ivtuning_ros" / "models" / \
        "ivt_demo.pth"
    rig = cameras(env, RGB, IR)
    report = {"cpu_count": os.cpu_count(), "checkpoint": "ivt_demo.pth", "backends": {}}
    try:
        with tqdm(total=len(args.backends) * (1 + args.warm_runs), desc="starts",
                  unit="start") as progress:
            for backend in args.backends:
                env["IVTUNING_CACHE"] = tempfile.mkdtemp(prefix=f"ivtuning_cache_{backend}_")
                cold = one_start(env, checkpoint, backend, args.timeout)
                progress.update()
                warm = []
                for _ in range(args.warm_runs):
                    warm.append(one_start(env, checkpoint, backend, args.timeout))
                    progress.update()
                report["backends"][backend] = {"cold_cache": cold, "warm_cache": summary(warm)}
    finally:
        rig.stop()
        rig.kill()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
