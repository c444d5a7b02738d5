"""Scene cuts from a cheap luma difference of 32x18 grey thumbnails, decoded only near the planned
shard boundaries, once, when the job is created (the cuts are stored in the job spec). Advisory: a
range that cannot be decoded gives no cuts, and its boundary stays where it was planned."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from farm.errors import DecodeError
from farm.media import FrameIndex
from farm.video.decode import decode_frames

log = logging.getLogger(__name__)

#: Thumbnail size: enough to see a change of scene, small enough that scaling costs nothing.
THUMB_SIZE = (32, 18)
#: A cut needs a mean absolute luma difference of at least this (0..255) between the thumbnails
#: of consecutive frames: about a tenth of the range, which a dissolve or a pan rarely reaches in
#: one frame and a hard cut between two shots nearly always does.
CUT_MIN_MAD = 24.0
#: ... and at least this many times the larger difference of the frame pairs either side, so fast
#: motion (large differences on every frame) is not taken for a run of cuts.
CUT_PEAK_RATIO = 2.5


def thumbnail(frame) -> np.ndarray:
    """The 32x18 luma of a PyAV frame, as float32."""
    small = frame.reformat(width=THUMB_SIZE[0], height=THUMB_SIZE[1], format="gray")
    return small.to_ndarray().astype(np.float32)


def cuts_in(differences: Sequence[float], first: int) -> list[int]:
    """Frame numbers of the cuts in a run of consecutive differences, where ``differences[i]`` is
    between frames ``first + i - 1`` and ``first + i``."""
    out = []
    for i, d in enumerate(differences):
        before = differences[i - 1] if i > 0 else 0.0
        after = differences[i + 1] if i + 1 < len(differences) else 0.0
        if d >= CUT_MIN_MAD and d >= CUT_PEAK_RATIO * max(before, after):
            out.append(first + i)
    return out


def frame_differences(frames: Iterable) -> list[float]:
    """Mean absolute luma difference of each frame's thumbnail to the previous frame's."""
    out: list[float] = []
    previous = None
    for frame in frames:
        current = thumbnail(frame)
        if previous is not None:
            out.append(float(np.abs(current - previous).mean()))
        previous = current
    return out


def detect_scene_cuts(location: str, stream_index: int, index: FrameIndex, ranges: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """The scene cuts (frame numbers, sorted) found in each of ``ranges`` (``[start, stop)``
    frame ranges of the indexed stream; the first frame of a range is never reported as a cut).

    A range that cannot be decoded is logged and gives no cuts.
    """
    found: set[int] = set()
    for start, stop in _merged(ranges):
        if stop - start < 2:
            continue
        try:
            differences = frame_differences(frame for _, frame in decode_frames(location, stream_index, index, start, stop))
        except DecodeError as exc:
            log.warning("scene detection skipped frames [%d, %d): %s", start, stop, exc)
            continue
        found.update(cuts_in(differences, start + 1))
    return tuple(sorted(found))


def _merged(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching ranges joined, so no frame is decoded twice."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out
