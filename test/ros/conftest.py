"""ROS 2 test setup: a DDS domain of this test run's own, and one rclpy context per test."""
import os

import pytest

# Chosen before any rclpy.init: concurrent test runs on one machine (or one CI host) would
# otherwise see each other's topics on the default domain 0.
os.environ["ROS_DOMAIN_ID"] = str(os.getpid() % 200 + 20)


@pytest.fixture
def ros_context():
    """An initialised rclpy context, shut down after the test."""
    rclpy = pytest.importorskip("rclpy")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()
