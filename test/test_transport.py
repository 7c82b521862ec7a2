"""The DDS transport the node's process chooses (`ivtuning_ros.ros.transport`)."""
from ivtuning_ros.ros.transport import SOCKET_BUFFER_BYTES, TRANSPORT_VARIABLE, choose_transport


def test_udp_with_large_buffers_where_the_kernel_allows_them():
    choice = choose_transport({}, rmem_max=SOCKET_BUFFER_BYTES)
    assert choice.environment == {TRANSPORT_VARIABLE: f"UDPv4?sockets_size={SOCKET_BUFFER_BYTES}"}
    assert not choice.warn
    assert choose_transport({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"},
                            rmem_max=2**30).environment == choice.environment


def test_small_kernel_buffers_take_udp_at_the_limit_and_say_how_to_raise_it():
    choice = choose_transport({}, rmem_max=212992)
    assert choice.environment == {TRANSPORT_VARIABLE: "UDPv4?sockets_size=212992"}
    assert choice.warn and f"net.core.rmem_max={SOCKET_BUFFER_BYTES}" in choice.message


def test_a_users_transport_another_middleware_or_an_unknown_kernel_are_left_alone():
    mine = choose_transport({TRANSPORT_VARIABLE: "SHM"}, rmem_max=2**30)
    assert mine.environment == {} and not mine.warn and "SHM" in mine.message
    assert choose_transport({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, 2**30).environment == {}
    assert choose_transport({}, rmem_max=None).environment == {}


def test_localhost_discovery_is_named_because_the_middleware_then_chooses():
    choice = choose_transport({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}, rmem_max=2**30)
    assert choice.environment == {} and choice.warn and "unset it" in choice.message
    assert choose_transport({"ROS_LOCALHOST_ONLY": "1"}, rmem_max=2**30).warn
