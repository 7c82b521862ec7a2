"""Fast DDS history memory that is given back after a large frame.

rmw_fastrtps keeps each sample buffer of a reader's and a writer's history at the largest
size it ever held (PREALLOCATED_WITH_REALLOC): after one 8192x8192 RGB frame a plain rclpy
subscriber kept +191 MB for good, and so did the publisher. ``config/fastdds_large_frames.xml``
makes that history DYNAMIC (allocated per sample, freed after it). Fast DDS reads its profile
once per process, when the first participant is created, so this must run before
``rclpy.init``; other RMWs, and a Fast DDS profile the user set, are left alone.
"""
from __future__ import annotations

import os
from collections.abc import MutableMapping

from .params import package_dir
from .transport import uses_fast_dds

PROFILE = "fastdds_large_frames.xml"
_USER_SETTINGS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                  "RMW_FASTRTPS_USE_QOS_FROM_XML")


def use_dynamic_history_memory(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Point Fast DDS at `PROFILE` unless another RMW or a user's profile is configured;
    returns whether it did."""
    if not uses_fast_dds(environ):
        return False
    if any(environ.get(name) for name in _USER_SETTINGS):
        return False
    environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(package_dir("config") / PROFILE)
    environ["RMW_FASTRTPS_USE_QOS_FROM_XML"] = "1"
    return True
