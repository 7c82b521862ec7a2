"""ROS 2 layer: the perception node and its message helpers (uses runtime/, not model/)."""
