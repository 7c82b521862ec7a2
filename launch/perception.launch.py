"""Start the ivtuning_ros perception node.

    ros2 launch ivtuning_ros perception.launch.py \
        rgb_image:=/camera/color/image_raw ir_image:=/thermal/image_raw \
        checkpoint:=/path/to/adapter.pth device:=cuda

Parameters come from ``params_file`` (default: the package's config/perception.yaml);
the model_config, checkpoint, device and backend arguments override it only when given.

When the node exits, the launch shuts down with it instead of idling. A configuration error
makes the node print one line naming the problem and exit non-zero; `ros2 launch` then
exits 1 too, so a supervisor (systemd, a bring-up script, CI) sees the failure: launch
has no exit-code action, but it returns 1 when an action raises, so the exit handler
raises. A bring-up that includes this file inherits that behaviour. Uses only launch APIs
shared by Humble, Jazzy and Kilted.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    "params_file": (PathJoinSubstitution([FindPackageShare("ivtuning_ros"), "config",
                                          "perception.yaml"]), "node parameters file"),
    "model_config": ("", "model config (overrides the parameters file when set)"),
    "checkpoint": ("", "full or adapter checkpoint, or a cached weights name such as "
                   "dino_swin_l_coco (overrides the parameters file when set)"),
    "device": ("", "auto (cuda if available), cpu, cuda or cuda:N (overrides the parameters "
                   "file when set)"),
    "backend": ("", "torch, openvino, onnxruntime or tensorrt (overrides the parameters file "
                    "when set)"),
    "namespace": ("", "namespace of the node and its topics"),
    "node_name": ("ivtuning_perception", "node name"),
    "use_sim_time": ("false", "use /clock (bag replay, simulation)"),
    "rgb_image": ("/camera/rgb/image_raw", "RGB image topic"),
    "ir_image": ("/camera/thermal/image_raw", "thermal image topic"),
    "rgb_camera_info": ("/camera/rgb/camera_info", "RGB CameraInfo topic"),
    "ir_camera_info": ("/camera/thermal/camera_info", "thermal CameraInfo topic"),
    "log_level": ("info", "logging level"),
}


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {key: value[key] for key in ("model_config", "checkpoint", "device", "backend")
                 if value[key]}
    overrides["use_sim_time"] = value["use_sim_time"].lower() in ("true", "1")
    remappings = [
        ("~/rgb/image", value["rgb_image"]),
        ("~/ir/image", value["ir_image"]),
        ("~/rgb/image/compressed", value["rgb_image"] + "/compressed"),
        ("~/ir/image/compressed", value["ir_image"] + "/compressed"),
        ("~/rgb/camera_info", value["rgb_camera_info"]),
        ("~/ir/camera_info", value["ir_camera_info"]),
    ]
    return [Node(
        package="ivtuning_ros",
        executable="perception_node",
        name=value["node_name"],
        namespace=value["namespace"],
        parameters=[value["params_file"], overrides],
        remappings=remappings,
        arguments=["--ros-args", "--log-level", value["log_level"]],
        output="screen",
        emulate_tty=True,
        on_exit=OpaqueFunction(function=_node_exited),
    )]


class NodeFailed(RuntimeError):
    """The node exited non-zero; raised so that `ros2 launch` exits non-zero."""


def _node_exited(context):
    event = context.locals.event
    if isinstance(event, ProcessExited) and event.returncode != 0:
        raise NodeFailed(f"the perception node exited with code {event.returncode}; "
                         "its last line says why")
    return [Shutdown(reason="the perception node exited")]


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, description) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_node)])
