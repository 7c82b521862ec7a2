"""The perception node: RGB + IR images in, detections, masks and diagnostics out.

A lifecycle node. configure loads the model and the engine; activate subscribes
and starts the inference worker; deactivate stops it and frees the GPU. Camera
callbacks only check, convert (zero-copy) and hand frames to the `FramePairer`;
one worker thread takes the newest pair when it is free, runs the engine and
publishes the results and the fusion state of that output with the RGB frame's
header; display-only images are drawn on a thread of their own. Bad input is
logged once per kind, counted in /diagnostics, and never stops the node.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import (
    Detection2DArray,
    LabelInfo,
    VisionClass,
)

from ..model import load_model
from ..model.checkpoint import SYNTHETIC, trained_on, training_data
from ..runtime import (
    LARGE_LAYOUT_PIXELS,
    Engine,
    EngineOptions,
    Result,
    count_non_finite,
    trim_host_heap,
)
from ..runtime.image_fusion import FusionRunner
from ..runtime.registration import (
    homography_from_calibration,
    rotation_from_rpy,
    validate_homography,
)
from ..runtime.tracking import Tracker, TrackState
from .conversions import (
    ImageError,
    ir_from_compressed,
    ir_from_image,
    rgb_from_compressed,
    rgb_from_image,
)
from .diagnostics import HORIZON_NS, REFUSAL_RECENT_NS, PipelineStats
from .display import LatestJobThread
from .logging_bridge import forward_library_logging, stop_forwarding
from .messages import detections_to_msg, fusion_state_msg, image_msg
from .overlay import draw_overlay
from .pairing import Frame, FramePairer, Pair
from .params import (
    DEFAULT_MODEL_CONFIG,
    PARAMETERS,
    SPECS,
    ParamSpec,
    Settings,
    check_value,
    coerced,
    default_values,
    package_dir,
    settings_from,
)

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
QOS_FOLLOW_PERIOD_S = 0.25  # graph queries cost microseconds
IR_LOG_PERIOD_S = 10.0  # IR up/silent lines: at most IR_LOG_BURST in this many seconds,
IR_LOG_BURST = 2  # so a dropout and its return log at once; more changes are summarised
MIN_OUTPUTS_FOR_WARN = 5  # "nothing fused" needs this many outputs in the window


class SettingsError(ValueError):
    """A parameter value the node cannot run with; the message names it and the fix."""


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class PerceptionNode(LifecycleNode):
    """See the module docstring; topics are private (``~/``) and remapped in launch.

    Raises `SettingsError` (or rclpy's `ParameterException`) when the parameters are unusable.
    """

    def __init__(self, node_name: str = "ivtuning_perception", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        # First: the context's shutdown destroys even a node whose construction failed, and
        # destroy_node removes this.
        self._log_forwarding = forward_library_logging(self.get_logger())
        self._declare_parameters()
        self.settings: Settings = self._read_settings()
        self.stats = PipelineStats()
        self.engine: Engine | None = None
        self._model = None
        self._config = None
        self._trained = False  # the model came from a checkpoint
        self._trained_on = ""  # /diagnostics' weights_trained_on, set with the model
        self._pairer: FramePairer | None = None
        self._worker: threading.Thread | None = None
        self._display: LatestJobThread | None = None
        self._fusion: FusionRunner | None = None
        # One tracker for the node's life (ids are never reused), reset by activate and by
        # parameter changes on the executor while the worker updates it: hence the lock.
        self._tracker = self._new_tracker()
        self._tracking_lock = threading.Lock()
        self._fused_at = 0.0  # monotonic time of the last fused image
        self._last_fused: np.ndarray | None = None
        self._trim_pending = False  # a large frame came: trim the heap after a normal pair
        self._running = threading.Event()
        self._subscriptions_: dict[str, object] = {}
        self._image_qos: dict[str, ReliabilityPolicy] = {}
        self._publishers_: dict = {}
        self._camera_info: dict[str, CameraInfo] = {}
        self._homography: np.ndarray | None = None
        self._logged: set[str] = set()
        self._state = "unconfigured"
        self._ir_was_alive = False
        self._ir_logged_at: deque[float] = deque(maxlen=IR_LOG_BURST)  # monotonic s
        self._ir_changes_unlogged = 0
        self._ir_changed_at = 0.0
        self._ir_log_lock = threading.Lock()  # the worker and the diagnostics timer log
        self._reported_errors: dict[str, int] = {}
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Steady time: a sim clock that stands still (no /clock yet, a paused bag) must
        # neither silence the report that says so nor stop following the cameras' QoS.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(self.settings.diagnostics_period, self._publish_diagnostics,
                          clock=steady)
        # Camera publishers are often discovered just after activation; until this timer
        # re-subscribes with their QoS, large frames may be lost and the first result waits.
        self.create_timer(QOS_FOLLOW_PERIOD_S, self._follow_camera_qos, clock=steady)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def model_name(self) -> str:
        """The loaded model config's name ("" before configure)."""
        return self._config.name if self._config is not None else ""

    # Parameters -----------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        """Declare every parameter with the static type of its default, the overrides (a
        parameters file, ``parameter_overrides``) coerced to it first: rclpy calls no
        pre-set callback on declaration, and a dynamically typed parameter would take the
        type of any value set, a refused one included. Later sets are coerced by
        `_coerce_parameters`."""
        given = {**default_values(), **self._overrides()}
        values = {spec.name: coerced(spec.name, given[spec.name]) for spec in PARAMETERS}
        try:
            settings_from(values)  # names every bad value, before rclpy refuses the first
        except ValueError as exc:
            raise SettingsError(f"bad parameter: {exc}") from None
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, values[spec.name], _descriptor(spec),
                                   ignore_override=True)
        self.add_pre_set_parameters_callback(self._coerce_parameters)

    def _overrides(self) -> dict:
        # rclpy keeps the parameters file's and parameter_overrides' values here and has no
        # public accessor for them.
        return {name: parameter.value for name, parameter in self._parameter_overrides.items()}

    @staticmethod
    def _coerce_parameters(parameters: list[Parameter]) -> list[Parameter]:
        """Before rclpy's type check: a number given for a float parameter (``ros2 param set
        /node overlay_alpha 1`` sends an integer) becomes a float, as in `_declare_parameters`."""
        return [Parameter(p.name, value=coerced(p.name, p.value)) if p.name in SPECS else p
                for p in parameters]

    def _read_settings(self) -> Settings:
        try:
            return settings_from({spec.name: self.get_parameter(spec.name).value
                                  for spec in PARAMETERS})
        except ValueError as exc:
            raise SettingsError(f"bad parameter: {exc}") from None

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        updates = {}
        for parameter in parameters:
            problem = check_value(parameter.name, parameter.value) \
                if parameter.name in SPECS else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            updates[parameter.name] = parameter.value
        if "class_filter" in updates:
            problem = self._class_filter_problem(updates["class_filter"])
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            if self.engine is not None:
                self.engine.set_class_filter(_names(updates["class_filter"]))
        self.settings = settings_from({**self.settings.__dict__, **updates})
        self._apply_tracking_updates(updates)
        if "score_threshold" in updates and "label_info" in self._publishers_:
            self._publish_label_info()
        return SetParametersResult(successful=True)

    # Tracking ---------------------------------------------------------------------------
    def _engine_threshold(self) -> float:
        """With tracking, the engine keeps the lower scores that extend tracks."""
        threshold = self.settings.score_threshold
        return Tracker.low_score(threshold) if self.settings.tracking else threshold

    def _new_tracker(self) -> Tracker:
        settings = self.settings
        return Tracker(score_threshold=settings.score_threshold,
                       lost_time=settings.tracking_lost_time,
                       smoothing=settings.tracking_smoothing)

    def _apply_tracking_updates(self, updates: dict) -> None:
        """Runtime changes: switching tracking, its lost time or the class filter restarts
        the tracks (a track's class votes came under the old filter); a new threshold or
        smoothing applies to the live tracks."""
        settings = self.settings
        if "score_threshold" in updates or "tracking" in updates:
            if self.engine is not None:
                self.engine.set_score_threshold(self._engine_threshold())
        with self._tracking_lock:
            tracker = self._tracker
            tracker.set_score_threshold(settings.score_threshold)
            tracker.smoothing = settings.tracking_smoothing
            if {"tracking", "tracking_lost_time", "class_filter"} & set(updates):
                tracker.lost_time = settings.tracking_lost_time
                tracker.reset()

    def _class_filter_problem(self, class_filter: str) -> str | None:
        """Unknown class names, once a model is loaded (checked again at configure)."""
        if self._config is None or self._config.detection is None:
            return None
        known = list(self._config.detection.classes)
        unknown = sorted(set(_names(class_filter) or []) - set(known))
        return (f"class_filter names unknown class(es) {unknown}; the model detects {known}"
                if unknown else None)

    # Lifecycle --------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.settings = self._read_settings()
            self._model, self._config = self._load_model()
            problem = self._class_filter_problem(self.settings.class_filter)
            if problem:
                raise SettingsError(problem)
            self._homography = self._parameter_homography()
            self._create_engine()
            self._fusion = self._load_fusion()
        except Exception as exc:  # every way a configuration can fail ends here, readably
            return self._transition_failed("configure", exc)
        self._create_publishers()
        self._publish_label_info()
        self._state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            if self.engine is None:
                self._create_engine()
        except Exception as exc:
            return self._transition_failed("activate", exc)
        settings = self.settings
        self._pairer = FramePairer(int(settings.slop * 1e9), int(settings.ir_timeout * 1e9),
                                   int(settings.stale_after * 1e9),
                                   max_wait_ns=int(settings.ir_max_wait * 1e9),
                                   fuse_despite_clock_offset=settings.fuse_despite_clock_offset)
        self._display = LatestJobThread("ivtuning-display", self._publish_display,
                                        self._display_failed, background=True)
        with self._tracking_lock:
            self._tracker.reset()  # a fresh start on every activation
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

    def _transition_failed(self, transition: str, exc: Exception) -> TransitionCallbackReturn:
        reason = str(exc) if isinstance(exc, (ValueError, OSError)) \
            else f"{type(exc).__name__}: {exc}"
        self._state = f"{transition} failed: {reason}"
        self.get_logger().error(self._state)
        return TransitionCallbackReturn.FAILURE

    def _stop(self, join_timeout: float = 30.0) -> None:
        """Stop subscriptions and the threads; free the GPU (the model stays on the CPU).

        The worker finishes the frame it is on; ``join_timeout`` bounds the wait for it (the
        process exit passes a short one: a late publish fails silently once stopped)."""
        self._running.clear()
        if self._pairer is not None:
            self._pairer.close()
        if self._worker is not None:
            self._worker.join(timeout=join_timeout)
            self._worker = None
        if self._display is not None:
            self._display.stop(timeout=join_timeout)
            self._display = None
        for subscription in self._subscriptions_.values():
            self.destroy_subscription(subscription)
        self._subscriptions_.clear()
        if self.engine is not None:
            self.engine = None
            self._model.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # Set-up -----------------------------------------------------------------------------
    def _package_file(self, parameter: str, name: str) -> Path:
        """A parameter's file: a path, or a file name under the package's models/ folder."""
        path = Path(name)
        if not path.is_file():
            path = package_dir("models") / name
            if not path.is_file():
                raise SettingsError(f"{parameter} '{name}' is neither a file nor a file "
                                    f"under {package_dir('models')}")
        return path

    def _load_fusion(self) -> FusionRunner | None:
        settings = self.settings
        if not settings.fusion_checkpoint:
            if settings.overlay_background == "fused":
                raise SettingsError("overlay_background 'fused' needs a fusion_checkpoint")
            return None
        path = self._package_file("fusion_checkpoint", settings.fusion_checkpoint)
        return FusionRunner(path, settings.fusion_width, str(self.engine.device))

    def _load_model(self):
        settings = self.settings
        if settings.checkpoint and settings.model_overrides:
            raise SettingsError("model_overrides apply to a model_config, but a checkpoint "
                                "carries its own config: clear model_overrides")
        name = settings.model_config or ("" if settings.checkpoint else DEFAULT_MODEL_CONFIG)
        path = self._package_file("model_config", name) if name else None
        model, config, self._trained = load_model(
            path, settings.checkpoint or None, base_weights=settings.base_weights or None,
            overrides=settings.model_overrides.split())
        # Synthetic-only weights (the demo's) are a choice, like allow_untrained: the log
        # and weights_trained_on say so, the level stays OK (see the README).
        self._trained_on = training_data(trained_on(model)) if self._trained else "untrained"
        if self._trained:
            self.get_logger().info(f"loaded checkpoint {settings.checkpoint} ({config.name}, "
                                   f"trained on {self._trained_on} data)")
            if self._trained_on == SYNTHETIC:
                self.get_logger().warning("the checkpoint was trained on synthetic scenes "
                                          "only: expect few or no detections on real cameras")
        else:
            self.get_logger().warning(f"no checkpoint given: {config.name} runs with untrained "
                                      "heads and prompter; set the 'checkpoint' parameter")
        return model, config

    def _create_engine(self) -> None:
        settings = self.settings
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SettingsError(f"device '{device}' asked for, but this torch "
                                f"({torch.__version__}) sees no CUDA device; use device "
                                "'cpu' or 'auto'")
        options = EngineOptions(
            device=device, precision=None if settings.precision == "auto" else settings.precision,
            cuda_graphs=settings.cuda_graphs, score_threshold=self._engine_threshold(),
            class_filter=settings.class_names, max_detections=settings.max_detections,
            backend=settings.backend, cache_dir=settings.engine_cache_dir or None,
            source=settings.checkpoint)
        self.engine = Engine(self._model, self._config, options)
        seconds = self.engine.warmup()
        warmed = (f"warm-up {seconds:.1f} s" if self.engine.backend == "torch" else
                  "no warm-up: each new frame layout is exported and compiled on its first "
                  f"frame, once, and kept in {self.engine.cache_dir}")
        self.get_logger().info(f"engine ready: {self._config.name} on {device}, "
                               f"{self.engine.backend} {self.engine.precision}, CUDA graphs "
                               f"{'on' if self.engine.use_graphs else 'off'} ({warmed})")

    def destroy_node(self) -> None:
        stop_forwarding(self._log_forwarding)
        super().destroy_node()

    def _parameter_homography(self) -> np.ndarray | None:
        if self.settings.registration != "homography":
            return None
        return validate_homography(np.array(self.settings.homography).reshape(3, 3))

    def _create_publishers(self) -> None:
        self._publishers_ = {
            "detections": self.create_publisher(Detection2DArray, "~/detections", 10),
            "mask": self.create_publisher(Image, "~/segmentation/mask", 10),
            "saliency": self.create_publisher(Image, "~/saliency", 10),
            "fusion_state": self.create_publisher(DiagnosticArray, "~/fusion_state", 10),
            "color": self.create_publisher(Image, "~/segmentation/color", 10),
            "debug": self.create_publisher(Image, "~/debug_image", 10),
            "registered_ir": self.create_publisher(Image, "~/ir/registered", 10),
            "fused": self.create_publisher(Image, "~/fused/image", 10),
            "label_info": self.create_publisher(LabelInfo, "~/label_info", LATCHED),
            "seg_label_info": self.create_publisher(LabelInfo, "~/segmentation/label_info",
                                                    LATCHED),
        }

    # Subscriptions and their QoS --------------------------------------------------------
    def _subscribe(self) -> None:
        settings = self.settings
        suffix = "/compressed" if settings.use_compressed else ""
        for stream in ("rgb", "ir"):
            self._subscribe_image(stream, self._wanted_reliability(f"~/{stream}/image{suffix}"))
        if settings.registration == "camera_info":
            qos = QoSProfile(depth=settings.qos_depth, reliability=ReliabilityPolicy.BEST_EFFORT)
            for stream in ("rgb", "ir"):
                self._subscriptions_[f"{stream}_info"] = self.create_subscription(
                    CameraInfo, f"~/{stream}/camera_info",
                    lambda msg, s=stream: self._on_camera_info(s, msg), qos)

    def _subscribe_image(self, stream: str, reliability: ReliabilityPolicy) -> None:
        settings = self.settings
        kind, suffix = (CompressedImage, "/compressed") if settings.use_compressed else (Image, "")
        old = self._subscriptions_.pop(stream, None)
        if old is not None:
            self.destroy_subscription(old)
        callback = self._on_rgb if stream == "rgb" else self._on_ir
        subscription = self.create_subscription(
            kind, f"~/{stream}/image{suffix}", callback,
            QoSProfile(depth=settings.qos_depth, reliability=reliability))
        self._subscriptions_[stream] = subscription
        self._image_qos[stream] = reliability
        self.get_logger().info(
            f"subscribed to {kind.__name__} {subscription.topic_name} "
            f"({'reliable' if reliability == ReliabilityPolicy.RELIABLE else 'best effort'}, "
            f"depth {settings.qos_depth}; qos_reliability: {settings.qos_reliability})")

    def _wanted_reliability(self, topic: str) -> ReliabilityPolicy:
        """The setting, or with ``auto`` what the camera publishers offer: reliable only when
        every publisher is (best effort matches both kinds, but drops most large frames
        between processes on localhost)."""
        setting = self.settings.qos_reliability
        if setting != "auto":
            return ReliabilityPolicy.RELIABLE if setting == "reliable" \
                else ReliabilityPolicy.BEST_EFFORT
        offered = [info.qos_profile.reliability for info in self.get_publishers_info_by_topic(
            self.resolve_topic_name(topic, only_expand=False))]
        return ReliabilityPolicy.RELIABLE if offered and all(
            r == ReliabilityPolicy.RELIABLE for r in offered) else ReliabilityPolicy.BEST_EFFORT

    def _follow_camera_qos(self) -> None:
        """With ``qos_reliability: auto``, re-subscribe when the camera publishers change."""
        if self.settings.qos_reliability != "auto" or not self._running.is_set():
            return
        for stream in ("rgb", "ir"):
            subscription = self._subscriptions_.get(stream)
            if subscription is None:
                continue
            wanted = self._wanted_reliability(subscription.topic_name)
            if wanted != self._image_qos[stream]:
                self._subscribe_image(stream, wanted)

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
        if pairer is None or not self._checked_header(stream, msg.header):
            return
        try:
            array = convert(msg, max_pixels=self.settings.max_image_pixels)
        except ImageError as exc:
            self._trim_pending |= exc.kind == "too_large"
            self._refuse(stream, f"{stream}_{exc.kind}", str(exc))
            return
        self._trim_pending |= _is_large(array[0] if stream == "rgb" else array)  # (rgb, bgr)
        if stream == "ir" and count_non_finite(array):
            self._bad_input("ir_non_finite", "IR image has NaN or infinite pixels: +inf reads "
                            "as the hottest, -inf and NaN as the coldest value of the frame")
        cost_ms = (time.monotonic_ns() - received) / 1e6
        frame = Frame(stamp_ns(msg.header.stamp), (array, msg.header, cost_ms), received)
        accepted = pairer.add_rgb(frame) if stream == "rgb" else pairer.add_ir(frame)
        if not accepted:
            self._refuse(stream, f"{stream}_stamps_backwards", "its stamp went backwards: fix "
                         "the camera driver's stamps")
            return
        self.stats.accepted(stream, received)

    def _checked_header(self, stream: str, header) -> bool:
        """Repair or refuse implausible headers (documented in README): nanosec >= 1e9 is
        carried into sec (the same instant, as ROS clients read it; outputs republish the
        header); a zero stamp becomes the receipt time on the node's clock; a stamp farther
        than ``max_stamp_offset`` from the node's clock refuses the frame; an empty RGB
        frame_id becomes ``fallback_frame_id``."""
        now = self.get_clock().now()
        if header.stamp.nanosec >= 1_000_000_000:
            self._normalise_nanosec(stream, header.stamp)
        if header.stamp.sec == 0 and header.stamp.nanosec == 0:
            header.stamp = now.to_msg()
            self._bad_input(f"{stream}_stamp_zero", f"{stream} image stamp is zero; stamped "
                            "with the receipt time instead (fix the camera driver's stamps)")
        limit = self.settings.max_stamp_offset
        offset_s = (stamp_ns(header.stamp) - now.nanoseconds) / 1e9
        if limit > 0 and abs(offset_s) > limit:
            self._refuse(stream, f"{stream}_stamp_implausible",
                         f"stamp is {offset_s:+.1f} s from the node's clock (max_stamp_offset "
                         f"{limit:g} s): {self._stamp_fix(now.nanoseconds)}")
            return False
        if stream == "rgb" and not header.frame_id:
            header.frame_id = self.settings.fallback_frame_id
            self._bad_input("rgb_frame_id_empty", "RGB image has an empty frame_id; outputs "
                            f"use fallback_frame_id '{header.frame_id}'")
        return True

    def _normalise_nanosec(self, stream: str, stamp) -> None:
        carry, nanosec = divmod(stamp.nanosec, 1_000_000_000)
        self._bad_input(f"{stream}_stamp_nanosec_overflow",
                        f"{stream} image stamp has nanosec {stamp.nanosec} (>= 1e9); carried "
                        "into sec, the same instant (fix the camera driver's stamps)")
        stamp.sec, stamp.nanosec = min(stamp.sec + carry, 2**31 - 1), nanosec

    def _stamp_fix(self, now_ns: int) -> str:
        if now_ns == 0 and self.get_parameter("use_sim_time").value:
            return ("use_sim_time is set but /clock is not published (the node's clock reads "
                    "0): play the bag with --clock or clear use_sim_time")
        return ("synchronise the clocks, set use_sim_time when replaying a bag, or set "
                "max_stamp_offset to 0")

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
                if not self._running.is_set():
                    return  # shutting down: publishers may be gone already
                self._bad_input(f"processing_{type(exc).__name__}",
                                f"processing a frame failed: {type(exc).__name__}: {exc}")

    def _process(self, pair: Pair) -> None:
        rgb_array, header, rgb_cost = pair.rgb.data
        rgb, bgr = rgb_array
        ir, ir_cost = (pair.ir.data[0], pair.ir.data[2]) if pair.ir is not None else (None, 0.0)
        self._note_ir_state()
        homography = self._homography
        try:
            result = self.engine.infer(rgb, ir, homography, bgr=bgr)
        except ValueError as exc:
            self._bad_input("engine_input", f"frame refused by the engine: {exc}")
            return
        start = time.monotonic_ns()
        track_ids = tracks = None
        if self.settings.tracking and result.detections is not None:
            with self._tracking_lock:
                tracked = self._tracker.update(result.detections, stamp_ns(header.stamp) / 1e9,
                                               result.ir_used, rgb.shape[:2])
                tracks = self._tracker.live_tracks()
            result, track_ids = dataclasses.replace(result, detections=tracked.detections), \
                tracked.track_ids
        self._publish(pair, header, result, track_ids, tracks)
        if self._display_wanted():
            self._display.submit((header, rgb, bgr, ir, homography, result, track_ids))
        publish_ms = (time.monotonic_ns() - start) / 1e6
        now = time.monotonic_ns()
        self.stats.output(now, pair.alone_because)
        self.stats.sample("latency", result.timings_ms["total"], now)
        self.stats.sample("age", (self.get_clock().now().nanoseconds
                                  - stamp_ns(header.stamp)) / 1e6, now)
        self.stats.sample("overhead", rgb_cost + ir_cost + publish_ms, now)
        if self._trim_pending and not _is_large(rgb) and not (ir is not None and _is_large(ir)):
            # The large frame's message, conversion and engine buffers are gone by now;
            # glibc would otherwise keep much of their memory in its arenas for good.
            self._trim_pending = False
            trim_host_heap()

    def _note_ir_state(self) -> None:
        """Log IR coming and going; called per frame by the worker and per report by the
        diagnostics timer (`_fusion_summary`). At most IR_LOG_BURST lines per
        IR_LOG_PERIOD_S (a flaky cable would otherwise flood the log): a change beyond that
        is counted, and the state the stream is in is logged as soon as the limit allows,
        with the count, so no transition is hidden and the last one is always logged."""
        pairer = self._pairer
        if pairer is None:
            return
        alive = pairer.ir_alive()
        now = time.monotonic()
        with self._ir_log_lock:
            if alive != self._ir_was_alive:
                self._ir_was_alive = alive
                self._ir_changes_unlogged += 1
                self._ir_changed_at = now
            logged = self._ir_logged_at
            if not self._ir_changes_unlogged or (
                    len(logged) == IR_LOG_BURST and now - logged[0] < IR_LOG_PERIOD_S):
                return
            logged.append(now)
            count, since = self._ir_changes_unlogged, now - self._ir_changed_at
            self._ir_changes_unlogged = 0
            alive = self._ir_was_alive
        changes = (f" ({count} changes since the last message, this one {since:.1f} s ago)"
                   if count > 1 or since >= 1.0 else "")
        # One call site per severity: rclpy refuses two severities at one site.
        if alive:
            self.get_logger().info(f"IR stream up: fusing RGB + IR{changes}")
        else:
            self.get_logger().warning("IR stream silent: RGB-only inference until it "
                                      f"returns{changes}")

    # Publishing -------------------------------------------------------------------------
    def _publish(self, pair: Pair, header, result: Result, track_ids: list[str] | None,
                 tracks: list[TrackState] | None) -> None:
        """What every client needs, on the worker: detections (with track ids), class mask,
        saliency, fusion state (with the live tracks' last confirmation)."""
        pubs = self._publishers_
        if result.detections is not None:
            pubs["detections"].publish(detections_to_msg(header, result.detections, track_ids))
        if result.class_map is not None:
            pubs["mask"].publish(image_msg(header, result.class_map, "mono8"))
        if result.saliency is not None:
            pubs["saliency"].publish(image_msg(header, result.saliency, "mono8"))
        pubs["fusion_state"].publish(fusion_state_msg(
            header, pair.ir.data[1] if pair.ir is not None else None, pair.alone_because,
            tracks))

    def _display_wanted(self) -> bool:
        pubs = self._publishers_
        return any(pubs[k].get_subscription_count()
                   for k in ("color", "debug", "registered_ir", "fused"))

    def _publish_display(self, job) -> None:
        """Display-only images, on the display thread, for the topics someone watches."""
        header, rgb, bgr, ir, homography, result, track_ids = job
        pubs, engine, settings = self._publishers_, self.engine, self.settings
        if engine is None:
            return
        rgb = rgb[..., ::-1] if bgr else rgb
        watched = {k for k in ("color", "debug", "registered_ir", "fused")
                   if pubs[k].get_subscription_count()}
        color = None
        if result.class_map is not None and watched & {"color", "debug"}:
            color = result.color_map()
            if "color" in watched:
                pubs["color"].publish(image_msg(header, color, "rgb8"))
        fusion_wanted = self._fusion is not None and (
            "fused" in watched or ("debug" in watched and settings.overlay_background == "fused"))
        registered = None
        if ir is not None and ("registered_ir" in watched or fusion_wanted):
            registered = engine.register_ir(ir, homography, rgb.shape)
        if registered is not None and "registered_ir" in watched:
            pubs["registered_ir"].publish(image_msg(header, registered, "mono8"))
        background = rgb
        if fusion_wanted:
            fused, fresh = self._fused_image(rgb, registered)
            if fresh and "fused" in watched:
                pubs["fused"].publish(image_msg(header, fused, "rgb8"))
            if settings.overlay_background == "fused" and fused.shape == rgb.shape:
                background = fused
        if "debug" in watched:
            overlay = draw_overlay(background, result.detections, engine.class_names, color,
                                   settings.overlay_alpha, settings.overlay_mask,
                                   settings.overlay_labels, track_ids,
                                   saliency=result.saliency)
            pubs["debug"].publish(image_msg(header, overlay, "rgb8"))

    def _fused_image(self, rgb: np.ndarray,
                     registered: np.ndarray | None) -> tuple[np.ndarray, bool]:
        """(image, fresh): M2PN's fused image, computed at most fusion_max_rate times a
        second; in between the last one (for the overlay's background, not re-published).
        Without IR (lost, or not yet paired) the visible image stands in, so the operator's
        view stays live; ~/fusion_state says the frame ran RGB-only."""
        now, rate = time.monotonic(), self.settings.fusion_max_rate
        if self._last_fused is None or rate == 0 or now - self._fused_at >= 1.0 / rate:
            self._fused_at = now
            self._last_fused = rgb if registered is None else self._fusion.fuse(rgb, registered)
            return self._last_fused, True
        if registered is None:
            return rgb, False
        return self._last_fused, False

    def _display_failed(self, exc: Exception) -> None:
        if self._running.is_set():
            self._bad_input(f"display_{type(exc).__name__}",
                            f"drawing a display image failed: {type(exc).__name__}: {exc}")

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

    def _refuse(self, stream: str, kind: str, reason: str) -> None:
        """A camera frame refused: logged once per kind and counted (`_bad_input`); while no
        frame of ``stream`` is accepted, /diagnostics names ``reason`` (`_refusal`)."""
        self.stats.refused(stream, kind, reason, time.monotonic_ns())
        self._bad_input(kind, f"{stream} frame refused: {reason}")

    def _refusal(self, stream: str, now_ns: int) -> tuple[str, str] | None:
        """(kind, reason) while ``stream`` frames arrive but none is accepted: for IR, for
        ir_timeout (when the pairer would call IR silent), for RGB for REFUSAL_RECENT_NS."""
        quiet_ns = int(self.settings.ir_timeout * 1e9) if stream == "ir" else REFUSAL_RECENT_NS
        return self.stats.refusal(stream, now_ns, quiet_ns)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic_ns()
        status = DiagnosticStatus(name=f"{self.get_name()}: pipeline",
                                  hardware_id=self.engine.device.type if self.engine else "")
        counters = {f"bad_input_{k}": v for k, v in self.stats.errors.items()}
        counters.update({f"outputs_{k}": v for k, v in self.stats.outputs.items()})
        counters.update({f"{k}_frames_received": v for k, v in self.stats.received.items()})
        if self._pairer is not None:
            counters.update({f"pairs_{k}": v for k, v in self._pairer.counters.items()})
        if self._display is not None:
            counters["display_frames_skipped"] = self._display.dropped
        fusion = self._fusion_summary(now)
        latency, age, overhead = (self.stats.percentiles(k, now)
                                  for k in ("latency", "age", "overhead"))
        status.level, status.message = self._level(fusion)
        values = {
            "state": self._state,
            "model": self.engine.config.name if self.engine else "",
            "backend": self.engine.backend if self.engine else "",
            "precision": self.engine.precision if self.engine else "",
            "weights_trained_on": self._trained_on if self.engine else "",
            "ir_state": fusion["state"],
            "fused_fraction": f"{fusion['fraction']:.3f}",
            "ir_stamp_offset_ms": fusion["offset_ms"],
            "rgb_qos": _qos_name(self._image_qos.get("rgb")),
            "ir_qos": _qos_name(self._image_qos.get("ir")),
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

    def _fusion_summary(self, now_ns: int) -> dict:
        """Fusion over the recent window: outputs, fused fraction, the main RGB-only reason,
        the IR stamp offset (and, while the IR clock is off, ``clock_offset_ms``, its
        ``limit_ms`` and whether such pairs are fused), and one state word for ``ir_state``.
        Called per report, it also logs an IR change the worker could not (`_note_ir_state`)."""
        self._note_ir_state()
        outputs, fused, reasons = self.stats.fusion(now_ns)
        pairer = self._pairer
        offset = pairer.stamp_offset_ns() if pairer is not None else None
        limit = pairer.offset_limit_ns() if pairer is not None else 0
        clock_off = offset is not None and abs(offset) > limit
        fuse_off = pairer is not None and pairer.fuse_despite_clock_offset
        if pairer is None:
            state = "inactive"
        elif not pairer.ir_alive():
            refused = self._refusal("ir", now_ns)
            state = f"rgb_only (IR refused: {refused[0]})" if refused else "rgb_only (IR silent)"
        elif clock_off:
            state = "fused across ir_clock_offset" if fuse_off else "rgb_only (ir_clock_offset)"
        elif outputs and not fused:
            state = f"rgb_only ({reasons.most_common(1)[0][0]})"
        else:
            state = "fused" if fused else "waiting for frames"
        return {"outputs": outputs, "fused": fused, "fraction": fused / outputs if outputs
                else 0.0, "reasons": reasons, "state": state,
                "offset_ms": "" if offset is None else f"{offset / 1e6:.1f}",
                "clock_offset_ms": offset / 1e6 if clock_off else None,
                "limit_ms": limit / 1e6, "fuse_across_offset": fuse_off}

    def _refused_message(self) -> str | None:
        """The WARN for a camera whose frames arrive but are all refused (RGB first)."""
        now = time.monotonic_ns()
        for stream in ("rgb", "ir"):
            refused = self._refusal(stream, now)
            if refused:
                return (f"{stream.upper()} frames arrive but all are refused ({refused[0]}): "
                        f"{refused[1]}")
        return None

    def _level(self, fusion: dict) -> tuple[bytes, str]:
        """ERROR when the node cannot run; OK while inactive; else WARN only for a cause a
        user can act on, the most urgent first: a camera's frames arrive but all are refused
        (RGB before IR: without RGB nothing runs; this also explains "IR silent"), IR silent,
        the IR clock off (even while stamps pair: such pairs were captured apart), nothing
        fused, new bad input (reported once, so it goes before the lasting warning),
        an untrained model without allow_untrained (last: it lasts as long as the node runs
        and would hide the others); OK otherwise, whatever share of frames is fused."""
        errors = dict(self.stats.errors)
        new = sorted(k for k, v in errors.items() if v > self._reported_errors.get(k, 0))
        self._reported_errors = errors
        if "failed" in self._state:
            return DiagnosticStatus.ERROR, self._state
        if self._state != "active":
            return DiagnosticStatus.OK, self._state
        window = f"{HORIZON_NS / 1e9:.0f} s"
        refused = self._refused_message()
        if refused:
            return DiagnosticStatus.WARN, refused
        if fusion["state"].endswith("(IR silent)"):
            return DiagnosticStatus.WARN, (
                f"IR silent for over {self.settings.ir_timeout:g} s: RGB-only inference; check "
                "the thermal camera and the ~/ir/image remapping")
        if fusion["clock_offset_ms"] is not None:
            return DiagnosticStatus.WARN, _clock_offset_message(fusion)
        if fusion["outputs"] >= MIN_OUTPUTS_FOR_WARN and not fusion["fused"]:
            slop_ms = self.settings.slop * 1e3
            return DiagnosticStatus.WARN, (
                f"no output fused in {window} although IR arrives: no IR stamp within slop "
                f"({slop_ms:g} ms) of the RGB frames processed; raise slop or check the stamps")
        if new:
            return DiagnosticStatus.WARN, f"bad input: {', '.join(new)} (see the log)"
        if not self._trained and not self.settings.allow_untrained:
            return DiagnosticStatus.WARN, (
                f"no checkpoint: {self._config.name} runs untrained heads and prompter, its "
                "detections are meaningless; set the 'checkpoint' parameter (e.g. the "
                "package's models/ivt_demo.pth) or set allow_untrained true for tests")
        if fusion["fused"]:
            return DiagnosticStatus.OK, (f"fusing RGB + IR ({100 * fusion['fraction']:.0f}% "
                                         f"of outputs in {window})")
        return DiagnosticStatus.OK, "running"


def _clock_offset_message(fusion: dict) -> str:
    """The WARN for an IR clock that is off: the measured offset, what the node does, the fix."""
    offset = fusion["clock_offset_ms"]
    doing = ("fusing them anyway (fuse_despite_clock_offset: true)"
             if fusion["fuse_across_offset"] else
             "running RGB-only instead (ir_clock_offset; fuse_despite_clock_offset: false)")
    return (f"IR stamps are about {offset:+.0f} ms off RGB: the IR clock runs "
            f"{'ahead' if offset > 0 else 'behind'} by more than 3 frame periods "
            f"({fusion['limit_ms']:.0f} ms), judged on receipt times; pairs by stamp were "
            f"captured that far apart: {doing}; synchronise the camera clocks (PTP/chrony) "
            "or stamp both at exposure")


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """Description, read-only flag, range and choices of a parameter; the type is its
    default's (static typing)."""
    descriptor = ParameterDescriptor(description=spec.description, read_only=not spec.runtime)
    if spec.kind is float and spec.low is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.low), to_value=float(spec.high))]
    if spec.kind is int and spec.low is not None:
        descriptor.integer_range = [IntegerRange(from_value=int(spec.low),
                                                 to_value=int(spec.high), step=1)]
    if spec.choices:
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    return descriptor


def _names(class_filter: str) -> list[str] | None:
    names = [n.strip() for n in class_filter.split(",") if n.strip()]
    return names or None


def _qos_name(reliability: ReliabilityPolicy | None) -> str:
    if reliability is None:
        return ""
    return "reliable" if reliability == ReliabilityPolicy.RELIABLE else "best_effort"


def _is_large(image: np.ndarray) -> bool:
    """Over `LARGE_LAYOUT_PIXELS` (width x height): its memory is worth trimming after."""
    return image.shape[0] * image.shape[1] > LARGE_LAYOUT_PIXELS
