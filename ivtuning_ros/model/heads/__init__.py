"""Task heads on the backbone's four maps: DINO detection, SegFormer segmentation and the
CPNet-style salient object detection decoder."""
