"""Shard decoding is exact whatever the clip: for random lengths, GOP structures, B-frames,
codecs and containers (including edit lists), and random shard sizes, every shard yields
exactly its source frames, in order, as a full decode from the start gives them."""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.plan import plan_shards
from farm.testing.clips import make_test_clip, trim_with_stream_copy
from farm.video.decode import decode_shard
from farm.video.probe import probe
from tests.helpers import decode_all, video_packets


@st.composite
def clips(draw):
    codec = draw(st.sampled_from(["libx264", "libx265"]))
    return {
        "frames": draw(st.integers(1, 40)),
        "gop": draw(st.integers(1, 45)),
        "bframes": draw(st.integers(0, 3)),
        "codec": codec,
        "container": draw(st.sampled_from([".mp4", ".mkv", ".ts"])),
        "vfr": draw(st.booleans()),
        "cut": draw(st.none() | st.integers(1, 39)),  # MP4 only: trim by stream copy (an edit list)
        "open_gop": codec == "libx265" and draw(st.booleans()),
    }


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clip=clips(), shard_frames=st.integers(1, 16))
def test_every_shard_yields_exactly_its_source_frames(clip, shard_frames):
    """A render farm cuts any video anywhere: whatever the GOP, B-frame, open-GOP, container,
    VFR or edit-list structure, and wherever the shard boundaries fall (mostly mid-GOP), shard
    by shard decoding gives back each source frame once, in order, pixel for pixel."""
    with tempfile.TemporaryDirectory() as d:
        options = {"sc_threshold": "0"} if clip["codec"] == "libx264" else {}
        if clip["open_gop"]:
            options["x265-params"] = f"log-level=error:open-gop=1:keyint={clip['gop']}:min-keyint={clip['gop']}:scenecut=0"
        # FFmpeg's format probe misreads MPEG-TS files of under about 2 KB (no real recording).
        frames = max(clip["frames"], 8) if clip["container"] == ".ts" else clip["frames"]
        path = make_test_clip(
            os.path.join(d, "clip" + clip["container"]),
            frames=frames,
            size=(32, 24),
            codec=clip["codec"],
            vfr=clip["vfr"],
            gop=clip["gop"],
            bframes=clip["bframes"],
            audio=False,
            start_s=1.4 if clip["container"] == ".ts" else 0.0,
            options=options,
        )
        if clip["container"] == ".mp4" and clip["cut"] is not None and clip["cut"] < frames:
            keyframes = {pts for pts, key in video_packets(path) if key}
            pts = sorted(p for p, _ in video_packets(path))
            if pts[clip["cut"]] not in keyframes:
                path = trim_with_stream_copy(path, os.path.join(d, "cut.mp4"), clip["cut"])

        source = probe(path)
        times, frames = decode_all(path)
        assert [p * source.index.time_base for p in source.index.pts] == times
        for shard in plan_shards(source.num_frames, shard_frames):
            got = list(decode_shard(path, source.video_stream, source.index, shard.start, shard.stop))
            assert [number for number, _ in got] == list(range(shard.start, shard.stop)), shard
            for number, pixels in got:
                assert np.array_equal(pixels, frames[number]), (shard, number)


def test_a_seek_that_lands_inside_a_program_streams_pes_packet_reads_from_further_back(monkeypatch):
    """A DVD's VOB: a seek lands inside a PES packet, so the demuxer gives its timestamp to the
    fragment and the GOP's keyframe comes out tagged with a time that is no frame's (as FFmpeg's
    MPEG-PS demuxer does on some DVD layouts). The mis-tagged picture is skipped like a leading
    picture; the frames after it are taken from that seek, and a shard that begins at the
    mis-tagged keyframe is read from further back, so every shard holds exactly its own pictures."""
    import contextlib
    from dataclasses import dataclass

    from farm.media import FrameIndex
    from farm.video import decode

    @dataclass
    class Picture:
        pts: int
        frame: int  # the source frame it really is

    pts = tuple(48600 + 3600 * i for i in range(12))
    index = FrameIndex(time_base=Fraction(1, 90000), pts=pts, keyframe_pts=(48600, 70200, 88200))
    from_start = [Picture(p, i) for i, p in enumerate(pts)]
    # Any seek before the last GOP lands inside the PES of frame 6 (the second GOP's keyframe).
    landed = [Picture(79200, 6)] + from_start[7:]

    def decoded(container, stream_index, index, seek_pts, threads, location):
        return iter(from_start if seek_pts is None else landed if seek_pts < 88200 else from_start[11:])

    monkeypatch.setattr(decode, "_decoded", decoded)
    monkeypatch.setattr(decode, "open_input", lambda location: contextlib.nullcontext())
    ranges = [(f, f + 1) for f in range(12)] + [(0, 12), (5, 12), (6, 9), (7, 12)]
    got = {r: [(n, p.frame) for n, p in decode.decode_frames("dvd.vob", 0, index, *r)] for r in ranges}
    assert got == {r: [(f, f) for f in range(*r)] for r in ranges}
