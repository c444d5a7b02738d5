"""Probe a source: which video stream farm enhances, what else the container carries, and the
frame index. Everything a worker or the mux needs later is in the returned, JSON-ready record."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from typing import Iterator

import av

from farm.errors import InputError, ProbeError
from farm.storage import is_url, normalize, open_location
from farm.video.index import FrameIndex, index_stream


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A non-enhanced stream of the source, copied unchanged into the output."""

    index: int
    type: str  # audio | subtitle | data | attachment | video (a second video stream, or cover art)
    codec: str
    language: str | None = None


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What farm knows about the input after probing it."""

    location: str
    size_bytes: int
    format_name: str
    video_stream: int
    codec: str
    width: int
    height: int
    pix_fmt: str
    bits_per_sample: int  # 8, or more for high bit depth formats
    rotation: int  # degrees, from the display matrix; pixels stay coded
    index: FrameIndex
    other_streams: tuple[StreamInfo, ...] = field(default=())
    num_chapters: int = 0

    @property
    def num_frames(self) -> int:
        return len(self.index)

    @property
    def high_bit_depth(self) -> bool:
        return self.bits_per_sample > 8

    def to_json(self) -> dict:
        data = asdict(self)
        data["index"] = self.index.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> SourceInfo:
        data = dict(data)
        data["index"] = FrameIndex.from_json(data["index"])
        data["other_streams"] = tuple(StreamInfo(**s) for s in data["other_streams"])
        return cls(**data)


@contextlib.contextmanager
def open_input(location: str) -> Iterator[av.container.InputContainer]:
    """Open a source for demuxing, turning every failure into one clear InputError."""
    try:
        target = open_location(location)
    except FileNotFoundError:
        raise InputError(f"input {location} does not exist; check the path") from None
    try:
        container = av.open(target, "r")
    except FileNotFoundError:
        raise InputError(f"input {location} does not exist; check the path") from None
    except IsADirectoryError:
        raise InputError(f"input {location} is a directory, not a video file") from None
    except PermissionError:
        raise InputError(f"input {location} is not readable; check its permissions") from None
    except av.error.FFmpegError as exc:
        raise InputError(f"input {location} is not a video farm can read ({_reason(exc)})") from None
    try:
        yield container
    finally:
        container.close()
        if not isinstance(target, str):
            target.close()


def _reason(exc: av.error.FFmpegError) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def pick_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The stream to enhance: the first video stream that is not cover art."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["none"]
    raise InputError(f"input has no video stream (streams: {', '.join(kinds)}); farm needs a video")


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
            raise InputError(f"input {location} is empty (0 bytes)")
    with open_input(location) as container:
        stream = pick_video_stream(container)
        index = index_stream(container, stream)
        with open_input(location) as fresh:  # decode from the start, not from where indexing ended
            first = _decode_first_frame(fresh, fresh.streams[stream.index], location)
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
            rotation=int(first.rotation or 0),
            index=index,
            other_streams=others,
            num_chapters=len(container.chapters()),
        )


def _decode_first_frame(container, stream, location: str) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise InputError(f"input {location}: the video cannot be decoded ({_reason(exc)})") from None
    raise InputError(f"input {location}: the video stream has no decodable frame")

