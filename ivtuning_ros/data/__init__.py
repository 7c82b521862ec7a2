"""Datasets as sequences of `Sample`: synthetic RGB-IR scenes and readers of M3FD, LLVIP,
MFNet and plain folders of image pairs.

No torch imports here: numpy and OpenCV only.
"""
from .datasets import LLVIPDataset, M3FDDataset, MFNetDataset, open_dataset
from .pair_folder import PairFolderDataset
from .sample import M3FD_CLASSES, MFNET_CLASSES, Sample
from .synthetic import CONDITIONS, SyntheticDataset, make_scene

__all__ = [
    "CONDITIONS",
    "LLVIPDataset",
    "M3FDDataset",
    "M3FD_CLASSES",
    "MFNET_CLASSES",
    "MFNetDataset",
    "PairFolderDataset",
    "Sample",
    "SyntheticDataset",
    "make_scene",
    "open_dataset",
]
