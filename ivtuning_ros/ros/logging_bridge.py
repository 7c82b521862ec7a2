"""Python `logging` from the library (``ivtuning.*``: exports, TensorRT builds, CUDA graph
fall-backs) onto a node's ROS logger, so that start-up progress reaches the console,
/rosout and the launch log with the node's name, like every other line the node prints."""
from __future__ import annotations

import logging

LIBRARY_LOGGER = "ivtuning"


class RosLogHandler(logging.Handler):
    """Forwards records to an rclpy logger at the matching severity."""

    def __init__(self, ros_logger) -> None:
        super().__init__(logging.DEBUG)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        # One call site per severity: rclpy refuses two severities at one site.
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(message)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(message)
        elif record.levelno >= logging.INFO:
            self.ros_logger.info(message)
        else:
            self.ros_logger.debug(message)


def forward_library_logging(ros_logger) -> RosLogHandler:
    """Attach a handler for the library's loggers; remove it with `stop_forwarding`."""
    handler = RosLogHandler(ros_logger)
    library = logging.getLogger(LIBRARY_LOGGER)
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    library.propagate = False  # printed once, by the ROS logger, not also by Python's
    # Importing `launch` (its pytest plugins do) makes every logger created afterwards
    # non-propagating; the library's module loggers must reach this handler.
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith(f"{LIBRARY_LOGGER}.") and isinstance(logger, logging.Logger):
            logger.propagate = True
    return handler


def stop_forwarding(handler: RosLogHandler) -> None:
    library = logging.getLogger(LIBRARY_LOGGER)
    library.removeHandler(handler)
    if not library.handlers:
        library.propagate = True
