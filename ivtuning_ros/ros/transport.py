"""The DDS transport of the node's process: camera frames over UDP with large socket buffers.

Fast DDS (ROS 2's default middleware) passes messages between processes on one host through
shared memory, in a segment of the *sender's*, 512 KiB unless the sender configures more.
A larger frame (640x480 rgb8 is 900 KiB) goes as 64 KiB fragments that overflow the
segment, and the sender then reclaims the oldest buffers the receiving process has not
picked up yet: while the node's reception thread waits for a CPU (the model runs), a frame
published just before a large one is lost, with RGB 640x480 the IR frame when IR goes
first (with 1280x1024 IR, frames of both cameras in either order). Reliable QoS repairs it
only when that camera's next frame reveals the gap, one frame period later, after its RGB
partner went RGB-only (``ir_max_wait``); repairs that fall behind the camera's history
depth are never made. This happens below the node's callbacks (the frames reach the
reader late, in bursts): no executor, callback group or queue depth changes it, and the
cameras' middleware settings are not the node's to change.

Over UDP the kernel queues each datagram as it is sent, so delivery does not depend on
when the node's threads run, provided the socket buffer holds a few frames: the node's
process uses Fast DDS's UDPv4 transport with `SOCKET_BUFFER_BYTES` socket buffers, or the
largest the kernel allows (``net.core.rmem_max``) where that is less, and leaves the
transport alone where the user chose one or under another middleware. Small buffers are
still better than shared memory (measured on a stock kernel, 212992 bytes, 2 cores, the
model running: IR-first cameras with 640x512 IR fused 99.7% of outputs over UDP against
10-90% over shared memory; with 1280x1024 IR 98% against 80%, though about a tenth of the
outputs were lost to dropped datagrams), so the node takes UDP either way and warns how to
raise the limit.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TRANSPORT_VARIABLE = "FASTDDS_BUILTIN_TRANSPORTS"  # read by Fast DDS per participant
FAST_DDS = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")  # "": Kilted's default
# A few frames of the largest cameras the node takes (1280x1024 mono16 is 2.6 MB); the
# kernel doubles it for its bookkeeping.
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
RMEM_MAX = Path("/proc/sys/net/core/rmem_max")


@dataclass
class TransportChoice:
    """What to set before the process's first node (``environment``), and what to log."""

    environment: dict[str, str] = field(default_factory=dict)
    message: str = ""
    warn: bool = False


def uses_fast_dds(environ: Mapping[str, str]) -> bool:
    """Whether the process's ROS 2 middleware is Fast DDS (the default when none is set)."""
    return environ.get("RMW_IMPLEMENTATION", "") in FAST_DDS


def localhost_only(environ: Mapping[str, str]) -> bool:
    """Whether discovery is limited to this host, where rmw_fastrtps builds its own
    transports and ignores `TRANSPORT_VARIABLE` (measured: cameras fared as under shared
    memory, with 4 MiB socket buffers allowed)."""
    return (environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST"
            or environ.get("ROS_LOCALHOST_ONLY") == "1")


def choose_transport(environ: Mapping[str, str], rmem_max: int | None) -> TransportChoice:
    """The transport for camera frames given the process's environment and the kernel's
    largest socket receive buffer (None: unknown, not Linux)."""
    if not uses_fast_dds(environ) or rmem_max is None:
        return TransportChoice()
    if TRANSPORT_VARIABLE in environ:
        return TransportChoice(message=f"DDS transport as set: {TRANSPORT_VARIABLE}="
                                       f"{environ[TRANSPORT_VARIABLE]}")
    if localhost_only(environ):
        return TransportChoice(warn=True, message=(
            "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (or ROS_LOCALHOST_ONLY=1): the "
            "middleware then sets up its own transports, shared memory between processes, "
            "where a camera frame over 512 KiB can cost the other camera's frame published "
            "just before it (measured: 30-60% of outputs fused with IR first); unset it to "
            "let the node take UDP"))
    mib = SOCKET_BUFFER_BYTES // 2**20
    size = min(SOCKET_BUFFER_BYTES, rmem_max)
    environment = {TRANSPORT_VARIABLE: f"UDPv4?sockets_size={size}"}
    if size < SOCKET_BUFFER_BYTES:
        return TransportChoice(environment=environment, warn=True, message=(
            f"DDS transport: UDPv4 with {size}-byte socket buffers, the most "
            f"net.core.rmem_max allows; camera frames over about 1 MB (1280x1024 mono16, "
            f"1080p RGB) can be lost or come late while the node is busy: raise it to "
            f"{mib} MiB (sysctl -w net.core.rmem_max={SOCKET_BUFFER_BYTES}) or set "
            f"{TRANSPORT_VARIABLE}"))
    return TransportChoice(
        environment=environment,
        message=f"DDS transport: UDPv4 with {mib} MiB socket buffers (camera frames queue "
                "in the kernel whatever the node is doing; set "
                f"{TRANSPORT_VARIABLE} to choose another)")


def kernel_rmem_max() -> int | None:
    """``net.core.rmem_max``, None where it cannot be read."""
    try:
        return int(RMEM_MAX.read_text())
    except (OSError, ValueError):
        return None
