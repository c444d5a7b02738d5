"""Frames are what the decoder presents: legacy sources whose packet timestamps cannot be trusted
(DivX-style AVIs with packed B-frames, Xvid AVIs with B-frames, raw elementary streams) are
numbered by a sequential decode, and every shard read, cut anywhere, hands over exactly the
pictures of that decode. A source damaged in every shard fails the job with the decoder's error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.testing.clips import make_test_clip, pattern_frame
from farm.testing.mpeg4 import make_mpeg4_avi
from tests.helpers import decode_all, max_abs_diff, reference_upsampler, rewrite_video_packets, stream_packets

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLIPS = ("packed_avi", "packed_avi_b2", "unpacked_avi", "raw_m4v", "raw_h264")


def remux_video(source: str, path: str, fmt: str) -> str:
    """The source's video packets, unchanged, in container ``fmt`` (a raw stream: ``m4v``)."""
    with av.open(source) as src, av.open(path, "w", format=fmt) as out:
        video = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = video
                out.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("legacy")
    lame = "libmp3lame" if "libmp3lame" in av.codecs_available else "ac3"
    packed = make_mpeg4_avi(str(d / "divx.avi"), frames=30, bframes=1, gop=8, packed=True, audio="ac3")
    return {
        "packed_avi": packed,
        # 64x48: B-frames of a 32x24 clip can be as small as the 19 bytes below which FFmpeg's
        # unpacking filter takes a packet for an N-VOP; real ones (from 320x240 up) never are.
        "packed_avi_b2": make_mpeg4_avi(str(d / "divx_b2.avi"), frames=30, size=(64, 48), bframes=2, gop=10, packed=True, audio=None, seed=1),
        "unpacked_avi": make_mpeg4_avi(str(d / "xvid.avi"), frames=30, bframes=2, gop=8, audio=lame, seed=2),
        "raw_m4v": remux_video(packed, str(d / "divx.m4v"), "m4v"),
        "raw_h264": make_test_clip(str(d / "raw.h264"), frames=30, size=(32, 24), bframes=2, gop=8, audio=False),
    }


def sequential(path: str) -> tuple[list[int | None], list[np.ndarray]]:
    """What a plain PyAV decode from the start presents: each picture's tag and its pixels."""
    with av.open(path) as c:
        frames = list(c.decode(c.streams.video[0]))
    return [f.pts for f in frames], [f.to_ndarray(format="bgr24") for f in frames]


def vop_counts(path: str) -> list[int]:
    with av.open(path) as c:
        return [bytes(p).count(b"\x00\x00\x01\xb6") for p in c.demux(c.streams.video[0]) if p.size]


def test_packed_avi_is_laid_out_as_divx_wrote_it(clips):
    """The DivX clip really packs B-frames (packets with a P-VOP and a B-VOP, each followed by a
    tiny N-VOP packet), and a decoder presents its pictures with out-of-order tags, which is
    what broke farm's packet-timestamp index."""
    counts = vop_counts(clips["packed_avi"])
    with av.open(clips["packed_avi"]) as c:
        packets = [(p.size, p.pts) for p in c.demux(c.streams.video[0]) if p.size]
    sizes, order = [s for s, _ in packets], [t for _, t in packets]
    assert len(counts) == 30 and counts.count(2) >= 5
    assert all(sizes[i + 1] <= 19 for i, n in enumerate(counts) if n == 2)  # the N-VOP after each packed packet
    assert order == sorted(order)  # AVI: decode-order counters
    tags, _ = sequential(clips["packed_avi"])
    assert tags != sorted(tags) and sorted(tags) == order


@pytest.mark.parametrize("name", CLIPS)
def test_index_is_what_a_sequential_decode_presents(name, clips):
    """Each legacy source's index has one frame per picture a sequential decode presents, in that
    order, at the sorted presentation times, and says it was built by decoding."""
    from farm.video.probe import probe

    src = probe(clips[name])
    index = src.index
    tags, pictures = sequential(clips[name])
    assert len(index) == len(pictures) == 30
    assert index.method == "decode"
    if name.startswith("raw"):
        assert (index.seekable, index.keyframe_pts) == (False, ())
        assert index.reason.startswith("raw stream: no container timestamps")
    else:
        assert index.reason == "AVI timestamps not trusted" and index.seekable
        assert index.time_base == Fraction(1, 24)
    if None in tags:  # raw H.264: the pictures carry no timestamps; timed by the frame rate
        assert index.pts == tuple(range(30)) and index.reason.endswith("; timed by frame rate")
    else:
        assert index.tags == tuple(tags)
        assert index.pts == tuple(sorted(tags))
        assert [b - a for a, b in zip(index.pts, index.pts[1:])] == [index.pts[1] - index.pts[0]] * 29
    assert index.bitstream_filter == ("mpeg4_unpack_bframes" if src.codec == "mpeg4" else None)
    if name.startswith("packed"):
        assert index.decoder_pts is not None and index.decoder_pts != index.pts
    assert type(index).from_json(index.to_json()) == index


@pytest.mark.parametrize("name", CLIPS)
def test_index_agrees_with_ffprobe(name, clips):
    """ffprobe (as ffmpeg numbers frames) counts the same frames, at the same times where it
    gives one."""
    from farm.video.probe import probe

    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe is not installed; the PyAV comparison above still runs")
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
         "stream=nb_read_frames:frame=best_effort_timestamp_time", "-of", "csv=p=0", clips[name]],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    index = probe(clips[name]).index
    *times, count = [v.strip(",") for v in out]
    assert int(count) == len(index)
    assert len(times) == len(index)
    known = [(i, float(t)) for i, t in enumerate(times) if t != "N/A"]
    if not name.startswith("raw"):  # ffprobe times raw streams from its own frame-rate guess
        assert len(known) >= len(index) - 1
        assert all(abs(t - index.seconds(i)) < 1e-6 for i, t in known), (known, index.pts)


@pytest.mark.parametrize("name", CLIPS)
def test_shards_cut_anywhere_equal_the_sequential_decode(name, clips):
    """A shard starting at any frame (right after a packed frame, on a B-frame, on a keyframe,
    in an open GOP's leading pictures) hands over frame i of a sequential decode as frame i,
    pixel for pixel, nothing skipped or repeated."""
    from farm.video.decode import decode_shard
    from farm.video.probe import probe

    src = probe(clips[name])
    _, pictures = sequential(clips[name])
    n = len(src.index)
    for start in range(n):
        for stop in sorted({start + 1, min(n, start + 4)}):
            got = list(decode_shard(src.location, src.video_stream, src.index, start, stop))
            assert [i for i, _ in got] == list(range(start, stop)), (start, stop)
            for i, pixels in got:
                assert np.array_equal(pixels, pictures[i]), f"frame {i} of shard [{start}, {stop})"


def test_packed_pictures_are_the_encoded_ones(clips, tmp_path):
    """Unpacking loses nothing: the packed AVI's frames are the pictures the encoder was given,
    as closely as an unpacked encode of the same pictures."""
    from farm.video.decode import decode_shard
    from farm.video.probe import probe

    plain = make_mpeg4_avi(str(tmp_path / "plain.avi"), frames=30, bframes=1, gop=8, audio=None)
    _, unpacked = sequential(plain)
    src = probe(clips["packed_avi"])
    packed = [pixels for _, pixels in decode_shard(src.location, src.video_stream, src.index, 0, 30)]
    assert all(np.array_equal(a, b) for a, b in zip(packed, unpacked)) and len(packed) == len(unpacked)
    expected = [pattern_frame(i, 32, 24)[..., ::-1].astype(int) for i in range(30)]
    nearest = [min(range(30), key=lambda j: np.abs(picture - expected[j]).mean()) for picture in packed]
    assert nearest == list(range(30))  # each frame is the picture encoded at its place


def test_flv_with_repeated_timestamps_is_numbered_by_decoding(tmp_path):
    """A 1500 fps capture in FLV, whose millisecond timestamps repeat: instead of refusing the
    file, farm numbers what the decoder presents (timed by the frame rate, each shard decoding
    from the start), and shards equal the sequential decode."""
    from farm.video.decode import decode_shard
    from farm.video.probe import probe

    path = make_test_clip(str(tmp_path / "fast.flv"), frames=12, size=(32, 24), fps=1500, gop=6, bframes=0, audio=False)
    src = probe(path)
    _, pictures = sequential(path)
    assert (len(src.index), src.index.method, src.index.seekable) == (12, "decode", False)
    assert src.index.reason.startswith("flv packet timestamps unusable: 4 video frames share a timestamp")
    for start, stop in ((0, 12), (5, 9), (11, 12)):
        got = list(decode_shard(path, src.video_stream, src.index, start, stop))
        assert [i for i, _ in got] == list(range(start, stop))
        assert all(np.array_equal(pixels, pictures[i]) for i, pixels in got)


@pytest.mark.ray
@pytest.mark.slow
def test_packed_divx_avi_upscaled_end_to_end(clips, tmp_path, tiny_x4, local_ray):
    """`farm submit` on a DivX AVI with packed B-frames and AC3 audio, cut into shards of 5
    frames (many start right after a packed frame): every output frame is the model's output for
    the sequential decode's frame, at the sorted presentation times, with the AC3 packets byte
    for byte, and `farm status` says how the frames were numbered."""
    source = clips["packed_avi"]
    out = str(tmp_path / "divx-x4.mp4")
    jobs = str(tmp_path / ".farm-jobs")
    args = ["submit", source, "-o", out, "--sr-weights", tiny_x4, "--no-face", "--workers", "1", "--device", "cpu",
            "--codec", "ffv1", "--shard-frames", "5", "--jobs-root", jobs, "--quiet"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output

    times, got = decode_all(out)
    first = times[0]
    assert [t - first for t in times] == [Fraction(i, 24) for i in range(30)]
    _, pictures = sequential(source)
    upsampler = reference_upsampler(tiny_x4, 4)
    assert len(got) == len(pictures)
    for i, (picture, frame) in enumerate(zip(pictures, got)):
        expected, _ = upsampler.enhance(picture)
        assert max_abs_diff(frame, expected) <= 1, f"frame {i}"
    assert stream_packets(out, "audio") == stream_packets(source, "audio")

    status = CliRunner().invoke(main, ["status", "--jobs-root", jobs], catch_exceptions=False)
    assert "index    decoded (AVI timestamps not trusted)" in status.output, status.output


@pytest.mark.ray
def test_source_damaged_in_every_shard_fails_with_the_decoders_error(tmp_path, local_ray):
    """A screen recording damaged in each of its first three shards, three workers on one machine:
    instead of blocking the machine and ending "every node is blocked", the job fails after the
    first shard fails the same way on all its attempts, with one line naming the input, the frame,
    its pts and what to do; the failures on record are all decode errors."""
    from farm.storage.jobdir import JobDir

    clean = make_test_clip(str(tmp_path / "screen.mov"), frames=16, size=(32, 24), codec="png", pix_fmt="rgb24", audio=False)

    def damage(n: int, data: bytes) -> bytes:
        if n not in (2, 6, 10):
            return data
        return bytes(b ^ 0x5A if len(data) // 2 <= k < len(data) // 2 + 40 else b for k, b in enumerate(data))

    source = rewrite_video_packets(clean, str(tmp_path / "damaged.mov"), damage)
    out = str(tmp_path / "out.mkv")
    jobs = str(tmp_path / ".farm-jobs")
    result = CliRunner().invoke(main, ["submit", source, "-o", out, "--model", "fake", "--codec", "ffv1", "--shard-frames", "4",
                                       "--workers", "3", "--device", "cpu", "--jobs-root", jobs, "--quiet"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert re.search(r"all 3 attempts failed the same way; .*last error: (shard \d+ \[\d+, \d+\): )?frame (2|6|10) \(pts \d+\) cannot be decoded", line), line
    assert f"repair or re-encode {source}" in line and "blocked" not in line, line
    assert not os.path.exists(out)
    (job_id,) = os.listdir(jobs)
    failures = JobDir(jobs, job_id).read_ledger()["failures"]
    assert failures and all("cannot be decoded" in f["error"] for f in failures), failures
