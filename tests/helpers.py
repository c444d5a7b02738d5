"""Ground truth for tests: decode files with plain PyAV, and run the libraries' own reference
implementations, independently of farm's code paths."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from farm.testing.media import decode_all, packet_pts, stream_packets  # noqa: F401
from farm.testing.process import FARM, kill_group, run_farm, start_farm  # noqa: F401


def reference_upsampler(weights: str, scale: int, num_feat: int = 8, num_block: int = 1, num_grow_ch: int = 4, tile: int = 0):
    """realesrgan's own RealESRGANer (fp32, CPU, library default pre-padding)."""
    from farm.enhance.patches import install_torchvision_shim

    install_torchvision_shim()
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from realesrgan import RealESRGANer

    net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch, scale=scale)
    return RealESRGANer(scale=scale, model_path=weights, model=net, tile=tile, half=False, device="cpu")


def bwdif_pass(path: str, mode: str, parity: str) -> list[np.ndarray]:
    """``ffmpeg -vf bwdif=mode=M:parity=P:deint=all`` in plain PyAV (a graph of its own, no farm
    code): one pass over every decoded frame of the video, back in its pixel format, as BGR."""
    with av.open(path) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        graph = av.filter.Graph()
        first = frames[0]
        src = graph.add_buffer(width=first.width, height=first.height, format=first.format.name, time_base=stream.time_base)
        filt = graph.add("bwdif", f"mode={mode}:parity={parity}:deint=all")
        keep = graph.add("format", first.format.name)
        sink = graph.add("buffersink")
        src.link_to(filt)
        filt.link_to(keep)
        keep.link_to(sink)
        graph.configure()
        out = []
        for frame in [*frames, None]:
            graph.push(frame)
            while True:
                try:
                    out.append(graph.pull().to_ndarray(format="bgr24"))
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
    return out


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


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

    from farm.cli.main import main

    args = ["submit", source, "-o", output, "--sr-weights", weights, "--no-face", "--workers", "1",
            "--device", "cpu", "--quiet", *extra]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def quick_first(names, quick) -> list:
    """``names`` as test parameters, all but those in ``quick`` marked ``slow``: the quick tier
    (``-m "not slow"``) keeps a case or two of a corpus test, the full run has them all."""
    import pytest

    unknown = set(quick) - set(names)
    assert not unknown, f"quick cases {sorted(unknown)} are not among {list(names)}"
    return [pytest.param(name, marks=() if name in quick else pytest.mark.slow) for name in names]
