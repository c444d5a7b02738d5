"""Ground truth for tests: decode files with plain PyAV, and run the libraries' own reference
implementations, independently of farm's code paths."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np

FARM = [sys.executable, "-m", "farm"]


def decode_all(path: str, fmt: str = "bgr24") -> tuple[list[Fraction], list[np.ndarray]]:
    """Every frame of the first video stream, in order, with its presentation time in seconds."""
    with av.open(path) as c:
        stream = c.streams.video[0]
        frames = [(f.pts * stream.time_base, f.to_ndarray(format=fmt)) for f in c.decode(stream)]
    return [t for t, _ in frames], [a for _, a in frames]


def packet_pts(path: str) -> tuple[Fraction, list[int]]:
    """(time base, sorted pts of the video stream's non-discard packets) read by demuxing."""
    with av.open(path) as c:
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.pts is not None and not p.is_discard)
        return Fraction(s.time_base), pts


def stream_packets(path: str, kind: str) -> list[list[bytes]]:
    """Payloads of every packet of every stream of ``kind`` ("audio", "subtitle")."""
    with av.open(path) as c:
        streams = [s for s in c.streams if s.type == kind]
        out: dict[int, list[bytes]] = {s.index: [] for s in streams}
        if streams:
            for p in c.demux(streams):
                if p.size:
                    out[p.stream_index].append(bytes(p))
        return [out[s.index] for s in streams]


def reference_upsampler(weights: str, scale: int, num_feat: int = 8, num_block: int = 1, num_grow_ch: int = 4, tile: int = 0):
    """realesrgan's own RealESRGANer (fp32, CPU, library default pre-padding)."""
    from farm.enhance import install_torchvision_shim

    install_torchvision_shim()
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from realesrgan import RealESRGANer

    net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch, scale=scale)
    return RealESRGANer(scale=scale, model_path=weights, model=net, tile=tile, half=False, device="cpu")


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def run_farm(args: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the farm CLI in a new process group (so tests can kill all of it)."""
    return subprocess.run(FARM + args, capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy())


def start_farm(args: list[str], log_path: str) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen(FARM + args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
