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
    install_requires=[
        "matplotlib", "mcap", "mcap-ros2-support", "numpy", "opencv-python-headless", "pillow",
        "pycocotools", "pyyaml", "scipy", "tensorboard", "timm", "torch", "torchvision", "tqdm",
    ],
    # Inference back-ends beside eager torch; the CPU ones are tested, so `test` has them.
    extras_require={
        "openvino": ["onnx", "openvino"],
        "onnxruntime": ["onnx", "onnxruntime"],
        "onnxruntime-gpu": ["onnx", "onnxruntime-gpu"],
        "tensorrt": ["onnx", "tensorrt"],
        # scikit-image and sewar: reference SSIM and VIF the fusion metrics are checked against;
        # open_clip_torch: the CLIP quality scorer, run on a random-weight checkpoint.
        "test": ["pytest", "ruff", "onnx", "onnxruntime", "openvino", "scikit-image", "sewar",
                 "open_clip_torch"],
    },
    zip_safe=True,
    maintainer="ivtuning_ros developers",
    maintainer_email="ivtuning-ros@users.noreply.github.com",
    description="IV-tuning RGB-infrared detection and segmentation node for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "ivtuning = ivtuning_ros.cli:main",
            "perception_node = ivtuning_ros.ros.entry:main",
        ],
    },
)
