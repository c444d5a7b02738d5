"""Deinterlacing with FFmpeg's ``bwdif`` before the model (``--deinterlace auto|on|off|double``):
every shard gives exactly the frames one sequential bwdif pass over the whole video gives, and
``double`` makes one frame per field at twice the rate."""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Callable, Iterator

import av
import numpy as np

from farm.errors import DecodeError
from farm.media import TOP_FIRST, frames_per_source_frame, is_interlaced
from farm.video.filters import FilterChain

log = logging.getLogger(__name__)


#: FFmpeg's AVFieldOrder values, by the names ffprobe prints.
FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
FIELD_ORDER_CODES = {name: code for code, name in FIELD_ORDERS.items()}
def detect_field_order(codec_field_order: int, frame: av.VideoFrame) -> str:
    """The source's field order: the codec context's when it says interlaced (decoders set it
    from the stream once a frame is decoded, containers from their tags), else, for a frame
    flagged interlaced, its top-field-first flag (PyAV does not expose it: the frame, its luma
    overwritten with a vertical ramp, goes through FFmpeg's ``fieldorder=tff``, which moves lines
    only of a bottom-field-first frame). ``frame`` may be overwritten."""
    name = FIELD_ORDERS.get(codec_field_order, "unknown")
    if is_interlaced(name) or not frame.interlaced_frame:
        return name
    probe = frame
    probe.make_writable()
    before = _luma_rows(probe).copy()
    before[:] = (np.arange(before.shape[0]) % 251)[:, None]
    _luma_rows(probe)[:] = before
    try:
        chain = FilterChain.like(probe, [("fieldorder", "tff"), ("format", probe.format.name)], time_base=Fraction(1, 25))
        (ordered,) = chain.push(probe)  # one frame in, one out; anything else is a ValueError
    except (ValueError, av.error.FFmpegError) as exc:  # a pixel format fieldorder does not take
        log.info("cannot read the field order of %s frames (%s); taking top field first", probe.format.name, exc)
        return "tt"
    # Only the luma is compared: fieldorder takes no vertically subsampled chroma (4:2:0), so
    # FFmpeg converts such frames to 4:2:2 and back around it, which changes the chroma anyway.
    return "bb" if not np.array_equal(_luma_rows(ordered), before) else "tt"


def _luma_rows(frame: av.VideoFrame) -> np.ndarray:
    """The frame's luma samples (a view), one row per line, without the line padding."""
    plane = frame.planes[0]
    dtype = np.dtype(np.uint8) if frame.format.components[0].bits <= 8 else np.dtype("<u2")
    rows = np.frombuffer(memoryview(plane), dtype).reshape(-1, plane.line_size // dtype.itemsize)
    return rows[: plane.height, : plane.width]


def deinterlaced_frames(
    frames: Callable[[int, int], Iterator[tuple[int, av.VideoFrame]]],
    num_frames: int,
    start: int,
    stop: int,
    *,
    mode: str,
    field_order: str,
    time_base: Fraction,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(output_frame_number, frame)`` for source frames ``[start, stop)``, deinterlaced.

    Args:
        frames: ``frames(a, b)`` yields ``(number, frame)`` for source frames ``[a, b)`` (the
            frame-exact decoder, :func:`farm.video.decode.decode_frames`).
        mode: ``on`` or ``double``.
    """
    per = frames_per_source_frame(mode)
    first, last = max(0, start - 1), min(num_frames, stop + 1)  # with the neighbours bwdif reads

    def filtered() -> Iterator[av.VideoFrame]:
        graph: FilterChain | None = None
        for _, frame in frames(first, last):
            graph = graph or _bwdif(frame, mode, field_order, time_base)
            yield from graph.push(frame)  # bwdif's frames for the frame before this one
        if graph is not None and stop == num_frames:  # the end of the video: its last frame's
            yield from graph.flush()

    made = 0
    for made, out in enumerate(filtered(), start=1):
        number = first * per + made - 1  # output frame number
        if number >= per * start:
            yield number, out
    if first * per + made < per * stop:
        raise DecodeError(
            f"the deinterlacer gave output frames up to {first * per + made}, not up to {per * stop}; the stream is damaged there"
        )


def _bwdif(frame: av.VideoFrame, mode: str, field_order: str, time_base: Fraction) -> FilterChain:
    """One ``bwdif`` filter chain for frames shaped like ``frame``, keeping their pixel format."""
    parity = "auto" if not is_interlaced(field_order) else ("tff" if field_order in TOP_FIRST else "bff")
    bwdif = ("bwdif", f"mode={'send_field' if mode == 'double' else 'send_frame'}:parity={parity}:deint=all")
    keep = ("format", frame.format.name)  # keep the decoder's pixel format
    return FilterChain.like(frame, [bwdif, keep], time_base=time_base)
