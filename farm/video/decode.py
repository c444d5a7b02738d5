"""Frame-exact shard decoding: seek backward, decode forward, drop what precedes the shard, and
check every frame's pts against the index, so a shard yields exactly its frames or fails loudly."""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
from typing import Iterator

import av
import numpy as np

from farm.errors import DecodeError
from farm.media import Colour, FrameIndex
from farm.video.color import to_bgr
from farm.video.deinterlace import deinterlaced_frames
from farm.video.index import decode_packet, open_filter
from farm.video.inputs import open_input

log = logging.getLogger(__name__)

#: Seeks that overshoot the shard's first frame are retried from keyframes 1, 2, 4, 8 further back;
#: after that, decoding starts from the beginning of the file.
BACKOFF_STEPS = (0, 1, 2, 4, 8)


def frame_to_array(frame: av.VideoFrame, high_bit_depth: bool, colour: Colour | None = None) -> np.ndarray:
    """BGR pixels (uint8, or uint16 for high bit depth sources), the layout RealESRGANer takes,
    read with the source's ``colour`` (its matrix and range) as a player reads them."""
    return to_bgr(frame, colour, high_bit_depth)


def decode_shard(
    location: str,
    stream_index: int,
    index: FrameIndex,
    start: int,
    stop: int,
    *,
    high_bit_depth: bool = False,
    colour: Colour | None = None,
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
        yield number, frame_to_array(frame, high_bit_depth, colour)


def decode_frames(
    location: str, stream_index: int, index: FrameIndex, start: int, stop: int
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Like :func:`decode_shard`, but yields PyAV frames.

    A decode from a seek point that ends before the range does (seen on MPEG program streams whose
    last picture is a keyframe: the seek lands where the decoder cannot reach it) is retried for
    the frames still missing from a seek point further back, and finally from the start."""
    if not 0 <= start < stop <= len(index):
        raise ValueError(f"frames [{start}, {stop}) are outside [0, {len(index)})")
    before: int | None = None  # only seek points before this one (after a decode that ended early)
    while True:
        try:
            for number, frame in _decode_range(location, stream_index, index, start, stop, before):
                yield number, frame
                start = number + 1
            return
        except _EndedEarly as exc:
            if exc.seek_pts is None:  # decoded from the start of the file: the frames are not there
                raise DecodeError(exc.message) from None
            log.info("decoding %s from pts %s ended before frame %d; trying further back", location, exc.seek_pts, start)
            before = exc.seek_pts


def _decode_range(
    location: str, stream_index: int, index: FrameIndex, start: int, stop: int, before: int | None
) -> Iterator[tuple[int, av.VideoFrame]]:
    target = index.pts[start]
    damaged: list[int | None] = []  # seek points whose first frames could not be decoded
    for seek_pts in _seek_plan(index, start, before):
        with open_input(location) as container:
            frames = _numbered(_decoded(container, stream_index, index, seek_pts, "AUTO", location), index, start, location)
            try:
                first = next((f for f in frames if f[0] >= 0), None)  # the first picture the index holds
            except _Undecodable:
                damaged.append(seek_pts)  # a seek into the middle of a damaged GOP; try further back
                continue
            if first is None or first[0] > start:
                continue
            try:
                yield from _take(itertools.chain([first], frames), index, start, stop, location)
            except _EndedEarly as exc:
                exc.seek_pts = seek_pts
                raise
            except _Undecodable:
                # Frame threads report an error a few frames late; find the damaged frame itself.
                raise _locate_damage(location, stream_index, index, seek_pts) from None
            return
    if damaged:
        raise _locate_damage(location, stream_index, index, damaged[-1])
    raise DecodeError(
        f"frame {start} (pts {target}) of {location} cannot be reached: even decoding from the start of the file "
        "begins after it; the file is damaged there: repair or re-encode it"
    )


class _EndedEarly(DecodeError):
    """The decoder ran out of pictures before the range's end; ``seek_pts`` is where it began."""

    seek_pts: int | None = None


class _Undecodable(DecodeError):
    """The decoder refused a packet; raised with the packet's frame, which frame threading may blur."""


def _decoded(
    container, stream_index: int, index: FrameIndex, seek_pts: int | None, threads: str, location: str
) -> Iterator[av.VideoFrame]:
    """Frames from ``seek_pts`` (None: the start) on, decoding packet by packet (through the
    index's bitstream filter) so that a packet the decoder refuses is named by its frame."""
    stream = container.streams[stream_index]
    stream.thread_type = threads
    if seek_pts is not None:
        container.seek(seek_pts, stream=stream, backward=True)
    bsf = open_filter(stream, index.bitstream_filter)
    for packet in container.demux(stream):  # ends with an empty packet that drains the decoder
        try:
            frames = list(decode_packet(stream, packet, bsf))
        except av.error.FFmpegError as exc:
            raise _Undecodable(_damage_message(index, packet.pts, exc, location)) from None
        yield from frames


def _numbered(
    frames: Iterator[av.VideoFrame], index: FrameIndex, start: int, location: str
) -> Iterator[tuple[int, av.VideoFrame]]:
    """``(frame number, picture)``: by the decoder's tag, or by count where the index is not
    seekable (every read then starts at the file's start). Pictures the index does not hold
    and that precede the shard (a seek's leading pictures) are numbered -1, as are those before
    the first picture the index holds: a seek into an MPEG program stream can land inside a PES
    packet, and the demuxer then gives its timestamp to a fragment and shifts the next pictures'
    (a shard that begins at such a picture is read from a seek point further back)."""
    if not index.seekable:
        yield from enumerate(frames)
        return
    numbers = index.frame_of_tags()
    before = index.tags[start] if index.decoder_pts is None else None
    placed = False  # a picture the index holds was seen
    for frame in frames:
        tag = frame.pts
        if tag is None:
            raise DecodeError(f"the decoder produced a frame without a timestamp near frame {start} of {location}; "
                              "the stream is damaged there: repair or re-encode it")
        number = numbers.get(tag)
        placed = placed or number is not None
        if number is None:
            if not placed or (before is not None and tag < before):
                number = -1
            else:
                raise DecodeError(
                    f"the decoder produced a picture tagged {tag}, which is not in the index, at or after frame {start} "
                    f"of {location}; the stream is damaged there: repair or re-encode it"
                )
        yield number, frame


def _damage_message(index: FrameIndex, pts: int | None, exc: av.error.FFmpegError, location: str) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    fix = f"the file is damaged there; repair or re-encode {location}"
    if pts is None:
        return f"a packet without a timestamp cannot be decoded ({reason}): {fix}"
    if index.decoder_pts is not None:
        i = index.frame_of_tags().get(pts)
        where = f"frame {i} (pts {index.pts[i]})" if i is not None else f"the packet at pts {pts}"
    else:
        i = bisect.bisect_left(index.pts, pts)
        where = f"frame {i} (pts {pts})" if i < len(index) and index.pts[i] == pts else f"the packet at pts {pts}, before frame {i},"
    return f"{where} cannot be decoded ({reason}): {fix}"


def _locate_damage(location: str, stream_index: int, index: FrameIndex, seek_pts: int | None) -> DecodeError:
    """Decode again without threads, up to the packet the decoder refuses, and name its frame."""
    with open_input(location) as container:
        try:
            for _ in _decoded(container, stream_index, index, seek_pts, "NONE", location):
                pass
        except _Undecodable as exc:
            return DecodeError(exc.message)
    return DecodeError(f"the decoder failed with threads but not without; {location} is damaged near this shard")


def _seek_plan(index: FrameIndex, start: int, before: int | None = None) -> Iterator[int | None]:
    """Seek positions to try for frame ``start``, nearest first (only those before ``before``,
    when given); None means decoding from the start of the file."""
    points = [p for p in index.seek_points(start) if before is None or p < before]
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
    frames: Iterator[tuple[int, av.VideoFrame]], index: FrameIndex, start: int, stop: int, location: str
) -> Iterator[tuple[int, av.VideoFrame]]:
    expected = start
    for number, frame in frames:
        if number < start:
            continue
        if number != expected:
            raise _mismatch(index, expected, number, location)
        yield expected, frame
        expected += 1
        if expected == stop:
            return
    raise _EndedEarly(
        f"the decoder ended before frame {expected} (pts {index.pts[expected]}) of {location}; "
        f"frames [{expected}, {stop}) could not be decoded: the file may be truncated; repair or re-encode it"
    )


def _mismatch(index: FrameIndex, expected: int, number: int, location: str) -> DecodeError:
    if number > expected:
        return DecodeError(
            f"frame {expected} (pts {index.pts[expected]}) of {location} was not produced by the decoder "
            f"(the next picture was frame {number}, pts {index.pts[number]}); the stream is damaged there: "
            "repair or re-encode it"
        )
    return DecodeError(
        f"the decoder presented frame {number} (pts {index.pts[number]}) of {location} again before frame {expected}; "
        "the stream is damaged there: repair or re-encode it"
    )
