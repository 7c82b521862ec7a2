"""`ivtuning demo`: the real pipeline on synthetic cameras, end to end over ROS 2.

A synthetic stereo rig (RGB 640x480 + 16-bit thermal 640x512 with a known IR->RGB
homography; day, night and fog scenes) publishes over DDS into the perception node,
and a recorder subscribes like any client. Written under the output folder:
``demo.gif`` (the node's debug overlay), ``contact_sheet.png`` (RGB, raw IR,
registered IR over RGB, the fused image, detections + mask, and ``~/saliency`` when the
model has the SOD head; one row per condition) and
``stats.json`` (rates, latency and age percentiles, detections per frame).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from PIL import Image as PILImage
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from tqdm import tqdm
from vision_msgs.msg import Detection2DArray

from ..data.synthetic import make_scene
from ..evaluation.sod import saliency_view
from ..model import load_checkpoint
from ..ros.conversions import fill_image, image_to_array
from ..ros.node import PerceptionNode
from ..ros.params import demo_weights
from ..ros.spinning import spinning
from ..runtime import Engine, EngineOptions

NODE = "ivtuning_perception"
# The project's trained demo weights (see models/README.md and `make demo-weights`).
DEMO_CHECKPOINT, _ = demo_weights()
CONDITIONS = ("day", "night", "fog")
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
THUMB = (320, 240)  # width, height of a contact-sheet cell


class SyntheticCameras(Node):
    """Publishes pre-rendered synthetic scenes as RGB (rgb8) + IR (mono16) at a fixed rate."""

    def __init__(self, context, scenes: list, rate: float) -> None:
        super().__init__("synthetic_cameras", context=context)
        self.scenes = scenes
        self.stamps: dict[tuple[int, int], int] = {}  # RGB stamp -> scene index
        self.rgb_pub = self.create_publisher(Image, f"/{NODE}/rgb/image", RELIABLE)
        self.ir_pub = self.create_publisher(Image, f"/{NODE}/ir/image", RELIABLE)
        self.next = 0
        self.timer = self.create_timer(1.0 / rate, self._tick)

    def _tick(self) -> None:
        if self.next >= len(self.scenes):
            return
        scene = self.scenes[self.next]
        stamp = self.get_clock().now().to_msg()
        for publisher, array, encoding, frame in (
                (self.rgb_pub, scene.rgb, "rgb8", "rgb_optical_frame"),
                (self.ir_pub, scene.ir, "mono16", "thermal_optical_frame")):
            msg = Image()
            msg.header.stamp, msg.header.frame_id = stamp, frame
            fill_image(msg, array, encoding)
            publisher.publish(msg)
        self.stamps[(stamp.sec, stamp.nanosec)] = self.next
        self.next += 1

    @property
    def done(self) -> bool:
        return self.next >= len(self.scenes)


class Recorder(Node):
    """Subscribes to the node's outputs as a client would and keeps them by RGB stamp."""

    def __init__(self, context) -> None:
        super().__init__("demo_recorder", context=context)
        self.outputs: dict[str, dict[tuple[int, int], object]] = {}
        self.fused_images: dict[tuple[int, int], Image] = {}  # by RGB stamp, not required
        self.saliency: dict[tuple[int, int], Image] = {}  # ~/saliency, where the model has it
        self.ages_ms: list[float] = []
        self.diagnostics: dict[str, str] = {}
        self._lock = threading.Lock()
        for topic, kind in (("detections", Detection2DArray), ("debug_image", Image),
                            ("segmentation/color", Image), ("ir/registered", Image),
                            ("fusion_state", DiagnosticArray)):
            self.outputs[topic] = {}
            self.create_subscription(kind, f"/{NODE}/{topic}",
                                     lambda m, t=topic: self._store(t, m), RELIABLE)
        self.create_subscription(Image, f"/{NODE}/fused/image", self._on_fused, RELIABLE)
        self.create_subscription(Image, f"/{NODE}/saliency", self._on_saliency, RELIABLE)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_fused(self, msg: Image) -> None:
        with self._lock:
            self.fused_images[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg

    def _on_saliency(self, msg: Image) -> None:
        with self._lock:
            self.saliency[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg

    def _store(self, topic: str, msg) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self._lock:
            self.outputs[topic][stamp] = msg
            if topic == "detections":
                sent = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                self.ages_ms.append((self.get_clock().now().nanoseconds - sent) / 1e6)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def complete(self) -> list[tuple[int, int]]:
        """RGB stamps for which every output arrived."""
        with self._lock:
            return sorted(set.intersection(*(set(v) for v in self.outputs.values())))

    def fused(self, stamp: tuple[int, int]) -> bool:
        """Whether the node used IR for the frame with this RGB stamp."""
        state = self.outputs["fusion_state"][stamp].status[0]
        return any(kv.key == "ir_used" and kv.value == "true" for kv in state.values)


def prepare_backend(checkpoint: str, backend: str, precision: str | None) -> float:
    """Export and compile the rig's frame layouts for an exported back-end before the node
    starts, as a deployment would with ``ivtuning export --onnx`` (the node keeps the
    result in its cache): otherwise the first frames wait for it. Returns the seconds."""
    model, config = load_checkpoint(checkpoint)
    engine = Engine(model, config, EngineOptions(backend=backend, precision=precision,
                                                 source=checkpoint))
    scene = make_scene(seed=0)
    start = time.perf_counter()
    engine.infer(scene.rgb, scene.ir, scene.homography)
    engine.infer(scene.rgb, None)
    return time.perf_counter() - start


def run_demo(out_dir: Path, frames: int, rate: float, parameters: dict,
             untrained: bool) -> dict:
    """Run cameras -> node -> recorder over DDS and write the demo files; return the stats."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scenes = [make_scene(seed=i, condition=CONDITIONS[i * len(CONDITIONS) // frames])
              for i in tqdm(range(frames), desc="render scenes", unit="scene")]
    homography = scenes[0].homography
    context = rclpy.Context()
    rclpy.init(context=context)
    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter(k, value=v) for k, v in {
            # IR frames come once per camera period: silence means several periods.
            "ir_timeout": max(1.0, 3.0 / rate), "fusion_max_rate": 0.0, **parameters,
            "allow_untrained": untrained,  # the demo says so itself, in its note and stats
            "registration": "homography",
            "homography": [float(v) for v in homography.flatten()],
            # The rig below publishes reliably; saying so skips qos_reliability auto's switch
            # once the publishers are discovered, which could miss the first frame.
            "qos_reliability": "reliable"}.items()])
    node.trigger_configure()
    node.trigger_activate()
    cameras, recorder = SyntheticCameras(context, scenes, rate), Recorder(context)
    model_name = node.model_name
    try:
        with spinning(context, [node, recorder, cameras]):
            _wait_for_frames(cameras, recorder, frames)
    finally:
        node.trigger_deactivate()
        for each in (node, cameras, recorder):
            each.destroy_node()
        context.try_shutdown()
    return _write_outputs(out_dir, scenes, cameras, recorder, untrained, model_name)


def _wait_for_frames(cameras: SyntheticCameras, recorder: Recorder, frames: int) -> None:
    with tqdm(total=frames, desc="cameras -> node", unit="frame") as progress:
        while not cameras.done:
            progress.update(cameras.next - progress.n)
            time.sleep(0.1)
        progress.update(frames - progress.n)
    deadline = time.monotonic() + 30  # let the frame in flight finish and arrive
    last = -1
    while time.monotonic() < deadline:
        count = len(recorder.complete())
        if count == last:
            break
        last = count
        time.sleep(3.0)


def _write_outputs(out_dir: Path, scenes: list, cameras: SyntheticCameras, recorder: Recorder,
                   untrained: bool, model_name: str) -> dict:
    stamps = recorder.complete()
    if not stamps:
        raise RuntimeError("the node published no complete result; see its log above")
    overlays = [image_to_array(recorder.outputs["debug_image"][s]) for s in stamps]
    PILImage.fromarray(overlays[0]).save(
        out_dir / "demo.gif", save_all=True, append_images=[PILImage.fromarray(o)
                                                            for o in overlays[1:]],
        duration=500, loop=0)
    rows = []
    for condition in CONDITIONS:
        stamp = next((s for s in stamps
                      if scenes[cameras.stamps[s]].condition == condition), None)
        if stamp is not None:
            rows.append(_sheet_row(scenes[cameras.stamps[stamp]], recorder, stamp))
    cv2.imwrite(str(out_dir / "contact_sheet.png"), cv2.cvtColor(np.vstack(rows),
                                                                 cv2.COLOR_RGB2BGR))
    detections = [len(recorder.outputs["detections"][s].detections) for s in stamps]
    ages = np.array(recorder.ages_ms)
    stats = {
        "model": model_name,
        "weights": "untrained" if untrained else "trained",
        "frames_published": cameras.next,
        "frames_with_results": len(stamps),
        "frames_fused": sum(recorder.fused(s) for s in stamps),
        "fused_images": sum(s in recorder.fused_images for s in stamps),
        "saliency_images": sum(s in recorder.saliency for s in stamps),
        "detections_per_frame": {"mean": round(float(np.mean(detections)), 2),
                                 "per_frame": detections},
        "result_age_ms": {"p50": round(float(np.percentile(ages, 50)), 1),
                          "p99": round(float(np.percentile(ages, 99)), 1)},
        "node_diagnostics": recorder.diagnostics,
        "files": ["demo.gif", "contact_sheet.png", "stats.json"],
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def _sheet_row(scene, recorder: Recorder, stamp: tuple[int, int]) -> np.ndarray:
    """RGB | raw IR (own geometry) | registered IR over RGB | fused (M2PN) | detections +
    mask | saliency with its 0.5 contour (when the node publishes ``~/saliency``)."""
    registered = image_to_array(recorder.outputs["ir/registered"][stamp])
    heat = cv2.cvtColor(cv2.applyColorMap(registered, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    blend = cv2.addWeighted(scene.rgb, 0.5, heat, 0.5, 0)
    raw_ir = cv2.normalize(scene.ir.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX)
    raw_ir = cv2.cvtColor(raw_ir.astype(np.uint8), cv2.COLOR_GRAY2RGB)
    overlay = image_to_array(recorder.outputs["debug_image"][stamp])
    fused_msg = recorder.fused_images.get(stamp)
    fused = (image_to_array(fused_msg) if fused_msg is not None
             else np.full_like(scene.rgb, 128))
    columns = [(scene.rgb, f"RGB ({scene.condition})"), (raw_ir, "IR (raw, own camera)"),
               (blend, "IR registered over RGB"), (fused, "fused (M2PN)"),
               (overlay, "detections + mask")]
    if recorder.saliency:
        saliency_msg = recorder.saliency.get(stamp)
        saliency = (saliency_view(image_to_array(saliency_msg)) if saliency_msg is not None
                    else np.full_like(scene.rgb, 128))
        columns.append((saliency, "saliency (~/saliency)"))
    cells = []
    for image, title in columns:
        cell = cv2.resize(np.ascontiguousarray(image), THUMB, interpolation=cv2.INTER_AREA)
        cv2.putText(cell, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
        cells.append(cell)
    return np.hstack(cells)
