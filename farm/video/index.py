"""The frame index: every presented frame's pts, read from the container's packets without decoding.
Frame i of a video is the i-th pts of this list; nothing in farm derives frame numbers from fps."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction

import av

from farm.errors import ProbeError


@dataclass(frozen=True, slots=True)
class FrameIndex:
    """Sorted presentation timestamps of a video stream, in ``time_base`` units."""

    time_base: Fraction
    pts: tuple[int, ...]
    keyframe_pts: tuple[int, ...]  # seek points, discard keyframes included (edit lists need them)

    def __post_init__(self) -> None:
        if not self.pts:
            raise ValueError("a frame index needs at least one frame")
        if any(b <= a for a, b in zip(self.pts, self.pts[1:])):
            raise ValueError("frame pts must be strictly increasing")

    def __len__(self) -> int:
        return len(self.pts)

    def seconds(self, frame: int) -> float:
        return float(self.pts[frame] * self.time_base)

    def keyframe_at_or_before(self, pts: int) -> int | None:
        """The last seek point at or before ``pts``, or None if there is none."""
        i = bisect.bisect_right(self.keyframe_pts, pts)
        return self.keyframe_pts[i - 1] if i else None

    def to_json(self) -> dict:
        return {
            "time_base": [self.time_base.numerator, self.time_base.denominator],
            "pts": list(self.pts),
            "keyframe_pts": list(self.keyframe_pts),
        }

    @classmethod
    def from_json(cls, data: dict) -> FrameIndex:
        num, den = data["time_base"]
        return cls(Fraction(num, den), tuple(data["pts"]), tuple(data["keyframe_pts"]))


def index_stream(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> FrameIndex:
    """Demux ``stream`` from the start of ``container`` and index its frames.

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
    return FrameIndex(Fraction(stream.time_base), tuple(pts), tuple(sorted(set(keyframes))))
