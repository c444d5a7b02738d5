"""Probe a source: which video stream farm enhances, what else the container carries, and the
frame index. Everything a worker or the mux needs later is in the returned, JSON-ready record."""

from __future__ import annotations

import dataclasses
import os
from typing import IO, cast

import av

from farm.errors import InputError, ProbeError, UsageError
from farm.media import SourceInfo, StreamInfo
from farm.storage.fs import is_url, normalize
from farm.video.color import colour_of
from farm.video.deinterlace import detect_field_order
from farm.video.index import build_index
from farm.video.inputs import error_reason, open_input


def cut_source(source: SourceInfo, start: int, stop: int) -> SourceInfo:
    """``source`` as a video of only its frames [start, stop): the index keeps those frames' pts
    (so the output carries the same timestamps as the whole job's output there) and every seek
    point (a shard seeks as the whole job's would).

    Raises:
        UsageError: the range is outside the video, or the source's frames are found by decoder
            tags or by counting (AVI, MPEG-4 part 2, raw streams), which a cut index cannot number.
    """
    index = source.index
    if not 0 <= start < stop <= len(index):
        raise UsageError(f"frames [{start}, {stop}) are outside the video's {len(index)} frames")
    if index.decoder_pts is not None or not index.seekable:
        raise UsageError(f"a clip of {source.location} cannot be cut: its frames are numbered by decoding "
                         f"({index.describe()}); remux it to .mkv first (`ffmpeg -i IN -c copy OUT.mkv`)")
    cut = dataclasses.replace(index, pts=index.pts[start:stop])
    return dataclasses.replace(source, index=cut, span=(start, stop))


def pick_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The stream to enhance: the first video stream that is not cover art."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
    raise InputError(f"input {container.name} has no video stream (it holds: {', '.join(kinds)}); farm upscales videos")


def probe(location: str) -> SourceInfo:
    """Probe and index ``location`` (a path or fsspec URL).

    Raises:
        InputError: missing, empty, unreadable, not a video, or no decodable frame.
        ProbeError: the video stream cannot be indexed exactly.
    """
    location = normalize(location)
    if not is_url(location):
        if not os.path.exists(location):
            raise InputError(f"input {location} does not exist; check the path")
        if os.path.isfile(location) and os.path.getsize(location) == 0:
            raise InputError(f"input {location} is empty (0 bytes); copy or download it again")
        if os.path.isfile(location):
            with open(location, "rb") as f:
                declared = declared_size(f)
            actual = os.path.getsize(location)
            if declared is not None and declared > actual:
                raise InputError(
                    f"input {location} is truncated: its container says {declared} bytes, the file has {actual} "
                    "(an interrupted copy, download or recording); copy it again, or remux what is there "
                    "with `ffmpeg -i IN -c copy OUT.mkv`"
                )
    with open_input(location) as container:
        stream = pick_video_stream(container)
        try:
            index = build_index(location, container, stream)
        except ProbeError as exc:
            raise ProbeError(f"input {location}: {exc}") from None
        with open_input(location) as fresh:  # decode from the start, not from where indexing ended
            first = _decode_first_frame(fresh, fresh.streams[stream.index], location)
            field_order = detect_field_order(cast("av.video.stream.VideoStream", fresh.streams[stream.index]).codec_context.field_order, first)
        ctx = stream.codec_context
        others = tuple(
            StreamInfo(
                index=s.index,
                type=s.type,
                codec=s.codec_context.name if s.codec_context is not None else "none",
                language=s.metadata.get("language"),
            )
            for s in container.streams
            if s.index != stream.index
        )
        fmt = av.VideoFormat(first.format.name)
        size = container.size if container.size and container.size > 0 else 0
        return SourceInfo(
            location=location,
            size_bytes=int(size),
            format_name=container.format.name,
            video_stream=stream.index,
            codec=ctx.name,
            width=first.width,
            height=first.height,
            pix_fmt=first.format.name,
            bits_per_sample=max(c.bits for c in fmt.components),
            rotation=int(first.rotation or 0) % 360,  # PyAV says -90 for 270
            index=index,
            other_streams=others,
            num_chapters=len(container.chapters()),
            sample_aspect_ratio=sample_aspect_ratio(stream),
            colour=colour_of(first, first.height),
            field_order=field_order,
        )


def sample_aspect_ratio(stream: av.video.stream.VideoStream) -> tuple[int, int]:
    """The stream's SAR as (num, den): the container's (e.g. an MP4 display size or a Matroska
    DisplayWidth) where it sets one, else the codec's; (1, 1) when neither says."""
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar is not None and sar > 0:
            return sar.numerator, sar.denominator
    return 1, 1


def _decode_first_frame(container, stream, location: str) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise InputError(
            f"input {location}: its first video frame cannot be decoded ({error_reason(exc)}); the file is damaged or "
            "its codec is not supported"
        ) from None
    raise InputError(f"input {location}: the video stream has no decodable frame; the file is damaged")


def declared_size(f: IO[bytes]) -> int | None:
    """The file size a Matroska/WebM or MP4/MOV file's top-level elements add up to, or None when
    the format is another or does not say (live-written files). A file shorter than this was cut
    short: FFmpeg reads such a Matroska file without complaint and returns only the frames present,
    and fails on such an MP4 with a message that does not say why."""
    head = f.read(8)
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska or WebM
        f.seek(4)
        header_size = _ebml_size(f)
        if header_size is None:
            return None
        f.seek(header_size, os.SEEK_CUR)
        if f.read(4) != b"\x18\x53\x80\x67":  # the Segment
            return None
        segment_size = _ebml_size(f)
        return None if segment_size is None else f.tell() + segment_size
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):  # ISO BMFF / QuickTime
        end = 0
        while True:
            f.seek(end)
            box = f.read(16)
            if len(box) < 8:
                return end if len(box) == 0 else end + 8
            size = int.from_bytes(box[:4], "big")
            if size == 1 and len(box) == 16:
                size = int.from_bytes(box[8:16], "big")
            if size == 0:  # the last box runs to the end of the file
                return None
            if size < 8:
                return None  # not a box structure after all
            end += size
    return None


def _ebml_size(f: IO[bytes]) -> int | None:
    """An EBML element size (a variable-length integer); None for "unknown" (streamed) sizes."""
    first = f.read(1)
    if not first:
        return None
    length = 1
    while length <= 8 and not first[0] & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        return None
    value = first[0] & (0xFF >> length)
    rest = f.read(length - 1)
    for byte in rest:
        value = (value << 8) | byte
    return None if value == (1 << (7 * length)) - 1 else value

