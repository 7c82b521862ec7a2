"""Static frame buffers: pinned host staging and one host-to-device copy per frame.

RGB and IR share one byte buffer (IR at an aligned offset), so a frame crosses
to the GPU in a single copy; the device-side views are what a CUDA graph reads.
On the CPU the host buffer is the device buffer and the copy is the staging.
"""
from __future__ import annotations

import numpy as np
import torch

_ALIGN = 64


class FrameBuffers:
    """Buffers for one frame layout: RGB (H, W, 3) uint8 and optional IR (h, w) of one dtype."""

    def __init__(self, rgb_shape: tuple[int, ...], ir_shape: tuple[int, ...] | None,
                 ir_dtype: np.dtype | None, device: torch.device) -> None:
        self.device = device
        rgb_bytes = int(np.prod(rgb_shape))
        ir_offset = -(-rgb_bytes // _ALIGN) * _ALIGN
        ir_bytes = int(np.prod(ir_shape)) * np.dtype(ir_dtype).itemsize if ir_shape else 0
        pinned = device.type == "cuda"
        self.host = torch.empty(ir_offset + ir_bytes, dtype=torch.uint8, pin_memory=pinned)
        self.staged = self.host if device.type == "cpu" else torch.empty_like(self.host,
                                                                               device=device)
        host_bytes = self.host.numpy()
        self._host_rgb = host_bytes[:rgb_bytes].reshape(rgb_shape)
        self.rgb = self.staged[:rgb_bytes].view(rgb_shape)
        self._host_ir = None
        self.ir = None
        if ir_shape:
            ir_slice = slice(ir_offset, ir_offset + ir_bytes)
            self._host_ir = host_bytes[ir_slice].view(ir_dtype).reshape(ir_shape)
            torch_dtype = torch.from_numpy(np.zeros(0, dtype=ir_dtype)).dtype
            self.ir = self.staged[ir_slice].view(torch_dtype).view(ir_shape)

    def upload(self, rgb: np.ndarray, ir: np.ndarray | None) -> None:
        """Copy a frame into the host buffer, then to the device in one transfer."""
        np.copyto(self._host_rgb, rgb)
        if self._host_ir is not None:
            np.copyto(self._host_ir, ir)
        if self.staged is not self.host:
            self.staged.copy_(self.host, non_blocking=True)
