"""Frame-exact shard decoding: seek backward, decode forward, drop what precedes the shard, and
check every frame's pts against the index, so a shard yields exactly its frames or fails loudly."""

from __future__ import annotations

import bisect
import functools
import itertools
from typing import Iterator

import av
import numpy as np

from farm.errors import DecodeError
from farm.video.deinterlace import deinterlaced_frames
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
    deinterlace: str = "off",
    field_order: str = "unknown",
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_number, bgr_pixels)`` for frames ``[start, stop)`` of the indexed stream.

    With ``deinterlace`` ``on`` or ``double`` (an effective mode, see :mod:`farm.video.deinterlace`)
    the frames are bwdif's and the numbers output frame numbers (two per source frame for double).

    Raises:
        DecodeError: a frame of the range could not be decoded, or the decoder's frames do not
            match the index (a frame would otherwise be dropped or duplicated).
    """
    if deinterlace == "off":
        frames = decode_frames(location, stream_index, index, start, stop)
    else:
        decode = functools.partial(decode_frames, location, stream_index, index)
        frames = deinterlaced_frames(decode, len(index), start, stop, mode=deinterlace, field_order=field_order, time_base=index.time_base)
    for number, frame in frames:
        yield number, frame_to_array(frame, high_bit_depth)


def decode_frames(
    location: str, stream_index: int, index: FrameIndex, start: int, stop: int
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Like :func:`decode_shard`, but yields PyAV frames."""
    if not 0 <= start < stop <= len(index):
        raise ValueError(f"frames [{start}, {stop}) are outside [0, {len(index)})")
    target = index.pts[start]
    damaged: list[int | None] = []  # seek points whose first frames could not be decoded
    for seek_pts in _seek_plan(index, target):
        with open_input(location) as container:
            frames = _decoded(container, stream_index, index, seek_pts, "AUTO")
            try:
                first = next(frames, None)
            except _Undecodable:
                damaged.append(seek_pts)  # a seek into the middle of a damaged GOP; try further back
                continue
            if first is None or first.pts is None or first.pts > target:
                continue
            try:
                yield from _take(itertools.chain([first], frames), index, start, stop)
            except _Undecodable:
                # Frame threads report an error a few frames late; find the damaged frame itself.
                raise _locate_damage(location, stream_index, index, seek_pts) from None
            return
    if damaged:
        raise _locate_damage(location, stream_index, index, damaged[-1])
    raise DecodeError(
        f"frame {start} (pts {target}) cannot be reached: even decoding from the start of the file "
        "begins after it; the file is damaged there"
    )


class _Undecodable(DecodeError):
    """The decoder refused a packet; raised with the packet's frame, which frame threading may blur."""


def _decoded(container, stream_index: int, index: FrameIndex, seek_pts: int | None, threads: str) -> Iterator[av.VideoFrame]:
    """Frames from ``seek_pts`` (None: the start) on, decoding packet by packet so that a packet
    the decoder refuses is named by its frame."""
    stream = container.streams[stream_index]
    stream.thread_type = threads
    if seek_pts is not None:
        container.seek(seek_pts, stream=stream, backward=True)
    for packet in container.demux(stream):  # ends with an empty packet that drains the decoder
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            raise _Undecodable(_damage_message(index, packet.pts, exc)) from None
        yield from frames


def _damage_message(index: FrameIndex, pts: int | None, exc: av.error.FFmpegError) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    if pts is None:
        where = "a packet without a timestamp"
    else:
        i = bisect.bisect_left(index.pts, pts)
        where = f"frame {i} (pts {pts})" if i < len(index) and index.pts[i] == pts else f"the packet at pts {pts}, before frame {i},"
    return f"{where} cannot be decoded ({reason}): the file is damaged there; repair or re-encode the source"


def _locate_damage(location: str, stream_index: int, index: FrameIndex, seek_pts: int | None) -> DecodeError:
    """Decode again without threads, up to the packet the decoder refuses, and name its frame."""
    with open_input(location) as container:
        try:
            for _ in _decoded(container, stream_index, index, seek_pts, "NONE"):
                pass
        except _Undecodable as exc:
            return DecodeError(exc.message)
    return DecodeError("the decoder failed with threads but not without; the file is damaged near this shard")


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
