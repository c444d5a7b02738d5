"""Building the frame index (:class:`farm.media.FrameIndex`): frame i is the i-th picture a
sequential decode presents, at the i-th sorted pts; read from packet pts where the container's are
presentation times, else by one decode pass (:func:`index_method` says which)."""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Iterator, cast

import av

from farm.errors import ProbeError
from farm.media import FrameIndex, Method

log = logging.getLogger(__name__)

#: Demuxers of raw elementary streams: no timestamps, no seek index.
RAW_STREAM_FORMATS = frozenset({"h261", "h263", "h264", "hevc", "m4v", "mpegvideo", "cavsvideo", "vvc", "evc"})
#: Containers whose packet pts are decode-order counters.
COUNTER_FORMATS = frozenset({"avi"})
#: Containers whose packet pts are often missing or repeated: checked, and decoded if they are.
SUSPECT_FORMATS = frozenset({"mpeg", "flv", "live_flv"})
#: Codecs read through a bitstream filter, and why.
BITSTREAM_FILTERS = {"mpeg4": "mpeg4_unpack_bframes"}


def index_method(format_name: str, codec: str) -> tuple[Method, str]:
    """Which way to index a stream, and why, from the container and codec alone (MPEG-PS and
    FLV are indexed by packets unless their packets then prove unusable).

    Returns:
        ``(method, reason)``; the reason is "" for ``packets``.
    """
    formats = set(format_name.split(","))
    if formats & RAW_STREAM_FORMATS:
        return "decode", "raw stream: no container timestamps"
    if formats & COUNTER_FORMATS:
        return "decode", "AVI timestamps not trusted"
    if codec == "mpeg4":
        return "decode", "MPEG-4 part 2 may pack B-frames"
    return "packets", ""


def build_index(location: str, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> FrameIndex:
    """Index ``stream`` of ``container`` (freshly opened at ``location``) the way
    :func:`index_method` says; MPEG-PS/FLV whose packets prove unusable are decoded instead.

    Raises:
        ProbeError: the stream has no frames, its timestamps are unusable, or it cannot be decoded.
    """
    from farm.video.inputs import open_input

    method, reason = index_method(container.format.name, stream.codec_context.name)
    if method == "packets":
        try:
            return index_stream(container, stream)
        except ProbeError as exc:
            if not set(container.format.name.split(",")) & SUSPECT_FORMATS:
                raise
            reason = f"{container.format.name} packet timestamps unusable: {exc.message.split(';')[0]}"
    raw = bool(set(container.format.name.split(",")) & RAW_STREAM_FORMATS)
    with open_input(location) as fresh:
        return decode_index(fresh, cast("av.video.stream.VideoStream", fresh.streams[stream.index]), reason, seekable=not raw)


def index_stream(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> FrameIndex:
    """Demux ``stream`` from the start of ``container`` and index its frames by packet pts.

    Packets without a pts (the flush packet, or broken muxing) and discard packets are not frames;
    discard keyframes stay as seek points. Duplicate pts are a broken file, not two frames.

    Raises:
        ProbeError: the stream has no frames, or its timestamps are unusable.
    """
    pts: list[int] = []
    keyframes: list[int] = []
    missing_pts = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is None:
                continue  # the demuxer's final flush packet
            if packet.pts is None:
                missing_pts += 1
                continue
            if packet.is_keyframe:
                keyframes.append(packet.pts)
            if not packet.is_discard:
                pts.append(packet.pts)
    except av.error.FFmpegError as exc:
        raise ProbeError(f"cannot read the video's packets ({exc}); the file looks truncated or corrupt") from exc
    if missing_pts:
        raise ProbeError(
            f"{missing_pts} video packets carry no timestamp, so frames cannot be numbered exactly; "
            "remux the file first (e.g. `ffmpeg -i IN -c copy OUT.mkv`)"
        )
    if not pts:
        raise ProbeError("the video stream holds no frames, so there is nothing to upscale; check that the file plays")
    pts.sort()
    duplicates = len(pts) - len(set(pts))
    if duplicates:
        raise ProbeError(
            f"{duplicates} video frames share a timestamp with another frame; "
            "remux the file with fresh timestamps first (e.g. `ffmpeg -i IN -c copy -fflags +genpts OUT.mkv`)"
        )
    if stream.time_base is None:
        raise ProbeError("the video stream has no time base")
    return FrameIndex(Fraction(stream.time_base), tuple(pts), tuple(sorted(set(keyframes))), bitstream_filter=_filter_for(stream))


def decode_index(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, reason: str, *, seekable: bool = True
) -> FrameIndex:
    """Index ``stream`` by decoding it from the start: frame i is the i-th picture presented.

    Output times are the decoder's tags, sorted; pictures without unique tags (raw H.264) are
    timed ``i / frame rate`` and the index is not seekable.

    Raises:
        ProbeError: the stream holds no frames or cannot be decoded to its end.
    """
    filter_name = _filter_for(stream)
    bsf = open_filter(stream, filter_name)
    tags: list[int | None] = []
    keyframes: list[int] = []
    stream.thread_type = "AUTO"
    log.info("indexing the video by decoding it once (%s)", reason)
    try:
        for packet in container.demux(stream):
            if packet.is_keyframe and packet.pts is not None:
                keyframes.append(packet.pts)
            tags += [f.pts for f in decode_packet(stream, packet, bsf)]
    except av.error.FFmpegError as exc:
        reason_text = getattr(exc, "strerror", None) or str(exc)
        raise ProbeError(
            f"the video cannot be decoded after its frame {len(tags)} ({reason_text}); the file is damaged there: "
            "repair or re-encode it"
        ) from None
    if not tags:
        raise ProbeError("the video stream holds no frames, so there is nothing to upscale; check that the file plays")
    known = [t for t in tags if t is not None]
    if len(known) == len(tags) and len(set(known)) == len(known) and stream.time_base is not None:
        order = tuple(known)
        pts = tuple(sorted(known))
        log.info("indexed %d frames", len(pts))
        return FrameIndex(
            Fraction(stream.time_base),
            pts,
            tuple(sorted(set(keyframes))) if seekable else (),
            decoder_pts=None if order == pts else order,
            method="decode",
            reason=reason,
            seekable=seekable,
            bitstream_filter=filter_name,
        )
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    log.info("indexed %d frames by decoding (%s); the pictures carry no usable timestamps, timed at %s fps", len(tags), reason, rate)
    return FrameIndex(
        1 / Fraction(rate),
        tuple(range(len(tags))),
        (),
        method="decode",
        reason=reason + "; timed by frame rate",
        seekable=False,
        bitstream_filter=filter_name,
    )


def _filter_for(stream: av.video.stream.VideoStream) -> str | None:
    return BITSTREAM_FILTERS.get(stream.codec_context.name)


def open_filter(stream: av.video.stream.VideoStream, name: str | None) -> av.bitstream.BitStreamFilterContext | None:
    """The bitstream filter ``name`` set up for ``stream``, or None."""
    return None if name is None else av.bitstream.BitStreamFilterContext(name, stream)


def decode_packet(
    stream: av.video.stream.VideoStream, packet: av.Packet, bsf: av.bitstream.BitStreamFilterContext | None
) -> Iterator[av.VideoFrame]:
    """The pictures ``packet`` completes, after the bitstream filter (from :func:`open_filter`,
    one per read) if any; the demuxer's empty last packet drains the filter and the decoder.

    Raises:
        av.error.FFmpegError: the decoder refused the packet.
    """
    if bsf is None:
        yield from packet.decode()  # type: ignore[misc]
        return
    ctx = stream.codec_context
    last = packet.size == 0
    for filtered in bsf.filter(None if last else packet):
        yield from ctx.decode(filtered)
    if last:
        yield from ctx.decode(None)
