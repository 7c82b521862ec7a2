"""Environment facts for the GPU check's report: interpreter, PyTorch, CUDA, GPUs, driver,
the packages the parts use, and the source tree's commit where git can tell."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch

# Import name -> the pip distributions that provide it (the first installed one is reported).
PACKAGES = {
    "torchvision": ("torchvision",),
    "timm": ("timm",),
    "numpy": ("numpy",),
    "cv2": ("opencv-python-headless", "opencv-python", "opencv-contrib-python"),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
    "openvino": ("openvino",),
    "pytest": ("pytest",),
    "rclpy": (),  # ROS 2 comes from a distribution, not pip
}


def package_version(name: str, distributions: tuple[str, ...]) -> str | None:
    """The installed version, "present" if importable without pip metadata, else None."""
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        return "present" if importlib.util.find_spec(name) is not None else None
    except (ImportError, ValueError):
        return None


def driver_version() -> str | None:
    """The NVIDIA driver version from nvidia-smi, or None where it cannot be asked."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return None
    try:
        answer = subprocess.run([command, "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return answer.stdout.strip().splitlines()[0] if answer.stdout.strip() else None


def source_commit(repo: Path) -> dict | None:
    """{commit, dirty} of the source tree, or None without git or a .git folder."""
    git = shutil.which("git")
    if git is None or not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run([git, "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=20, check=True).stdout.strip()
        status = subprocess.run([git, "-C", str(repo), "status", "--porcelain"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(status.strip())}


def gpus() -> list[dict]:
    """Name, compute capability, memory and multiprocessors of every visible GPU."""
    found = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        found.append({"name": properties.name,
                      "capability": f"{properties.major}.{properties.minor}",
                      "memory_gib": round(properties.total_memory / 2**30, 1),
                      "multiprocessors": properties.multi_processor_count})
    return found


def environment(repo: Path) -> dict:
    """Every fact of the report's ``environment`` key (README "GPU check")."""
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "gpus": gpus() if cuda else [],
        "driver": driver_version() if cuda else None,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                 "cudnn": torch.backends.cudnn.allow_tf32},
        "packages": {name: package_version(name, dists) for name, dists in PACKAGES.items()},
        "source": source_commit(repo),
    }
