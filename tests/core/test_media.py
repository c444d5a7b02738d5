"""The media nouns without a container library: a frame's duration, the end of the last frame, the
mean rate, and a probed source that survives JSON and pickling (the way it crosses Ray)."""

from __future__ import annotations

import pickle
from fractions import Fraction

import pytest

from farm.media import Colour, FrameIndex, SourceInfo, StreamInfo, mean_rate


def test_a_frame_lasts_until_the_next_and_the_last_as_long_as_the_one_before():
    """A VFR phone clip (ms time base): each frame lasts up to the next frame's pts; the last has no
    next, so it lasts as long as the frame before it, and the video ends one such step after it."""
    index = FrameIndex(Fraction(1, 1000), (0, 40, 80, 140), (0,))
    assert [index.duration(i) for i in range(4)] == [40, 40, 60, 60]
    assert index.end_pts == 200
    assert index.span_s == (Fraction(0), Fraction(1, 5))
    with pytest.raises(IndexError):
        index.duration(4)


def test_a_one_frame_video_lasts_one_tick():
    """A still turned into a one-frame video: no frame to take a step from, so it lasts one tick."""
    index = FrameIndex(Fraction(1, 25), (7,), (7,))
    assert index.duration(0) == 1
    assert index.end_pts == 8
    assert index.span_s == (Fraction(7, 25), Fraction(8, 25))


def test_the_mean_rate_is_exact_and_25_when_it_cannot_be_told():
    """NTSC film at 24000/1001 in a 90 kHz time base: the rate is exact; a single frame has none."""
    pts = tuple(range(0, 3754 * 100, 3754))  # 3753.75 ticks a frame, rounded up: not exactly NTSC
    index = FrameIndex(Fraction(1, 90000), pts, (0,))
    assert index.mean_rate == Fraction(90000, 3754)
    assert mean_rate([0, 3003, 6006], Fraction(1, 72000)) == Fraction(24000, 1001)
    assert mean_rate([5], Fraction(1, 25)) == Fraction(25)
    assert FrameIndex(Fraction(1, 25), (7,), (7,)).mean_rate == Fraction(25)


def test_a_probed_source_round_trips_through_json_and_pickle():
    """A job's spec holds the probe as JSON and Ray ships it pickled: both give the same source."""
    index = FrameIndex(Fraction(1, 1000), (0, 40, 80), (0,), decoder_pts=(0, 80, 40), method="decode", reason="AVI")
    source = SourceInfo(
        location="/videos/a.avi", size_bytes=1000, format_name="avi", video_stream=0, codec="mpeg4", width=720,
        height=576, pix_fmt="yuv420p", bits_per_sample=8, rotation=0, index=index,
        other_streams=(StreamInfo(1, "audio", "mp3", "eng"),), sample_aspect_ratio=(16, 15),
        colour=Colour("bt470bg", "tv", "bt470bg", "bt709", assumed=True), field_order="tt", span=(1, 3),
    )
    assert SourceInfo.from_json(source.to_json()) == source
    assert pickle.loads(pickle.dumps(source)) == source
