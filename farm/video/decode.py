"""Frame-exact shard decoding: seek backward, decode forward, drop what precedes the shard, and
check every frame's pts against the index, so a shard yields exactly its frames or fails loudly."""

from __future__ import annotations

import itertools
from typing import Iterator

import av
import numpy as np

from farm.errors import DecodeError
from farm.video.index import FrameIndex
from farm.video.probe import open_input

#: Seeks that overshoot the shard's first frame are retried from keyframes 1, 2, 4, 8 further back;
#: after that, decoding starts from the beginning of the file.
BACKOFF_STEPS = (0, 1, 2, 4, 8)


def frame_to_array(frame: av.VideoFrame, high_bit_depth: bool) -> np.ndarray:
    """BGR pixels (uint8, or uint16 for high bit depth sources), the layout RealESRGANer takes."""
    return frame.to_ndarray(format="bgr48le" if high_bit_depth else "bgr24")


def decode_shard(
    location: str,
    stream_index: int,
    index: FrameIndex,
    start: int,
    stop: int,
    *,
    high_bit_depth: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_number, bgr_pixels)`` for frames ``[start, stop)`` of the indexed stream.

    Raises:
        DecodeError: a frame of the range could not be decoded, or the decoder's frames do not
            match the index (a frame would otherwise be dropped or duplicated).
    """
    for number, frame in decode_frames(location, stream_index, index, start, stop):
        yield number, frame_to_array(frame, high_bit_depth)


def decode_frames(
    location: str, stream_index: int, index: FrameIndex, start: int, stop: int
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Like :func:`decode_shard`, but yields PyAV frames."""
    if not 0 <= start < stop <= len(index):
        raise ValueError(f"frames [{start}, {stop}) are outside [0, {len(index)})")
    target = index.pts[start]
    for seek_pts in _seek_plan(index, target):
        with open_input(location) as container:
            stream = container.streams[stream_index]
            stream.thread_type = "AUTO"
            if seek_pts is not None:
                container.seek(seek_pts, stream=stream, backward=True)
            frames = container.decode(stream)
            try:
                first = next(frames, None)
            except av.error.FFmpegError:
                continue  # a seek into the middle of a damaged GOP; try further back
            if first is None or first.pts is None or first.pts > target:
                continue
            yield from _take(itertools.chain([first], frames), index, start, stop)
            return
    raise DecodeError(
        f"frame {start} (pts {target}) cannot be reached: even decoding from the start of the file "
        "begins after it; the file is damaged there"
    )


def _seek_plan(index: FrameIndex, target: int) -> Iterator[int | None]:
    """Seek positions to try, nearest first; None means decoding from the start of the file."""
    points = [k for k in index.keyframe_pts if k <= target]
    tried: set[int] = set()
    for step in BACKOFF_STEPS:
        if step >= len(points):
            break
        point = points[-1 - step]
        if point not in tried:
            tried.add(point)
            yield point
    yield None


def _take(
    frames: Iterator[av.VideoFrame], index: FrameIndex, start: int, stop: int
) -> Iterator[tuple[int, av.VideoFrame]]:
    expected = start
    target = index.pts[start]
    try:
        for frame in frames:
            pts = frame.pts
            if pts is None:
                raise DecodeError(f"the decoder produced a frame without a timestamp near frame {expected}")
            if pts < target:
                continue
            if pts != index.pts[expected]:
                raise _mismatch(index, expected, pts)
            yield expected, frame
            expected += 1
            if expected == stop:
                return
    except av.error.FFmpegError as exc:
        raise DecodeError(f"decoding failed at frame {expected} (pts {index.pts[expected]}): {exc}") from None
    raise DecodeError(
        f"the decoder ended before frame {expected} (pts {index.pts[expected]}); "
        f"frames [{expected}, {stop}) could not be decoded: the file may be truncated"
    )


def _mismatch(index: FrameIndex, expected: int, pts: int) -> DecodeError:
    if pts > index.pts[expected]:
        return DecodeError(
            f"frame {expected} (pts {index.pts[expected]}) was not produced by the decoder "
            f"(next decoded pts {pts}); the stream is damaged there"
        )
    return DecodeError(
        f"the decoder produced a frame at pts {pts}, which is not in the index, before frame {expected}; "
        "the stream is damaged there"
    )
