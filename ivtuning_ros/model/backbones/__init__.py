"""Frozen foundation models: torchvision's Swin and timm's plain ViTs, with their
checkpoint layouts. Nothing here trains."""
