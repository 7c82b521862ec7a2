"""Accuracy of the perception model (detection and segmentation) on a dataset; image fusion
is measured in `image_fusion`."""
