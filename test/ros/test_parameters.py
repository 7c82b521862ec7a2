"""Parameter types over the parameter services: a float parameter stays a float whatever
number it is given (from a client, an override or a parameters file), a list stays a list of
floats, and a refused value changes nothing, its type included."""
import pytest

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402

from ivtuning_ros.ros.node import PerceptionNode  # noqa: E402
from ivtuning_ros.ros.spinning import spinning  # noqa: E402

from .harness import NAME, TEST_PARAMETERS, Harness  # noqa: E402


def perception_node(context, **parameters) -> PerceptionNode:
    return PerceptionNode(context=context, parameter_overrides=[
        Parameter(k, value=v) for k, v in {**TEST_PARAMETERS, **parameters}.items()])


class Remote:
    """The node's parameter services, called from a client node over DDS."""

    def __init__(self, client_node) -> None:
        self.client = AsyncParameterClient(client_node, NAME)
        assert self.client.wait_for_services(timeout_sec=5.0)

    def _call(self, future):
        Harness.wait_for(future.done, "parameter service")
        return future.result()

    def set(self, name: str, value):
        return self._call(self.client.set_parameters([Parameter(name, value=value)])).results[0]

    def get(self, name: str):
        return self._call(self.client.get_parameters([name])).values[0]

    def describe(self, name: str):
        return self._call(self.client.describe_parameters([name])).descriptors[0]


@pytest.fixture
def remote(ros_context):
    node = perception_node(ros_context)
    client = rclpy.create_node("test_parameter_client", context=ros_context)
    try:
        with spinning(ros_context, [node, client], 10.0):
            yield node, Remote(client)
    finally:
        node.destroy_node()
        client.destroy_node()


def test_an_integer_for_a_float_parameter_stays_a_float(remote):
    node, client = remote
    assert client.set("overlay_alpha", 1).successful  # ros2 param set ... overlay_alpha 1
    value = client.get("overlay_alpha")
    assert (value.type, value.double_value) == (ParameterType.PARAMETER_DOUBLE, 1.0)
    assert client.describe("overlay_alpha").type == ParameterType.PARAMETER_DOUBLE
    assert node.get_parameter("overlay_alpha").type_ == Parameter.Type.DOUBLE
    assert node.settings.overlay_alpha == 1.0


def test_a_refused_value_changes_nothing(remote):
    node, client = remote
    assert client.set("overlay_alpha", 0.25).successful
    assert not client.set("overlay_alpha", "abc").successful
    assert client.describe("overlay_alpha").type == ParameterType.PARAMETER_DOUBLE
    value = client.get("overlay_alpha")
    assert (value.type, value.double_value) == (ParameterType.PARAMETER_DOUBLE, 0.25)
    assert node.settings.overlay_alpha == 0.25


def test_integer_overrides_and_parameters_files_give_floats(ros_context, tmp_path):
    node = perception_node(ros_context, ir_timeout=1, homography=[1, 0, 0, 0, 1, 0, 0, 0, 1])
    try:
        assert node.get_parameter("ir_timeout").type_ == Parameter.Type.DOUBLE
        assert node.get_parameter("ir_timeout").value == 1.0
        assert node.get_parameter("homography").type_ == Parameter.Type.DOUBLE_ARRAY
        assert node.describe_parameter("ir_timeout").type == ParameterType.PARAMETER_DOUBLE
    finally:
        node.destroy_node()
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    ir_timeout: 1\n    slop: 0\n")
    node = PerceptionNode(context=ros_context, cli_args=["--ros-args", "--params-file",
                                                         str(params)])
    try:
        assert node.get_parameter("ir_timeout").type_ == Parameter.Type.DOUBLE
        assert (node.get_parameter("slop").value, node.settings.slop) == (0.0, 0.0)
        assert node.get_parameter("slop").type_ == Parameter.Type.DOUBLE
    finally:
        node.destroy_node()


def test_a_checkpoint_that_is_not_one_fails_configure_in_one_line(ros_context, tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint\n")
    node = perception_node(ros_context, checkpoint=str(path))
    try:
        node.trigger_configure()
        assert node._state.startswith(f"configure failed: {path} is not an ivtuning_ros "
                                      "checkpoint ("), node._state
        assert "\n" not in node._state and "`ivtuning convert`" in node._state
    finally:
        node.destroy_node()
