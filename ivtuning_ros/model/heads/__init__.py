"""Task heads on the backbone's four maps: DINO detection and SegFormer segmentation."""
