"""ivtuning_ros: IV-tuning RGB-infrared perception for ROS 2."""

__version__ = "0.1.0"
