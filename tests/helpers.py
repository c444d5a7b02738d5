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


def rewrite_video_packets(source: str, path: str, change) -> str:
    """Copy ``source`` to ``path`` packet for packet, replacing the payload of the n-th video
    packet (in file order) by ``change(n, payload)``; timestamps and flags are kept."""
    with av.open(source) as src, av.open(path, "w") as out:
        copies = {s.index: out.add_stream_from_template(s) for s in src.streams}
        n = 0
        for packet in src.demux():
            if not packet.size:
                continue
            if packet.stream.type == "video":
                replaced = av.Packet(change(n, bytes(packet)))
                replaced.pts, replaced.dts, replaced.time_base = packet.pts, packet.dts, packet.time_base
                replaced.is_keyframe = packet.is_keyframe
                n += 1
                replaced.stream = copies[packet.stream_index]
                out.mux(replaced)
            else:
                packet.stream = copies[packet.stream_index]
                out.mux(packet)
    return path


def video_packets(path: str) -> list[tuple[int, bool]]:
    """(pts, keyframe) of every video packet, in file (decode) order."""
    with av.open(path) as c:
        return [(p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]


def make_audio_only(path: str, seconds: float = 1.0) -> str:
    """An AAC tone and nothing else (a podcast or a voice memo)."""
    with av.open(path, "w") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "mono"
        samples = (0.2 * np.sin(np.arange(int(48000 * seconds)) * 0.05)).astype(np.float32)
        for i in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, i : i + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, i, Fraction(1, 48000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_video_without_frames(path: str) -> str:
    """A Matroska file with a video track that holds no frame, and an audio track that plays."""
    with av.open(path, "w") as out:
        video = out.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        out.start_encoding()
        for i in range(0, 48000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, i, Fraction(1, 48000)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


def submit_tiny(source: str, output: str, weights: str, *extra: str) -> None:
    """`farm submit` in process with the tests' tiny RRDBNet weights on one CPU worker, no faces."""
    from click.testing import CliRunner

    from farm.cli import main

    args = ["submit", source, "-o", output, "--sr-weights", weights, "--no-face", "--workers", "1",
            "--device", "cpu", "--quiet", *extra]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
