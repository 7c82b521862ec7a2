#!/usr/bin/env python3
"""`make gpu-check` without make: ``python3 tools/gpu_check.py [--cpu-dry-run] [--out DIR]``.

Runs with whatever interpreter starts it (the GPU machine's own PyTorch; no venv, no ROS,
no network): puts this source tree first on the path and hands over to
`ivtuning_ros.gpu_check.check` (README "GPU check").
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivtuning_ros.gpu_check.check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
