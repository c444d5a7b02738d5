"""Fidelity on real-world video: every clip of farm's corpus (VFR, B-frames, open GOP, MPEG-TS,
edit lists, rotation, odd sizes, 10-bit, several tracks, a single frame, a long GOP) goes through
the whole pipeline with the real model code, and comes out with the source's timing, the model's
exact output for every source frame, and every other stream untouched."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from farm.testing.clips import CORPUS, corpus
from tests.helpers import (decode_all, max_abs_diff, packet_pts, quick_first, reference_upsampler, stream_packets, submit_tiny,
                           video_packets)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The output container for each source container, in the lossless (FFV1) runs: the source's own
#: where it can hold FFV1 with the source's exact time base, else the nearest one that can.
LOSSLESS_OUTPUT = {".mp4": ".mp4", ".mkv": ".mkv", ".ts": ".mp4", ".webm": ".mkv"}
#: The default lossy output (H.264) goes back into the source's container where it fits.
LOSSY_OUTPUT = {".mp4": ".mp4", ".mkv": ".mkv", ".ts": ".ts", ".webm": ".mkv"}
#: Shard sizes that cut every clip mid-GOP and leave a short last shard.
SHARD_FRAMES = {"long_gop": 64, "single_frame": 1}
#: The quick tier's cases: several tracks, subtitles and chapters losslessly (the mux path), and
#: MPEG-TS back into MPEG-TS with the default codec (the lossy path, start times not at zero).
QUICK_LOSSLESS = ("multi_track",)
QUICK_LOSSY = ("mpegts",)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    return corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus-out")


def output_path(outputs, name: str, source: str, table: dict[str, str], tag: str) -> str:
    return str(outputs / f"{name}-{tag}{table[os.path.splitext(source)[1]]}")


def seconds(path: str) -> list[Fraction]:
    tb, pts = packet_pts(path)
    return [p * tb for p in pts]


def chapters(path: str) -> list[tuple]:
    with av.open(path) as c:
        return [(ch["start"] * ch["time_base"], ch["end"] * ch["time_base"], ch["metadata"].get("title")) for ch in c.chapters()]


def rotation(path: str) -> int:
    with av.open(path) as c:
        return int(next(c.decode(video=0)).rotation or 0)


def pix_fmt(path: str) -> str:
    with av.open(path) as c:
        return c.streams.video[0].format.name


def audio_frames(path: str) -> list[list[bytes]]:
    """Audio packets without ADTS framing: MPEG-TS carries AAC in ADTS frames, MP4 and MKV the raw
    AAC frames, and FFmpeg strips the 7-byte header (9 with a CRC) when it moves one into the other."""

    def raw(p: bytes) -> bytes:
        adts = len(p) > 9 and p[0] == 0xFF and p[1] & 0xF6 == 0xF0  # sync word, MPEG layer 0
        return p[(7 if p[1] & 1 else 9) :] if adts else p

    return [[raw(p) for p in track] for track in stream_packets(path, "audio")]


def test_corpus_clips_have_the_properties_they_are_named_for(clips):
    """Each clip really has the trait that breaks video tools, as a demuxer sees it."""
    from farm.video.probe import probe

    info = {name: probe(path) for name, path in clips.items()}
    packets = {name: video_packets(path) for name, path in clips.items()}
    with av.open(clips["edit_list"]) as c:
        discard = [(p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size and p.is_discard]
    assert discard and all(pts < 0 for pts, _ in discard) and any(key for _, key in discard)
    assert info["edit_list"].index.pts[0] == 0 and min(info["edit_list"].index.keyframe_pts) < 0

    gaps = {b - a for a, b in zip(info["vfr"].index.pts, info["vfr"].index.pts[1:])}
    assert len(gaps) >= 3
    decode_order = [pts for pts, _ in packets["bframes"]]
    assert decode_order != sorted(decode_order)
    assert leading_pictures(packets["open_gop_hevc"]) > 0 and info["open_gop_hevc"].codec == "hevc"
    assert info["mpegts"].format_name == "mpegts" and info["mpegts"].index.seconds(0) >= 1
    assert info["rotation"].rotation == 90
    assert (info["odd_size"].width, info["odd_size"].height) == (33, 25)
    assert (info["ten_bit"].pix_fmt, info["ten_bit"].bits_per_sample) == ("yuv420p10le", 10)
    assert [s.type for s in info["multi_track"].other_streams] == ["audio", "audio", "subtitle"]
    assert info["multi_track"].num_chapters == 2
    assert info["no_audio"].other_streams == ()
    assert info["single_frame"].num_frames == 1
    assert (info["long_gop"].num_frames, len(info["long_gop"].index.keyframe_pts)) == (270, 1)


def leading_pictures(packets: list[tuple[int, bool]]) -> int:
    """Packets that follow a keyframe (other than the first) in decode order but are shown
    before it: the RASL pictures of an open GOP."""
    count = 0
    for i, (pts, key) in enumerate(packets):
        if key and i:
            count += sum(1 for later, _ in packets[i + 1 :] if later < pts)
    return count


@pytest.mark.ray
@pytest.mark.parametrize("name", quick_first(CORPUS, QUICK_LOSSLESS))
def test_lossless_output_is_the_model_output_at_the_source_timestamps(name, clips, outputs, tiny_x4, local_ray):
    """Every kind of real-world source, upscaled x4 losslessly in several shards that start
    mid-GOP: the output has exactly the source's frame timestamps, every frame is RealESRGANer's
    output for that source frame, audio, subtitles and chapters are the source's, byte for byte,
    and the display rotation is carried."""
    source = clips[name]
    out = output_path(outputs, name, source, LOSSLESS_OUTPUT, "ffv1")
    submit_tiny(source, out, tiny_x4, "--codec", "ffv1", "--shard-frames", str(SHARD_FRAMES.get(name, 5)))

    if os.path.splitext(out)[1] == os.path.splitext(source)[1]:
        assert packet_pts(out) == packet_pts(source)
    else:
        assert seconds(out) == seconds(source)
    with av.open(source) as c:
        ten_bit = c.streams.video[0].format.name.endswith("10le")
    fmt = "bgr48le" if ten_bit else "bgr24"
    _, src_frames = decode_all(source, fmt)
    _, out_frames = decode_all(out, fmt)
    assert len(out_frames) == len(src_frames)
    upsampler = reference_upsampler(tiny_x4, 4)
    for i, (frame, got) in enumerate(zip(src_frames, out_frames)):
        expected, _ = upsampler.enhance(frame)
        assert expected.dtype == got.dtype
        assert max_abs_diff(got, expected) <= 1, f"frame {i}"
    assert audio_frames(out) == audio_frames(source)
    assert stream_packets(out, "subtitle") == stream_packets(source, "subtitle")
    assert chapters(out) == chapters(source)
    assert rotation(out) == rotation(source)


@pytest.mark.ray
@pytest.mark.parametrize("name", quick_first(CORPUS, QUICK_LOSSY))
def test_default_lossy_output_keeps_every_frame_at_its_time(name, clips, outputs, tiny_x4, local_ray):
    """The default output (H.264, CRF 18) of every kind of source has as many frames as the
    source, each at the source's timestamp."""
    source = clips[name]
    out = output_path(outputs, name, source, LOSSY_OUTPUT, "x264")
    submit_tiny(source, out, tiny_x4, "--shard-frames", str(SHARD_FRAMES.get(name, 5)))
    if os.path.splitext(out)[1] == os.path.splitext(source)[1]:
        assert packet_pts(out) == packet_pts(source)
    else:
        assert seconds(out) == seconds(source)
    assert rotation(out) == rotation(source)
    assert pix_fmt(out) == ("yuv420p10le" if name == "ten_bit" else "yuv420p")


@pytest.mark.ray
def test_eight_bit_source_written_ten_bit(clips, outputs, tiny_x4, local_ray):
    """--codec x265 --pix-fmt yuv420p10le on an 8-bit phone clip: a 10-bit HEVC output with the
    source's timestamps (the job's segments are reused; only the final encode runs)."""
    source = clips["cfr"]
    out = str(outputs / "cfr-x265-10bit.mp4")
    submit_tiny(source, out, tiny_x4, "--shard-frames", "5", "--codec", "x265", "--pix-fmt", "yuv420p10le")
    assert pix_fmt(out) == "yuv420p10le"
    assert packet_pts(out) == packet_pts(source)


@pytest.mark.ray
def test_odd_output_size_is_cropped_to_even_for_4_2_0(clips, outputs, tiny_x4, local_ray):
    """--scale 3 on a 33x25 screen capture makes 99x75 pictures, which 4:2:0 H.264 cannot hold:
    the output is 98x74, the model's picture without its last column and row (nothing scaled or
    invented), at the source's timestamps."""
    source = clips["odd_size"]
    out = str(outputs / "odd-scale3.mkv")
    submit_tiny(source, out, tiny_x4, "--shard-frames", "5", "--scale", "3", "--crf", "0", "--preset", "veryslow")
    assert seconds(out) == seconds(source)
    _, src_frames = decode_all(source)
    _, out_frames = decode_all(out)
    upsampler = reference_upsampler(tiny_x4, 4)
    for i, (frame, got) in enumerate(zip(src_frames, out_frames)):
        expected, _ = upsampler.enhance(frame, outscale=3)
        assert expected.shape == (75, 99, 3)
        assert got.shape == (74, 98, 3)
        # CRF 0 is lossless in YUV: what remains is the 4:2:0 conversion of the cropped picture
        # (give or take a rounding step; a shifted or rescaled picture would be off by tens).
        as_yuv420 = av.VideoFrame.from_ndarray(np.ascontiguousarray(expected[:74, :98]), format="bgr24").reformat(format="yuv420p")
        assert max_abs_diff(got, as_yuv420.to_ndarray(format="bgr24")) <= 2, f"frame {i}"


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_is_read_from_the_display_matrix(tmp_path, degrees):
    """A phone held sideways or upside down: probe reports the display rotation in [0, 360) and
    leaves the coded pixels as they are."""
    from farm.testing.clips import make_test_clip
    from farm.video.probe import probe

    info = probe(make_test_clip(str(tmp_path / "r.mp4"), frames=2, size=(32, 24), rotation=degrees, audio=False))
    assert (info.rotation, info.width, info.height) == (degrees, 32, 24)


def test_x265_output_of_a_two_frame_video_has_sane_timestamps(tmp_path):
    """x265 with B-frames allowed sometimes returns a garbage dts (about -6e13) for a one- or
    two-frame video, which MP4 refuses; farm's x265 chunks of such a video have no B-frames, and
    the output's every packet has its source pts and a dts at or before it, near the source's.
    (Twenty encodes: without the fix, about one in ten failed here.)"""
    from farm.testing.clips import make_test_clip
    from farm.video.encode import ChunkWriter, chunk_settings
    from farm.video.mux import ChunkRef, mux
    from farm.video.probe import probe

    source = probe(make_test_clip(str(tmp_path / "two.mkv"), frames=2, size=(32, 24), audio=False))
    settings = chunk_settings("x265", 18, None, None, (32, 24), False, source.index.pts, source.index.time_base)
    assert "bframes=0" in settings.options["x265-params"]
    for attempt in range(20):
        chunk = str(tmp_path / f"chunk{attempt}.nut")
        with ChunkWriter(chunk, settings) as writer:
            for number, pts in enumerate(source.index.pts):
                writer.write(np.full((24, 32, 3), 40 * number, np.uint8), pts)
        out = str(tmp_path / f"out{attempt}.mp4")
        mux(source, [ChunkRef(opener=lambda c=chunk: c, start=0, stop=2, name="c", video=writer.info)], out)
        with av.open(out) as c:
            s = c.streams.video[0]
            packets = [(p.pts, p.dts) for p in c.demux(s) if p.size]
            time_base = s.time_base
        expected = [round(p * source.index.time_base / time_base) for p in source.index.pts]
        assert sorted(p for p, _ in packets) == expected
        assert all(d is not None and pts - 10 * len(packets) <= d <= pts for pts, d in packets), packets
