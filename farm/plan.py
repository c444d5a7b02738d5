"""Shards: half-open ranges of frame indices, and the pure function that cuts a video into them.
The plan depends only on the frame count, the shard size and the cut lists recorded in the job
spec, so a resumed job (and every actor) gets the same plan.

Scene-aware boundaries: each chunk starts with a forced keyframe, which costs bits unless the
encoder would have put one there anyway. So each planned boundary ``k * shard_frames`` moves to
the nearest scene cut within ``window`` frames (see :func:`snap_window`: ±2 s or ±25 % of a shard,
whichever is smaller); with no scene cut in reach, to the nearest source keyframe in reach (the
source's encoder chose it, and a shard that starts on one also decodes without a seek overshoot);
with neither, it stays. Scene cuts win over keyframes because periodic keyframes (every GOP) lie
in nearly every window and say nothing about the content.

Geometry, computed once on the driver and recorded in the job spec: with ``--target`` the picture
is fitted inside the target (aspect kept) and centred on a black canvas of exactly the target
size, and the model is asked for the fitted size directly (one resize, not two). Anamorphic
sources (SAR not 1:1, e.g. a 16:9 DVD's 720x480 at 32:27) are sized by their display aspect:
``--target`` fits the display picture in square pixels (a 16:9 DVD fills 1920x1080); ``--scale``
keeps the pixels' shape and tags the output with the source's SAR, unless ``--square-pixels``
asks for square pixels at the display aspect. A picture that is not a uniform scale of the source
is made by the models at their own scale and resized once to the picture."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from farm.config import MAX_OUTPUT_SIDE
from farm.errors import OutputError, UsageError

#: Bounds of the default shard size: small enough to spread a short clip over many workers, large
#: enough that the backward seek and decode-forward at a shard's start stay a small overhead.
MIN_DEFAULT_SHARD_FRAMES = 16
MAX_DEFAULT_SHARD_FRAMES = 240
TARGET_SHARDS = 64
#: How far a boundary may move to a cut: at most this many seconds, and at most this fraction of
#: a shard (so shards keep roughly their planned size, and moved boundaries never cross).
SNAP_SECONDS = 2.0
SNAP_SHARD_FRACTION = 0.25


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


def default_cpu_workers(cpus: int) -> int:
    """CPU workers a job gets without --workers (the pool's rule, and the default `farm tune`
    measures against): one single-threaded worker per core, up to 4 workers, which then share the
    cores. `farm tune` on the 2-core development machine (full-size RRDBNet x4plus + GFPGAN v1.4,
    64x48 frames to 1080p, 2026-12-01, loaded) measured 2 workers x 1 thread at 2.5-3.5x the old
    default of 1 worker x 2 threads (torch's intra-op threads scale poorly on such small
    convolutions). Beyond 4 workers each one's memory (about 1.5 GB with faces) was not measured."""
    n = min(cpus, 4)
    return max(1, n)


def cpu_plan(cpus: int, workers: int | None = None) -> tuple[int, int]:
    """CPU workers (``workers``, else :func:`default_cpu_workers`) and torch threads each, the
    workers sharing ``cpus`` cores: the worker pool's plan, which estimate and tune sample."""
    n = workers or default_cpu_workers(cpus)
    return n, max(1, cpus // n)


def default_shard_frames(num_frames: int) -> int:
    """Shard size used when the user gives none: about TARGET_SHARDS shards, within sane bounds."""
    return max(MIN_DEFAULT_SHARD_FRAMES, min(MAX_DEFAULT_SHARD_FRAMES, math.ceil(num_frames / TARGET_SHARDS)))


def snap_window(shard_frames: int, frames_per_second: float) -> int:
    """How many frames a boundary may move: ``SNAP_SECONDS`` of video or ``SNAP_SHARD_FRACTION`` of
    a shard, whichever is smaller (0 for shards too short to move)."""
    return max(0, min(int(SNAP_SECONDS * frames_per_second), int(shard_frames * SNAP_SHARD_FRACTION)))


def planned_boundaries(num_frames: int, shard_frames: int) -> list[int]:
    """The first frames of every shard but the first, before any move to a cut."""
    return list(range(shard_frames, num_frames, shard_frames))


def search_ranges(num_frames: int, shard_frames: int, window: int) -> list[tuple[int, int]]:
    """Frames ``[start, stop)`` to look at for cuts: each planned boundary ± ``window``, plus the
    frame before (a cut at frame f is a change between frames f-1 and f)."""
    if window <= 0:
        return []
    return [(max(0, b - window - 1), min(num_frames, b + window + 1)) for b in planned_boundaries(num_frames, shard_frames)]


def plan_shards(
    num_frames: int,
    shard_frames: int,
    *,
    scene_cuts: Sequence[int] = (),
    keyframes: Sequence[int] = (),
    window: int = 0,
) -> list[Shard]:
    """Cut ``[0, num_frames)`` into consecutive shards of about ``shard_frames`` (the last may be
    shorter); each boundary moves to the nearest of ``scene_cuts`` within ``window`` frames, else
    to the nearest of ``keyframes`` within it (frame numbers; see the module docstring).

    Raises:
        ValueError: if ``num_frames`` or ``shard_frames`` is not positive.
    """
    if num_frames <= 0:
        raise ValueError(f"nothing to plan: {num_frames=}")
    if shard_frames <= 0:
        raise ValueError(f"shard size must be positive: {shard_frames=}")
    window = max(0, min(window, (shard_frames - 1) // 2))  # moved boundaries never meet
    cuts = sorted({c for c in scene_cuts if 0 < c < num_frames})
    keys = sorted({k for k in keyframes if 0 < k < num_frames})
    starts = [0]
    for planned in planned_boundaries(num_frames, shard_frames):
        moved = _nearest(cuts, planned, window)
        if moved is None:
            moved = _nearest(keys, planned, window)
        start = planned if moved is None else moved
        if start > starts[-1]:
            starts.append(start)
    stops = starts[1:] + [num_frames]
    return [Shard(index=i, start=a, stop=b) for i, (a, b) in enumerate(zip(starts, stops))]


def _nearest(sorted_frames: list[int], target: int, window: int) -> int | None:
    """The frame of ``sorted_frames`` nearest ``target`` within ``window`` (the earlier on a tie)."""
    if window <= 0:
        return None
    i = bisect.bisect_left(sorted_frames, target - window)
    best = None
    while i < len(sorted_frames) and sorted_frames[i] <= target + window:
        if best is None or abs(sorted_frames[i] - target) < abs(best - target):
            best = sorted_frames[i]
        i += 1
    return best


# ----------------------------------------------------------------------------------------------
# Output geometry


@dataclass(frozen=True, slots=True)
class Geometry:
    """``outscale`` is what the models are asked for; ``picture`` is the enhanced picture's size
    (the models' output is resized to it when it is not ``outscale`` times the source, which
    happens only for anamorphic sources); ``canvas`` is the output frame size."""

    outscale: float
    picture: tuple[int, int]  # (width, height) of the enhanced picture
    canvas: tuple[int, int]  # (width, height) of the output frame
    sample_aspect_ratio: tuple[int, int] = (1, 1)  # the output's SAR tag (num, den)

    @property
    def offset(self) -> tuple[int, int]:
        return (self.canvas[0] - self.picture[0]) // 2, (self.canvas[1] - self.picture[1]) // 2


def output_sar(
    sample_aspect_ratio: tuple[int, int], target: tuple[int, int] | None, square_pixels: bool
) -> tuple[int, int]:
    """The output's SAR: the source's with ``--scale`` (the pixels keep their shape), square with
    ``--target`` or ``--square-pixels`` (the picture is resampled to its display aspect)."""
    return (1, 1) if target is not None or square_pixels else tuple(sample_aspect_ratio)  # type: ignore[return-value]


def plan_geometry(
    width: int,
    height: int,
    model_scale: int,
    scale: float | None,
    target: tuple[int, int] | None,
    sample_aspect_ratio: tuple[int, int] = (1, 1),
    square_pixels: bool = False,
) -> Geometry:
    """Work out the output geometry for a ``width`` x ``height`` source whose pixels are
    ``sample_aspect_ratio`` (num, den) wide.

    Raises:
        UsageError: both ``scale`` and ``target`` were given, or the picture would vanish.
        OutputError: the output frame would be larger than the encoders accept.
    """
    if scale is not None and target is not None:
        raise UsageError("--scale and --target both set the output size; pass only one")
    sar = Fraction(*sample_aspect_ratio)
    resample = sar != 1 and (target is not None or square_pixels)  # to square pixels
    if target is None:
        outscale = float(scale) if scale is not None else float(model_scale)
        picture = (int(width * outscale), int(height * outscale))
        if resample:
            picture = (max(1, round(width * sar * Fraction(outscale))), picture[1])
        canvas = picture
    elif not resample:
        outscale = min(target[0] / width, target[1] / height)
        picture = (min(int(width * outscale), target[0]), min(int(height * outscale), target[1]))
        canvas = target
    else:
        fit = min(Fraction(target[0]) / (width * sar), Fraction(target[1], height))
        picture = (min(round(width * sar * fit), target[0]), min(round(height * fit), target[1]))
        outscale = float(fit)
        canvas = target
    if resample:
        outscale = float(model_scale)  # the models' own size; one resize to the picture after them
    if min(picture) < 1:
        raise UsageError(f"--scale {scale} makes a {width}x{height} picture vanish; use a larger scale")
    # x264 and x265 refuse sides over 16384; FFmpeg refuses any frame of (w+128)*(h+128) >= 2^28.
    if max(canvas) > MAX_OUTPUT_SIDE or (canvas[0] + 128) * (canvas[1] + 128) >= 2**31 // 8:
        raise OutputError(
            f"the output would be {canvas[0]}x{canvas[1]}, larger than the encoders accept "
            f"({MAX_OUTPUT_SIDE} per side, about 268 million pixels per frame); use a smaller --scale or a --target such as 2160p"
        )
    return Geometry(outscale, picture, canvas, output_sar(sample_aspect_ratio, target, square_pixels))
