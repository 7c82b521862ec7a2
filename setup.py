"""ament_python package setup; also the pip (editable) install used by the Makefile."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ivtuning_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/models", [f for f in glob("models/*")
                                     if f.endswith((".yaml", ".md", ".pth"))]),
    ],
    python_requires=">=3.10",
    # The same set as package.xml's exec_depends (rosdep keys there, or pip where rosdistro has
    # no key); test/test_dependencies.py checks both against what the package imports.
    install_requires=[
        "huggingface_hub", "matplotlib", "mcap", "numpy", "opencv-python-headless", "pillow",
        "pycocotools", "pyyaml", "safetensors", "scipy", "tensorboard", "timm", "torch",
        "torchvision", "tqdm",
        # Tracking: roboflow's trackers (ByteTrack with stamps, its evaluator) and
        # supervision, whose Detections its API takes.
        "supervision", "trackers>=2.6",
    ],
    # Optional: inference back-ends beside eager torch, and the CLIP fusion scorer. Each is
    # imported only when asked for; a missing one is a one-line error naming its extra.
    extras_require={
        "openvino": ["onnx", "openvino"],
        "onnxruntime": ["onnx", "onnxruntime"],
        "onnxruntime-gpu": ["onnx", "onnxruntime-gpu"],
        "tensorrt": ["onnx", "tensorrt"],
        "clip": ["open_clip_torch"],
        # The salient object metrics of `ivtuning eval --sod`. Its releases pin numpy, OpenCV
        # and scikit-image below this project's: the Makefile installs it with --no-deps.
        "sod": ["pysodmetrics"],
        # The CPU back-ends and the CLIP scorer are tested, so `test` has them; scikit-image
        # and sewar: reference SSIM and VIF the fusion metrics are checked against;
        # mcap-ros2-support: reads back the bags `ivtuning replay` writes; colcon: the
        # packaging test builds the package as a ROS workspace does; ruff: `make lint`;
        # motmetrics: reference MOTA and IDF1 the tracking evaluation is checked against.
        "test": ["pytest", "ruff", "colcon-common-extensions", "onnx", "onnxruntime", "openvino",
                 "open_clip_torch", "scikit-image", "sewar", "mcap-ros2-support", "motmetrics"],
    },
    zip_safe=True,
    maintainer="ivtuning_ros developers",
    maintainer_email="ivtuning-ros@users.noreply.github.com",
    description="IV-tuning RGB-infrared detection and segmentation node for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "ivtuning = ivtuning_ros.commands.cli:main",
            "perception_node = ivtuning_ros.ros.entry:main",
        ],
    },
)
