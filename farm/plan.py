"""Shards: half-open ranges of frame indices, and the pure function that cuts a video into them.
The plan depends only on the frame count and the shard size, so a resumed job gets the same plan."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Bounds of the default shard size: small enough to spread a short clip over many workers, large
#: enough that the backward seek and decode-forward at a shard's start stay a small overhead.
MIN_DEFAULT_SHARD_FRAMES = 16
MAX_DEFAULT_SHARD_FRAMES = 240
TARGET_SHARDS = 64


@dataclass(frozen=True, slots=True)
class Shard:
    """Frames ``[start, stop)`` of the source's indexed frame list."""

    index: int
    start: int  # first frame, inclusive
    stop: int  # one past the last frame

    def __post_init__(self) -> None:
        if self.index < 0 or not 0 <= self.start < self.stop:
            raise ValueError(f"empty or negative shard: {self.index=}, {self.start=}, {self.stop=}")

    @property
    def frames(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"shard {self.index} [{self.start}, {self.stop})"


def default_shard_frames(num_frames: int) -> int:
    """Shard size used when the user gives none: about TARGET_SHARDS shards, within sane bounds."""
    return max(MIN_DEFAULT_SHARD_FRAMES, min(MAX_DEFAULT_SHARD_FRAMES, math.ceil(num_frames / TARGET_SHARDS)))


def plan_shards(num_frames: int, shard_frames: int) -> list[Shard]:
    """Cut ``[0, num_frames)`` into consecutive shards of ``shard_frames`` (the last may be shorter).

    Raises:
        ValueError: if either argument is not positive.
    """
    if num_frames <= 0:
        raise ValueError(f"nothing to plan: {num_frames=}")
    if shard_frames <= 0:
        raise ValueError(f"shard size must be positive: {shard_frames=}")
    return [
        Shard(index=i, start=start, stop=min(start + shard_frames, num_frames))
        for i, start in enumerate(range(0, num_frames, shard_frames))
    ]
