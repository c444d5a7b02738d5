"""Shards (half-open ranges of frame indices), the pure function that cuts a video into them with
boundaries moved to scene cuts or keyframes, and the output geometry. The plan depends only on the
frame count, the shard size and the cut lists in the job spec, so every run and actor gets the same."""

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


#: Frames per planned part of a shard (the most a drained worker redoes). A shard is encoded as
#: independent chunks of at most this many frames, each committed when done, so a worker given
#: notice (a spot node's preemption) keeps all but the part in progress. Each part starts with an
#: IDR frame: scripts/bench_part_cost.py (1200 frames 640x360, x264 CRF 18 medium, 240-frame
#: scene-aware shards) measured +0.91 % bytes at 120 (two parts per full shard), +1.53 % at 96,
#: +3.99 % at 80, +5.16 % at 60 over one chunk per shard; 120 keeps the cost under the 2 % goal
#: with room for other content. Shards of at most 120 frames (videos under about 5 minutes at
#: the default shard size) are one part, as before parts.
DEFAULT_PART_FRAMES = 120


def plan_parts(start: int, stop: int, part_frames: int | None) -> list[tuple[int, int]]:
    """The planned parts of shard ``[start, stop)``: ``ceil(frames / part_frames)`` ranges of
    near-equal length (none longer than ``part_frames``, no short tail part), in order; one part,
    the whole shard, when ``part_frames`` is None (a job planned before parts). A pure function of
    the shard and the job's spec, so every worker and every resume cuts a shard alike.

    Raises:
        ValueError: an empty shard, or ``part_frames`` below 1.
    """
    if not 0 <= start < stop:
        raise ValueError(f"empty or negative shard: {start=}, {stop=}")
    if part_frames is None:
        return [(start, stop)]
    if part_frames < 1:
        raise ValueError(f"part_frames must be at least 1, got {part_frames}")
    frames = stop - start
    n = math.ceil(frames / part_frames)
    bounds = [start + (i * frames) // n for i in range(n)] + [stop]
    return list(zip(bounds, bounds[1:]))


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
    to the nearest of ``keyframes`` within it (frame numbers; why: docs/design-notes.md).

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
        # Scene cuts win over keyframes: periodic keyframes lie in nearly every window and say
        # nothing about the content.
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


# ----------------------------------------------------------------------------------------------
# Encoder sizing: on GPU nodes the encode must keep up with the GPU on the node's own CPUs.

#: x264 CRF 18 CPU-ms per output megapixel per frame, by preset, on real footage: the 1080p case
#: of ``scripts/bench_cpu_side.py`` (AMD EPYC, 2026-12-06; 3416x1920 and 3840x2160 cost 6-15 %
#: less per megapixel); slower presets first.
X264_MS_PER_MPX = {"medium": 56.4, "fast": 47.8, "faster": 36.6, "veryfast": 24.1, "superfast": 15.7, "ultrafast": 8.8}
#: Everything else a frame costs the host, per output megapixel: decode, the download, face
#: alignment and the paste-back of 2 faces, the conversion to YUV (the same bench: 16-18).
HOST_MS_PER_MPX = 18.0
#: x265 costs about this many times x264 at the same preset name.
X265_FACTOR = 4.0
#: CPUs of each GPU's share kept for everything but the encode when the frame rate is not known.
RESERVED_CPUS = 2
#: Encoder threads at most (x264's frame threads stop scaling beyond about this many at 1080p-4K).
MAX_GPU_ENCODER_THREADS = 16
#: fp16 dense tensor TFLOP/s by Ray's ``accelerator_type`` (vendor data sheets).
GPU_TFLOPS = {"H200": 989, "H100": 989, "GH200": 989, "B200": 2250, "A100": 312, "L40S": 362, "L40": 181, "A10G": 125,
              "A10": 125, "L4": 121, "V100": 125, "T4": 65, "A40": 150, "RTX": 165}
#: Share of that peak the networks are assumed to reach when sizing (the encode must keep up even
#: then); the GPU of an unknown type is taken as the fastest listed of its generation (H100).
ROOFLINE_SHARE = 0.5
UNKNOWN_GPU_TFLOPS = 989


@dataclass(frozen=True, slots=True)
class EncoderSizing:
    """The encoder threads (and preset, where the user set none) a job's chunks are made with,
    chosen once when the job starts on a cluster with GPUs and recorded in its spec, so that every
    chunk, redone or not, on any node, has the same bitstream."""

    threads: int
    preset: str | None  # None: the user's --preset, or the codec's default
    cpus_per_gpu: int
    expected_fps: float | None  # per GPU, from the network's cost at ROOFLINE_SHARE
    why: str

    def to_json(self) -> dict:
        return {"threads": self.threads, "preset": self.preset, "cpus_per_gpu": self.cpus_per_gpu,
                "expected_fps": self.expected_fps, "why": self.why}

    @classmethod
    def from_json(cls, data: dict) -> EncoderSizing:
        return cls(int(data["threads"]), data.get("preset"), int(data["cpus_per_gpu"]), data.get("expected_fps"), data.get("why", ""))


def gpu_tflops(accelerator: str | None) -> float | None:
    """The fp16 peak of Ray's ``accelerator_type`` name (None: not in :data:`GPU_TFLOPS`)."""
    return next((v for k, v in GPU_TFLOPS.items() if accelerator and k.lower() in accelerator.lower()), None)


def expected_gpu_fps(flop_per_input_pixel: float, input_pixels: int, accelerator: str | None) -> float:
    """Frames per second one GPU of ``accelerator`` type gives at :data:`ROOFLINE_SHARE` of its peak."""
    tflops = gpu_tflops(accelerator) or UNKNOWN_GPU_TFLOPS
    return tflops * 1e12 * ROOFLINE_SHARE / (flop_per_input_pixel * input_pixels)


def size_encoder(codec: str, canvas: tuple[int, int], user_preset: str | None, cpus_per_gpu: int,
                 expected_fps: float | None) -> EncoderSizing:
    """Threads: the GPU's share of its node's CPUs less what the rest of the host's work takes at
    ``expected_fps`` (:data:`HOST_MS_PER_MPX`; :data:`RESERVED_CPUS` when the rate is not known).
    Preset (x264/x265 without ``--preset``): the slowest whose CPU time per frame at
    ``expected_fps`` fits those threads, down to ``ultrafast`` (then the GPUs will wait on the
    encode: ``why`` says so)."""
    mpx = canvas[0] * canvas[1] / 1e6
    host = RESERVED_CPUS if expected_fps is None else HOST_MS_PER_MPX * mpx * expected_fps / 1000
    threads = 1 if codec == "png" else max(1, min(MAX_GPU_ENCODER_THREADS, math.floor(cpus_per_gpu - host)))
    share = f"{threads} thread{'s' if threads != 1 else ''} ({cpus_per_gpu} CPUs per GPU less {host:.3g} for the rest)"
    if codec not in ("x264", "x265") or expected_fps is None:
        return EncoderSizing(threads, None, cpus_per_gpu, expected_fps, share)
    factor = X265_FACTOR if codec == "x265" else 1.0
    budget_ms = threads * 1000 / expected_fps
    need = {p: ms * mpx * factor for p, ms in X264_MS_PER_MPX.items()}
    if user_preset is not None:
        ms = need.get(user_preset)
        why = f"--preset {user_preset}, {share}"
        if ms is not None and ms > budget_ms:
            why += (f"; it needs {ms * expected_fps / 1000:.0f} CPUs per GPU at {expected_fps:.0f} fps: the GPUs will wait on "
                    "the encode (a faster --preset, or nodes with more CPUs per GPU)")
        return EncoderSizing(threads, None, cpus_per_gpu, expected_fps, why)
    preset = next((p for p, ms in need.items() if ms <= budget_ms), "ultrafast")
    why = f"{preset}: {need[preset]:.0f} CPU-ms per {canvas[0]}x{canvas[1]} frame at {expected_fps:.0f} fps per GPU, {share}"
    if need[preset] > budget_ms:
        why += f"; even {preset} needs {need[preset] * expected_fps / 1000:.0f} CPUs per GPU: the GPUs will wait on the encode"
    return EncoderSizing(threads, preset, cpus_per_gpu, expected_fps, why)
