"""The media nouns, pure: a probed source (:class:`SourceInfo`), its frame index, colour and other
streams; the time rules every reader of them shares (a frame's duration, the end of the last frame,
the mean rate) and the deinterlace arithmetic. No container library: that is :mod:`farm.video`."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Literal

from farm.config import DEINTERLACE_MODES

Method = Literal["packets", "decode"]

#: FFmpeg's colour matrices (AVColorSpace values and the names ffprobe prints): the names are what
#: :attr:`Colour.matrix` holds.
MATRICES = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
            9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc", 13: "chroma-derived-c", 14: "ictcp"}
HDR_TRANSFERS = ("smpte2084", "arib-std-b67")
#: The rate a video is taken to have when its frames cannot tell one (FFmpeg's default).
DEFAULT_RATE = Fraction(25)
#: Field orders (FFmpeg's names) of interlaced video, and those whose top field is shown first
#: (tt: coded and shown first; bt: coded second).
INTERLACED = ("tt", "bb", "tb", "bt")
TOP_FIRST = ("tt", "bt")


@dataclass(frozen=True, slots=True)
class Colour:
    """How a stream's samples are to be read and what the output is tagged with. ``assumed``: at
    least one of the four was not tagged by the source but guessed as players guess it.
    ``mastering`` is x265's ``master-display`` string, ``light`` its ``max-cll`` (``"1000,400"``)."""

    matrix: str
    range: str  # tv (limited) | pc (full)
    primaries: str | None = None
    transfer: str | None = None
    assumed: bool = False
    mastering: str | None = None
    light: str | None = None

    def __post_init__(self) -> None:
        if self.matrix not in MATRICES.values():
            raise ValueError(f"unknown matrix {self.matrix!r}; known: {', '.join(MATRICES.values())}")
        if self.range not in ("tv", "pc"):
            raise ValueError(f"colour range must be tv or pc, got {self.range!r}")

    @property
    def hdr(self) -> bool:
        return self.transfer in HDR_TRANSFERS

    def to_json(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}  # type: ignore[attr-defined]

    @classmethod
    def from_json(cls, data: dict | None) -> Colour | None:
        return None if data is None else cls(**data)


def mean_rate(pts: Sequence[int], time_base: Fraction) -> Fraction:
    """The mean frame rate of a whole video with presentation times ``pts`` (sorted), exactly:
    frames after the first over the time from the first to the last.

    Returns:
        The rate in frames per second; :data:`DEFAULT_RATE` when it cannot be told (a single
        frame). Every use of the figure copes with that: the encoder takes it as a rate-control
        hint only, and a one-frame video has no shard boundary for a snap window to move.
    """
    if len(pts) < 2:
        return DEFAULT_RATE
    span = (pts[-1] - pts[0]) * time_base
    return Fraction(len(pts) - 1) / span if span > 0 else DEFAULT_RATE


@dataclass(frozen=True, slots=True)
class FrameIndex:
    """Sorted presentation timestamps of a video stream, in ``time_base`` units, and how to find
    each frame in a decode (how it is built: :mod:`farm.video.index`)."""

    time_base: Fraction
    pts: tuple[int, ...]  # presentation times, sorted: what the output carries
    keyframe_pts: tuple[int, ...]  # seek points (packet pts), discard keyframes included (edit lists need them)
    decoder_pts: tuple[int, ...] | None = None  # tag of the i-th presented picture; None: equal to pts
    method: Method = "packets"
    reason: str = ""  # why the index was decoded ("" for packets)
    seekable: bool = True  # False: shards decode from the start and count pictures
    bitstream_filter: str | None = None  # applied to the packets before decoding, in every read

    def __post_init__(self) -> None:
        if not self.pts:
            raise ValueError("a frame index needs at least one frame")
        if any(b <= a for a, b in zip(self.pts, self.pts[1:])):
            raise ValueError("frame pts must be strictly increasing")
        if self.decoder_pts is not None and (len(self.decoder_pts) != len(self.pts) or len(set(self.decoder_pts)) != len(self.pts)):
            raise ValueError("decoder_pts must hold one distinct tag per frame")

    def __len__(self) -> int:
        return len(self.pts)

    def seconds(self, frame: int) -> float:
        return float(self.pts[frame] * self.time_base)

    def duration(self, frame: int) -> int:
        """How long ``frame`` is shown, in ``time_base`` ticks: up to the next frame's pts. The last
        frame lasts as long as the one before it; the only frame of a one-frame video, one tick.

        Raises:
            IndexError: ``frame`` is not in ``[0, len(self))``.
        """
        pts = self.pts
        if not 0 <= frame < len(pts):
            raise IndexError(f"frame {frame} is outside the index's {len(pts)} frames")
        if frame + 1 < len(pts):
            return pts[frame + 1] - pts[frame]
        return pts[frame] - pts[frame - 1] if frame else 1

    @property
    def end_pts(self) -> int:
        """Where the last frame ends (its pts plus its :meth:`duration`), in ``time_base`` ticks."""
        return self.pts[-1] + self.duration(len(self.pts) - 1)

    @property
    def span_s(self) -> tuple[Fraction, Fraction]:
        """The time the frames cover, in seconds: the first frame's start to the last one's end."""
        return self.pts[0] * self.time_base, self.end_pts * self.time_base

    @property
    def mean_rate(self) -> Fraction:
        """The video's mean frame rate (see :func:`mean_rate`)."""
        return mean_rate(self.pts, self.time_base)

    @property
    def tags(self) -> tuple[int, ...]:
        """The tag the decoder attaches to each frame, in frame order."""
        return self.pts if self.decoder_pts is None else self.decoder_pts

    def frame_of_tags(self) -> dict[int, int]:
        """``{decoder tag: frame number}``."""
        return {tag: i for i, tag in enumerate(self.tags)}

    def keyframe_at_or_before(self, pts: int) -> int | None:
        """The last seek point at or before ``pts``, or None if there is none."""
        i = bisect.bisect_right(self.keyframe_pts, pts)
        return self.keyframe_pts[i - 1] if i else None

    def seek_points(self, frame: int) -> list[int]:
        """Seek points from which a decode presents ``frame`` or an earlier one, in file order."""
        if not self.seekable:
            return []
        if self.decoder_pts is None:
            return [k for k in self.keyframe_pts if k <= self.pts[frame]]
        frames = self.frame_of_tags()
        return [k for k in self.keyframe_pts if k in frames and frames[k] <= frame]

    def describe(self) -> str:
        """One line for `farm status`: how the frames were numbered."""
        if self.method == "packets":
            return "container timestamps"
        how = "decoded" + (f" ({self.reason})" if self.reason else "")
        return how + ("" if self.seekable else "; shards decode from the start")

    def to_json(self) -> dict:
        return {
            "time_base": [self.time_base.numerator, self.time_base.denominator],
            "pts": list(self.pts),
            "keyframe_pts": list(self.keyframe_pts),
            "decoder_pts": None if self.decoder_pts is None else list(self.decoder_pts),
            "method": self.method,
            "reason": self.reason,
            "seekable": self.seekable,
            "bitstream_filter": self.bitstream_filter,
        }

    @classmethod
    def from_json(cls, data: dict) -> FrameIndex:
        num, den = data["time_base"]
        tags = data.get("decoder_pts")
        return cls(
            Fraction(num, den),
            tuple(data["pts"]),
            tuple(data["keyframe_pts"]),
            decoder_pts=None if tags is None else tuple(tags),
            method=data.get("method", "packets"),
            reason=data.get("reason", ""),
            seekable=data.get("seekable", True),
            bitstream_filter=data.get("bitstream_filter"),
        )


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A non-enhanced stream of the source, copied unchanged into the output."""

    index: int
    type: str  # audio | subtitle | data | attachment | video (a second video stream, or cover art)
    codec: str
    language: str | None = None


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What farm knows about the input after probing it (:func:`farm.video.probe.probe`)."""

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
    # Width:height of one coded pixel on screen (the codec's, or the container's display size).
    sample_aspect_ratio: tuple[int, int] = (1, 1)
    # None only in jobs probed before farm read colour: decoded by the frame's tags, output untagged.
    colour: Colour | None = None
    # FFmpeg's field order names: progressive, tt, bb, tb, bt, or unknown (also jobs made before
    # farm recorded it, which --deinterlace auto therefore leaves as they were made).
    field_order: str = "unknown"
    # Frames [start, stop) of the probed file this source is cut to (``farm preview --clip``, see
    # :func:`farm.video.probe.cut_source`); None: the whole file. The mux then cuts the other
    # streams to that span.
    span: tuple[int, int] | None = None

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
        data["sample_aspect_ratio"] = tuple(data.get("sample_aspect_ratio", (1, 1)))
        data["colour"] = Colour.from_json(data.get("colour"))
        data["span"] = tuple(data["span"]) if data.get("span") is not None else None
        return cls(**data)


def is_interlaced(field_order: str) -> bool:
    return field_order in INTERLACED


def effective_mode(requested: str, field_order: str) -> str:
    """``off``, ``on`` or ``double``: what ``requested`` (``--deinterlace``) does to a source with
    ``field_order``.

    Raises:
        ValueError: ``requested`` is not one of :data:`farm.config.DEINTERLACE_MODES`.
    """
    if requested not in DEINTERLACE_MODES:
        raise ValueError(f"unknown deinterlace mode {requested!r}; known: {', '.join(DEINTERLACE_MODES)}")
    if requested == "auto":
        return "on" if is_interlaced(field_order) else "off"
    return requested


def frames_per_source_frame(mode: str) -> int:
    """Output frames per source frame: 2 for ``double``, else 1 (``mode`` is an effective mode)."""
    return 2 if mode == "double" else 1


def output_index(source: FrameIndex, mode: str) -> FrameIndex:
    """The output's frames: ``source`` itself, or for ``double`` two per source frame, the first
    field's at the frame's pts and the second's half its :meth:`~FrameIndex.duration` later, in a
    time base half the source's (see :mod:`farm.video.deinterlace`)."""
    if mode != "double":
        return source
    out: list[int] = []
    for k, p in enumerate(source.pts):
        out += [2 * p, 2 * p + source.duration(k)]
    return FrameIndex(source.time_base / 2, tuple(out), tuple(2 * k for k in source.keyframe_pts))


def output_field_order(mode: str, field_order: str) -> str:
    """The field order tag of the output: progressive once deinterlaced, else the source's."""
    return field_order if mode == "off" else "progressive"
