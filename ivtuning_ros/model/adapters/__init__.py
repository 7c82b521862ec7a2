"""Adapter methods: what trains on top of a frozen foundation model (IV-tuning)."""
from .base import AdaptedBackbone, BackboneOutput

__all__ = ["AdaptedBackbone", "BackboneOutput"]
