"""The node's parameters: one table (name, type, description, range, runtime-changeable),
defaults from config/perception.yaml, read into a typed `Settings` object (no rclpy here)."""
from __future__ import annotations

import re
from array import array as Array
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

PACKAGE = "ivtuning_ros"
NODE_NAME = "ivtuning_perception"  # the node's default name, which parameter files key on
DEFAULT_MODEL_CONFIG = "ivt_swin_t_realtime.yaml"
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: type
    description: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    runtime: bool = False  # may change while the node runs


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model_config", str, "model config YAML: a path, or a file name under the "
              "package's models/ folder; empty: the checkpoint's own config, or "
              f"{DEFAULT_MODEL_CONFIG} without a checkpoint. Set next to a checkpoint, it "
              "must name the checkpoint's model"),
    ParamSpec("model_overrides", str, "space-separated key=value overrides of the model "
              "config (not with a checkpoint, which carries its config)"),
    ParamSpec("checkpoint", str, "full or adapter checkpoint, or a weights catalogue name "
              "taken from the cache (dino_swin_l_coco; `ivtuning weights list`); empty runs "
              "untrained weights"),
    ParamSpec("allow_untrained", bool, "running without a checkpoint is intended (tests, "
              "pipeline demos): /diagnostics does not warn that the detections are "
              "meaningless"),
    ParamSpec("base_weights", str, "frozen Swin weights under an adapter checkpoint"),
    ParamSpec("device", str, "auto (cuda if available), cpu, cuda or cuda:N"),
    ParamSpec("backend", str, "inference back-end: torch (eager, CUDA graphs on GPUs), "
              "openvino (CPU), onnxruntime (CPU or CUDA) or tensorrt (NVIDIA GPUs); the "
              "exported back-ends export each new frame layout once (cached on disk)",
              choices=("torch", "openvino", "onnxruntime", "tensorrt")),
    ParamSpec("engine_cache_dir", str, "exported models and TensorRT engines; empty: "
              "$IVTUNING_CACHE or ~/.cache/ivtuning_ros"),
    ParamSpec("precision", str, "auto (the back-end's best: torch fp16 on CUDA and fp32 on "
              "CPU, OpenVINO bf16 where the CPU has it else fp32, TensorRT fp16), fp32, fp16 "
              "or bf16", choices=("auto", "fp32", "fp16", "bf16")),
    ParamSpec("cuda_graphs", bool, "capture the per-frame step in CUDA graphs"),
    ParamSpec("score_threshold", float, "lowest detection score published (with tracking, "
              "down to half of it where a detection extends a track)", low=0.0, high=1.0,
              runtime=True),
    ParamSpec("class_filter", str, "comma-separated detection class names to publish; "
              "empty for all", runtime=True),
    ParamSpec("max_detections", int, "most detections per frame", low=1, high=1000),
    ParamSpec("use_compressed", bool, "subscribe to sensor_msgs/CompressedImage on "
              "<image topic>/compressed"),
    ParamSpec("qos_reliability", str, "image subscription reliability; auto follows the "
              "camera publishers (reliable when all of them are, else best effort), as "
              "rosbag2 does", choices=("auto", "best_effort", "reliable")),
    ParamSpec("qos_depth", int, "image subscription queue depth", low=1, high=100),
    ParamSpec("slop", float, "largest RGB-IR stamp difference of a pair, s", low=0.0, high=1.0),
    ParamSpec("ir_max_wait", float, "longest an RGB frame waits (receipt time) for an IR "
              "frame within slop, s", low=0.0, high=1.0),
    ParamSpec("ir_timeout", float, "seconds without IR before RGB-only inference", low=0.01,
              high=60.0),
    ParamSpec("fuse_despite_clock_offset", bool, "while the IR clock is off (IR stamps "
              "disagree with RGB by more than 3 frame periods, judged on receipt times), "
              "still fuse an RGB frame with the IR frame stamped within slop, although it "
              "was captured about that offset apart; false: RGB-only (ir_clock_offset)"),
    ParamSpec("stale_after", float, "a pair older than this (s) when the worker is free is "
              "dropped", low=0.01, high=60.0),
    ParamSpec("max_image_pixels", int, "larger input images (width x height, raw or "
              "compressed, checked before conversion or decoding) are refused", low=1,
              high=1 << 30),
    ParamSpec("max_stamp_offset", float, "frames stamped farther than this (s) from the "
              "node's clock are refused (0: no check; replaying a bag needs use_sim_time or 0)",
              low=0.0, high=1e9),
    ParamSpec("fallback_frame_id", str, "frame_id given to outputs of RGB frames whose "
              "frame_id is empty"),
    ParamSpec("registration", str, "IR->RGB registration: scale (co-located cameras, same "
              "field of view), homography (parameter) or camera_info (both CameraInfo + "
              "extrinsics + working distance)", choices=("scale", "homography", "camera_info")),
    ParamSpec("homography", list, "IR->RGB pixel homography, 9 values row-major"),
    ParamSpec("ir_to_rgb_translation", list, "IR camera origin in the RGB optical frame, m"),
    ParamSpec("ir_to_rgb_rotation_rpy", list, "IR optical frame orientation in the RGB "
              "optical frame, roll-pitch-yaw rad"),
    ParamSpec("working_distance", float, "scene plane distance for camera_info registration, "
              "m", low=0.1, high=10000.0),
    ParamSpec("overlay_alpha", float, "debug overlay: mask opacity", low=0.0, high=1.0,
              runtime=True),
    ParamSpec("overlay_mask", bool, "debug overlay: draw the segmentation mask", runtime=True),
    ParamSpec("overlay_labels", bool, "debug overlay: draw class names and scores",
              runtime=True),
    ParamSpec("overlay_background", str, "debug overlay background: the RGB frame, or the "
              "fused RGB-IR image (needs a fusion_checkpoint)", choices=("rgb", "fused"),
              runtime=True),
    ParamSpec("fusion_checkpoint", str, "M2PN fusion weights for ~/fused/image: a path, or "
              "a file name under the package's models/ folder; empty: no fused image"),
    ParamSpec("fusion_width", int, "width the fusion network runs at (height follows the "
              "frame's aspect); the result is resized to the RGB frame", low=32, high=4096),
    ParamSpec("fusion_max_rate", float, "most fused images per second (0: every frame); "
              "fusion shares the CPU with inference", low=0.0, high=1000.0, runtime=True),
    ParamSpec("tracking", bool, "track detections over frames: Detection2D.id carries a "
              "track id stable for the track's life (empty until confirmed), classes by "
              "majority over the track, and detections below score_threshold down to half "
              "of it are published where they extend a track; switching resets the tracks",
              runtime=True),
    ParamSpec("tracking_lost_time", float, "seconds (by stamps) a track that is no longer "
              "detected is kept for re-association; changing it resets the tracks", low=0.05,
              high=60.0, runtime=True),
    ParamSpec("tracking_smoothing", float, "track box smoothing: weight of the previous box "
              "(0: the detected box)", low=0.0, high=0.95, runtime=True),
    ParamSpec("diagnostics_period", float, "diagnostics publishing period, s", low=0.1,
              high=60.0),
    ParamSpec("autostart", bool, "configure and activate the lifecycle node on start"),
)
SPECS = {spec.name: spec for spec in PARAMETERS}
KIND_NAMES = {str: "a string", float: "a number", int: "an integer", bool: "true or false",
              list: "a list of numbers"}


@dataclass
class Settings:
    """Typed parameter values, one field per entry of `PARAMETERS`."""

    model_config: str
    model_overrides: str
    checkpoint: str
    allow_untrained: bool
    base_weights: str
    device: str
    backend: str
    engine_cache_dir: str
    precision: str
    cuda_graphs: bool
    score_threshold: float
    class_filter: str
    max_detections: int
    use_compressed: bool
    qos_reliability: str
    qos_depth: int
    slop: float
    ir_max_wait: float
    ir_timeout: float
    fuse_despite_clock_offset: bool
    stale_after: float
    max_image_pixels: int
    max_stamp_offset: float
    fallback_frame_id: str
    registration: str
    homography: list
    ir_to_rgb_translation: list
    ir_to_rgb_rotation_rpy: list
    working_distance: float
    overlay_alpha: float
    overlay_mask: bool
    overlay_labels: bool
    overlay_background: str
    fusion_checkpoint: str
    fusion_width: int
    fusion_max_rate: float
    tracking: bool
    tracking_lost_time: float
    tracking_smoothing: float
    diagnostics_period: float
    autostart: bool

    @property
    def class_names(self) -> list[str] | None:
        names = [n.strip() for n in self.class_filter.split(",") if n.strip()]
        return names or None


def package_dir(folder: str) -> Path:
    """The source tree's folder (pip -e, tests), else the installed share folder: beside the
    install prefix this module is in (colcon, `pip install .`, a wheel into any prefix), else
    where the ament index says."""
    here = Path(__file__).resolve()
    source = here.parents[2] / folder
    if source.is_dir():
        return source
    # <prefix>/lib/pythonX.Y/site-packages/ivtuning_ros/ros/params.py
    installed = here.parents[5] / "share" / PACKAGE / folder
    if installed.is_dir():
        return installed
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE)) / folder


def demo_weights() -> tuple[Path, Path]:
    """(detector, image-fusion) weights the package ships: models/ivt_demo.pth and
    models/m2pn_demo.pth, the defaults of the demo and the offline commands."""
    models = package_dir("models")
    return models / "ivt_demo.pth", models / "m2pn_demo.pth"


def default_values() -> dict:
    """Defaults from config/perception.yaml (its ``/**: ros__parameters`` section)."""
    data = yaml.safe_load((package_dir("config") / "perception.yaml").read_text())
    values = data["/**"]["ros__parameters"]
    missing = sorted(set(SPECS) - set(values))
    if missing:
        raise ValueError(f"config/perception.yaml lacks parameters {missing}")
    return values


def check_value(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None if it is."""
    spec = SPECS[name]
    if not _has_kind(value, spec.kind):
        return f"{name} must be {KIND_NAMES[spec.kind]}, got {value!r}"
    if name == "device" and not DEVICE.fullmatch(value):
        return f"device must be auto, cpu, cuda or cuda:N, got '{value}'"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got '{value}'"
    if spec.low is not None and not spec.low <= value <= spec.high:
        return f"{name} must lie in [{spec.low}, {spec.high}], got {value}"
    if name == "homography" and len(value) != 9:
        return "homography needs 9 values (3x3 row-major)"
    if name in ("ir_to_rgb_translation", "ir_to_rgb_rotation_rpy") and len(value) != 3:
        return f"{name} needs 3 values"
    return None


def _has_kind(value, kind: type) -> bool:
    """Integers pass for numbers (``ir_timeout: 1`` means 1.0), as in any YAML reader."""
    if kind is list:
        return isinstance(value, (list, tuple, Array)) and all(
            _has_kind(v, float) for v in value)
    if isinstance(value, bool) != (kind is bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def settings_from(values: dict) -> Settings:
    """Build `Settings` (integers given for float parameters become floats); ValueError
    names every bad value."""
    problems = [p for p in (check_value(n, values[n]) for n in SPECS) if p]
    if problems:
        raise ValueError("; ".join(problems))
    return Settings(**{f.name: coerced(f.name, values[f.name]) for f in fields(Settings)})


def coerced(name: str, value):
    """``value`` as parameter ``name``'s type where it is a number for a float or a list of
    numbers for a list (``ir_timeout: 1`` is 1.0); anything else unchanged, for
    `check_value` to name."""
    kind = SPECS[name].kind
    if kind is float and _has_kind(value, float):
        return float(value)
    if kind is list and _has_kind(value, list):
        return [float(v) for v in value]
    return value
