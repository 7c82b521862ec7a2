"""The perception node: RGB + IR images in, detections, masks and diagnostics out.

A lifecycle node. configure loads the model and the engine; activate subscribes
and starts the inference worker; deactivate stops it and frees the GPU. Camera
callbacks only convert (zero-copy) and hand frames to the `FramePairer`; one
worker thread takes the newest pair when it is free, runs the engine and
publishes everything with the RGB frame's header. Bad input is logged once per
kind, counted in /diagnostics, and never stops the node.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import (
    Detection2DArray,
    LabelInfo,
    VisionClass,
)

from ..model import ConfigError, WeightsError, load_model
from ..runtime import Engine, EngineOptions, Result
from ..runtime.registration import (
    homography_from_calibration,
    rotation_from_rpy,
    validate_homography,
)
from .conversions import (
    ImageError,
    ir_from_compressed,
    ir_from_image,
    rgb_from_compressed,
    rgb_from_image,
)
from .diagnostics import PipelineStats
from .messages import detections_to_msg, image_msg
from .overlay import draw_overlay
from .pairing import Frame, FramePairer, Pair
from .params import (
    PARAMETERS,
    SPECS,
    Settings,
    check_value,
    default_values,
    package_dir,
    settings_from,
)

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class PerceptionNode(LifecycleNode):
    """See the module docstring; topics are private (``~/``) and remapped in launch."""

    def __init__(self, node_name: str = "ivtuning_perception", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._declare_parameters()
        self.settings: Settings = self._read_settings()
        self.stats = PipelineStats()
        self.engine: Engine | None = None
        self._model = None
        self._config = None
        self._pairer: FramePairer | None = None
        self._worker: threading.Thread | None = None
        self._running = threading.Event()
        self._subscriptions_: list = []
        self._publishers_: dict = {}
        self._camera_info: dict[str, CameraInfo] = {}
        self._homography: np.ndarray | None = None
        self._logged: set[str] = set()
        self._state = "unconfigured"
        self._ir_was_alive = False
        self._reported_errors: dict[str, int] = {}
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.settings.diagnostics_period, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def model_name(self) -> str:
        """The loaded model config's name ("" before configure)."""
        return self._config.name if self._config is not None else ""

    # Parameters -----------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        defaults = default_values()
        for spec in PARAMETERS:
            descriptor = ParameterDescriptor(description=spec.description,
                                             read_only=not spec.runtime)
            if spec.kind is float and spec.low is not None:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(spec.low), to_value=float(spec.high))]
            if spec.kind is int and spec.low is not None:
                descriptor.integer_range = [IntegerRange(from_value=int(spec.low),
                                                         to_value=int(spec.high), step=1)]
            if spec.choices:
                descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
            self.declare_parameter(spec.name, defaults[spec.name], descriptor)

    def _read_settings(self) -> Settings:
        return settings_from({spec.name: self.get_parameter(spec.name).value
                              for spec in PARAMETERS})

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        updates = {}
        for parameter in parameters:
            problem = check_value(parameter.name, parameter.value) \
                if parameter.name in SPECS else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            updates[parameter.name] = parameter.value
        if "class_filter" in updates and self.engine is not None:
            names = [n.strip() for n in updates["class_filter"].split(",") if n.strip()]
            try:
                self.engine.set_class_filter(names or None)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        if "score_threshold" in updates and self.engine is not None:
            self.engine.set_score_threshold(updates["score_threshold"])
        values = {**self.settings.__dict__, **updates}
        self.settings = Settings(**values)
        if "score_threshold" in updates and "label_info" in self._publishers_:
            self._publish_label_info()
        return SetParametersResult(successful=True)

    # Lifecycle --------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.settings = self._read_settings()
            self._model, self._config = self._load_model()
            self._homography = self._parameter_homography()
            self._create_engine()
        except (ConfigError, WeightsError, ValueError, OSError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._state = f"configure failed: {exc}"
            return TransitionCallbackReturn.FAILURE
        self._create_publishers()
        self._publish_label_info()
        self._state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.engine is None:
            self._create_engine()
        settings = self.settings
        self._pairer = FramePairer(int(settings.slop * 1e9), int(settings.ir_timeout * 1e9),
                                   int(settings.stale_after * 1e9))
        self._subscribe()
        self._running.set()
        self._worker = threading.Thread(target=self._work, name="ivtuning-inference",
                                        daemon=True)
        self._worker.start()
        self._state = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        for publisher in self._publishers_.values():
            self.destroy_publisher(publisher)
        self._publishers_.clear()
        self._model = self._config = None
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        return TransitionCallbackReturn.SUCCESS

    def _stop(self) -> None:
        """Stop subscriptions and the worker; free the GPU (the model stays on the CPU)."""
        self._running.clear()
        if self._pairer is not None:
            self._pairer.close()
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None
        for subscription in self._subscriptions_:
            self.destroy_subscription(subscription)
        self._subscriptions_.clear()
        if self.engine is not None:
            self.engine = None
            self._model.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # Set-up -----------------------------------------------------------------------------
    def _load_model(self):
        settings = self.settings
        path = Path(settings.model_config) if settings.model_config else None
        if path is not None and not path.is_file():
            path = package_dir("models") / settings.model_config
        model, config, trained = load_model(
            None if settings.checkpoint else path, settings.checkpoint or None,
            base_weights=settings.base_weights or None, overrides=settings.model_overrides.split())
        if trained:
            self.get_logger().info(f"loaded checkpoint {settings.checkpoint} ({config.name})")
        else:
            self.get_logger().warning(f"no checkpoint given: {config.name} runs with untrained "
                                      "heads and prompter; set the 'checkpoint' parameter")
        return model, config

    def _create_engine(self) -> None:
        settings = self.settings
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        options = EngineOptions(
            device=device, precision=None if settings.precision == "auto" else settings.precision,
            cuda_graphs=settings.cuda_graphs, score_threshold=settings.score_threshold,
            class_filter=settings.class_names, max_detections=settings.max_detections)
        self.engine = Engine(self._model, self._config, options)
        seconds = self.engine.warmup()
        self.get_logger().info(f"engine ready: {self._config.name} on {device}, "
                               f"{self.engine.precision}, CUDA graphs "
                               f"{'on' if self.engine.use_graphs else 'off'} "
                               f"(warm-up {seconds:.1f} s)")

    def _parameter_homography(self) -> np.ndarray | None:
        if self.settings.registration != "homography":
            return None
        return validate_homography(np.array(self.settings.homography).reshape(3, 3))

    def _create_publishers(self) -> None:
        self._publishers_ = {
            "detections": self.create_publisher(Detection2DArray, "~/detections", 10),
            "mask": self.create_publisher(Image, "~/segmentation/mask", 10),
            "color": self.create_publisher(Image, "~/segmentation/color", 10),
            "debug": self.create_publisher(Image, "~/debug_image", 10),
            "registered_ir": self.create_publisher(Image, "~/ir/registered", 10),
            "label_info": self.create_publisher(LabelInfo, "~/label_info", LATCHED),
            "seg_label_info": self.create_publisher(LabelInfo, "~/segmentation/label_info",
                                                    LATCHED),
        }

    def _subscribe(self) -> None:
        settings = self.settings
        reliability = (ReliabilityPolicy.BEST_EFFORT if settings.qos_reliability == "best_effort"
                       else ReliabilityPolicy.RELIABLE)
        qos = QoSProfile(depth=settings.qos_depth, reliability=reliability)
        kind, suffix = (CompressedImage, "/compressed") if settings.use_compressed else (Image, "")
        self._subscriptions_ = [
            self.create_subscription(kind, "~/rgb/image" + suffix, self._on_rgb, qos),
            self.create_subscription(kind, "~/ir/image" + suffix, self._on_ir, qos),
        ]
        if settings.registration == "camera_info":
            for stream in ("rgb", "ir"):
                self._subscriptions_.append(self.create_subscription(
                    CameraInfo, f"~/{stream}/camera_info",
                    lambda msg, s=stream: self._on_camera_info(s, msg), qos))
        self.get_logger().info(
            f"subscribed to {kind.__name__} ~/rgb/image{suffix}, ~/ir/image{suffix} "
            f"({settings.qos_reliability}, depth {settings.qos_depth}); "
            f"registration: {settings.registration}")

    # Callbacks --------------------------------------------------------------------------
    def _on_rgb(self, msg) -> None:
        self._on_image("rgb", msg, rgb_from_compressed if self.settings.use_compressed
                       else rgb_from_image)

    def _on_ir(self, msg) -> None:
        self._on_image("ir", msg, ir_from_compressed if self.settings.use_compressed
                       else ir_from_image)

    def _on_image(self, stream: str, msg, convert) -> None:
        received = time.monotonic_ns()
        self.stats.arrived(stream, received)
        pairer = self._pairer
        if pairer is None:
            return
        try:
            array = convert(msg)
        except ImageError as exc:
            self._bad_input(f"{stream}_{exc.kind}", f"{stream} image: {exc}")
            return
        cost_ms = (time.monotonic_ns() - received) / 1e6
        frame = Frame(stamp_ns(msg.header.stamp), (array, msg.header, cost_ms), received)
        accepted = pairer.add_rgb(frame) if stream == "rgb" else pairer.add_ir(frame)
        if not accepted:
            self._bad_input(f"{stream}_stamps_backwards",
                            f"{stream} image stamp went backwards; frame ignored")

    def _on_camera_info(self, stream: str, msg: CameraInfo) -> None:
        self._camera_info[stream] = msg
        if len(self._camera_info) == 2 and self._homography is None:
            settings = self.settings
            rotation = rotation_from_rpy(*settings.ir_to_rgb_rotation_rpy)
            try:
                self._homography = validate_homography(homography_from_calibration(
                    np.array(self._camera_info["ir"].k).reshape(3, 3),
                    np.array(self._camera_info["rgb"].k).reshape(3, 3),
                    rotation, np.array(settings.ir_to_rgb_translation),
                    settings.working_distance))
                self.get_logger().info("registration from both CameraInfo messages ready")
            except ValueError as exc:
                self._bad_input("camera_info", f"camera_info registration: {exc}")

    # Worker -----------------------------------------------------------------------------
    def _work(self) -> None:
        while self._running.is_set():
            pair = self._pairer.take(timeout=0.1)
            if pair is None or not self._running.is_set():
                continue
            try:
                self._process(pair)
            except Exception as exc:  # the worker must outlive any single bad frame
                self._bad_input(f"processing_{type(exc).__name__}",
                                f"processing a frame failed: {type(exc).__name__}: {exc}")

    def _process(self, pair: Pair) -> None:
        rgb_array, header, rgb_cost = pair.rgb.data
        rgb, bgr = rgb_array
        ir, ir_cost = (pair.ir.data[0], pair.ir.data[2]) if pair.ir is not None else (None, 0.0)
        self._note_ir_state()
        if pair.alone_because == "stamps_apart":
            self._bad_input("stamps_apart", "RGB and IR stamps are farther apart than 'slop'; "
                            "that RGB frame ran RGB-only (check camera clocks and 'slop')")
        homography = self._homography
        try:
            result = self.engine.infer(rgb, ir, homography, bgr=bgr)
        except ValueError as exc:
            self._bad_input("engine_input", f"frame refused by the engine: {exc}")
            return
        start = time.monotonic_ns()
        self._publish(header, rgb, bgr, ir, homography, result)
        publish_ms = (time.monotonic_ns() - start) / 1e6
        now_ns = self.get_clock().now().nanoseconds
        self.stats.arrived("output", time.monotonic_ns())
        self.stats.sample("latency", result.timings_ms["total"])
        self.stats.sample("age", (now_ns - stamp_ns(header.stamp)) / 1e6)
        self.stats.sample("overhead", rgb_cost + ir_cost + publish_ms)

    def _note_ir_state(self) -> None:
        alive = self._pairer.ir_alive()
        if alive != self._ir_was_alive:
            # One call site per severity: rclpy refuses two severities at one site.
            if alive:
                self.get_logger().info("IR stream up: fusing RGB + IR")
            else:
                self.get_logger().warning("IR stream silent: RGB-only inference until it "
                                          "returns")
            self._ir_was_alive = alive

    # Publishing -------------------------------------------------------------------------
    def _publish(self, header, rgb, bgr, ir, homography, result: Result) -> None:
        pubs = self._publishers_
        if result.detections is not None:
            pubs["detections"].publish(detections_to_msg(header, result.detections))
        color = None
        if result.class_map is not None:
            pubs["mask"].publish(image_msg(header, result.class_map, "mono8"))
            if pubs["color"].get_subscription_count() or pubs["debug"].get_subscription_count():
                color = result.color_map()
            if pubs["color"].get_subscription_count():
                pubs["color"].publish(image_msg(header, color, "rgb8"))
        if pubs["debug"].get_subscription_count():
            settings = self.settings
            image = rgb[..., ::-1] if bgr else rgb
            overlay = draw_overlay(image, result.detections, self.engine.class_names, color,
                                   settings.overlay_alpha, settings.overlay_mask,
                                   settings.overlay_labels)
            pubs["debug"].publish(image_msg(header, overlay, "rgb8"))
        if ir is not None and pubs["registered_ir"].get_subscription_count():
            registered = self.engine.register_ir(ir, homography, rgb.shape)
            pubs["registered_ir"].publish(image_msg(header, registered, "mono8"))

    def _publish_label_info(self) -> None:
        stamp = self.get_clock().now().to_msg()
        for key, names in (("label_info", self.engine.class_names),
                           ("seg_label_info", self.engine.seg_class_names)):
            message = LabelInfo(threshold=float(self.settings.score_threshold))
            message.header.stamp = stamp
            message.class_map = [VisionClass(class_id=i, class_name=n)
                                 for i, n in enumerate(names)]
            self._publishers_[key].publish(message)

    # Diagnostics ------------------------------------------------------------------------
    def _bad_input(self, kind: str, message: str) -> None:
        self.stats.error(kind)
        if kind not in self._logged:
            self._logged.add(kind)
            self.get_logger().warning(f"{message} (logged once; counted in /diagnostics as "
                                      f"'{kind}')")

    def _publish_diagnostics(self) -> None:
        now = time.monotonic_ns()
        status = DiagnosticStatus(name=f"{self.get_name()}: pipeline",
                                  hardware_id=self.engine.device.type if self.engine else "")
        counters = {f"bad_input_{k}": v for k, v in self.stats.errors.items()}
        if self._pairer is not None:
            counters.update({f"pairs_{k}": v for k, v in self._pairer.counters.items()})
        ir_alive = self._pairer is not None and self._pairer.ir_alive()
        latency, age, overhead = (self.stats.percentiles(k)
                                  for k in ("latency", "age", "overhead"))
        status.level, status.message = self._level(ir_alive)
        values = {
            "state": self._state,
            "ir_state": "fused" if ir_alive else "rgb_only (IR silent)",
            "rgb_rate_hz": f"{self.stats.rate('rgb', now):.2f}",
            "ir_rate_hz": f"{self.stats.rate('ir', now):.2f}",
            "output_rate_hz": f"{self.stats.rate('output', now):.2f}",
            "latency_p50_ms": f"{latency[0]:.1f}", "latency_p99_ms": f"{latency[1]:.1f}",
            "age_p50_ms": f"{age[0]:.1f}", "age_p99_ms": f"{age[1]:.1f}",
            "node_overhead_p50_ms": f"{overhead[0]:.2f}",
            "node_overhead_p99_ms": f"{overhead[1]:.2f}",
        }
        values.update({key: str(count) for key, count in sorted(counters.items())})
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        message = DiagnosticArray(status=[status])
        message.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(message)

    def _level(self, ir_alive: bool) -> tuple[bytes, str]:
        """WARN while bad input keeps arriving (new since the last report) or IR is silent."""
        errors = dict(self.stats.errors)
        new = sorted(k for k, v in errors.items() if v > self._reported_errors.get(k, 0))
        self._reported_errors = errors
        if self._state.startswith("configure failed"):
            return DiagnosticStatus.ERROR, self._state
        if self._state != "active":
            return DiagnosticStatus.OK, self._state
        if new:
            return DiagnosticStatus.WARN, f"bad input: {', '.join(new)}"
        if not ir_alive:
            return DiagnosticStatus.WARN, "IR silent: RGB-only inference"
        return DiagnosticStatus.OK, "fusing RGB + IR"


def main(args: list[str] | None = None) -> None:
    """Entry point (``perception_node``, as ``ros2 run ivtuning_ros perception_node``)."""
    rclpy.init(args=args)
    node = PerceptionNode()
    try:
        if node.settings.autostart:
            node.trigger_configure()
            if node._state == "inactive":
                node.trigger_activate()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
