"""Encoders: each shard becomes one self-contained chunk (a NUT file, one video stream) in the OUTPUT
codec, with settings that depend only on the job, never on the shard or the node, so a chunk redone
elsewhere is byte-identical. Over 300 lines: the determinism rules of five encoders interact."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import platform
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Sequence, cast

import av
import numpy as np

from farm.config import CHUNK_FORMAT, CODEC_SPECS, RGB_CODECS
from farm.errors import EncodeError, UsageError
from farm.media import Colour, mean_rate
from farm.plan import EncoderSizing
from farm.video.color import encoder_options, from_bgr, tag

log = logging.getLogger(__name__)
#: SVT-AV1 prints its whole configuration to stderr each time an encoder opens (once per chunk and
#: in the driver's container check) unless told otherwise; errors only, unless the user set it.
os.environ.setdefault("SVT_LOG", "1")

#: Encoder threads per chunk: one per started megapixel of output frame, at most this many.
MAX_ENCODER_THREADS = 8
#: x264's CPU flags for the x86-64-v3 level (x264.h: MMX..SSE4.2, AVX, FMA3, BMI1, BMI2, AVX2,
#: CACHELINE_64); no AVX-512: its paths gave a different bitstream on each run of the same frames,
#: and each SIMD level gives its own, so every node that can is pinned to this one set.
X264_ASM_AVX2 = (1 << 0 | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 9
                 | 1 << 12 | 1 << 13 | 1 << 14 | 1 << 15 | 1 << 18)
_X86_64_V3 = ("avx2", "fma", "bmi1", "bmi2", "abm", "sse4_2")
#: x265 given this few frames with B-frames allowed sometimes returns a packet with a garbage dts
#: (about -6e13, seen in 1 of 10 two-frame encodes here). A video that short gains nothing from
#: B-frames; the rule looks at the whole video, so every chunk of a job has the same settings.
X265_FEW_FRAMES = 2


def output_pix_fmt(codec: str, pix_fmt: str | None, high_bit_depth: bool) -> str:
    """The pixel format the video is encoded in: ``--pix-fmt`` if given, else 8-bit, or 10-bit for
    a high bit depth source where the codec has a 10-bit mode (x264, x265, AV1).

    Raises:
        UsageError: the codec cannot encode ``pix_fmt``, or the codec keeps RGB as it is.
    """
    spec = CODEC_SPECS[codec]
    if pix_fmt is None:
        return spec.pix_fmt_high if high_bit_depth else spec.pix_fmt_8bit
    if codec in RGB_CODECS:
        raise UsageError(
            f"--pix-fmt does not apply to --codec {codec}: it writes RGB as the model made it "
            f"({spec.pix_fmt_8bit}, or {spec.pix_fmt_high} for high bit depth sources); drop --pix-fmt"
        )
    allowed = [f.name for f in av.codec.Codec(spec.encoder, "w").video_formats or ()]
    if pix_fmt not in allowed:
        raise UsageError(f"--codec {codec} cannot encode --pix-fmt {pix_fmt}; it takes {', '.join(allowed)}")
    return pix_fmt


def encodable_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """The largest size at most ``width`` x ``height`` that ``pix_fmt`` can hold: chroma
    subsampled formats (4:2:0, 4:2:2) need even sides, so an odd side loses its last pixel row or
    column (cropped, never scaled or padded with invented pixels)."""
    fmt = av.VideoFormat(pix_fmt)
    if fmt.chroma_width(2) < 2:
        width -= width % 2
    if fmt.chroma_height(2) < 2:
        height -= height % 2
    return width, height


def encoder_threads(codec: str, width: int, height: int) -> int:
    """Encoder threads for one chunk: one per started megapixel, at most MAX_ENCODER_THREADS
    (PNG: 1). A function of the job alone, so a redone chunk is byte-identical."""
    if codec == "png":
        return 1
    return max(1, min(MAX_ENCODER_THREADS, math.ceil(width * height / 1_000_000)))


def ffv1_slices(width: int, height: int) -> int:
    """FFV1's slice count (it decides the bitstream): 4, or 1 for frames under 64x64 pixels."""
    return 4 if width * height >= 64 * 64 else 1


def x264_asm() -> int | None:
    """The SIMD set x264 is pinned to on this CPU: :data:`X264_ASM_AVX2` where the CPU has it,
    else None (x264 detects its own, and its chunks may differ from other nodes')."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if all(flag in flags for flag in _X86_64_V3):
        return X264_ASM_AVX2
    log.warning("this CPU lacks AVX2/FMA/BMI2: x264 chunks made here may differ from other nodes' (still valid)")
    return None


@dataclass(frozen=True, slots=True)
class ChunkSettings:
    """Everything that decides a chunk's bitstream; the same for every chunk of a job."""

    codec: str
    encoder: str
    pix_fmt: str
    width: int
    height: int
    time_base: Fraction
    rate: Fraction  # the video's mean frame rate, a hint to rate control (timestamps are the source's)
    threads: int
    options: dict[str, str] = field(default_factory=dict)
    colour: Colour | None = None  # the source's matrix, range, primaries, transfer (and HDR metadata)
    sample_aspect_ratio: tuple[int, int] = (1, 1)  # the output's pixel aspect tag

    def to_json(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "encoder": self.encoder,
            "pix_fmt": self.pix_fmt,
            "width": self.width,
            "height": self.height,
            "time_base": str(self.time_base),
            "rate": str(self.rate),
            "threads": self.threads,
            "options": dict(sorted(self.options.items())),
            "colour": self.colour.to_json() if self.colour else None,
            "sample_aspect_ratio": list(self.sample_aspect_ratio),
        }


def chunk_settings(
    codec: str,
    crf: int,
    preset: str | None,
    pix_fmt: str | None,
    frame_size: tuple[int, int],
    high_bit_depth: bool,
    pts: Sequence[int],
    time_base: Fraction,
    *,
    colour: Colour | None = None,
    sample_aspect_ratio: tuple[int, int] = (1, 1),
    encoder: EncoderSizing | None = None,
) -> ChunkSettings:
    """The encoder settings of every chunk of a job with output ``codec`` and the model's output
    frames of ``frame_size`` (width, height) for a video with presentation times ``pts``.
    ``encoder``: the threads (and preset, where ``preset`` is None) the job recorded when it
    started on GPUs (:func:`farm.plan.size_encoder`); None: :func:`encoder_threads`' rule.

    Raises:
        UsageError: ``pix_fmt`` cannot be encoded by ``codec``.
    """
    spec = CODEC_SPECS[codec]
    fmt = output_pix_fmt(codec, pix_fmt, high_bit_depth)
    width, height = encodable_size(*frame_size, fmt)
    threads = encoder_threads(codec, width, height) if encoder is None else encoder.threads
    if encoder is not None and preset is None:
        preset = encoder.preset
    options: dict[str, str] = {}
    if codec not in ("png",):
        options["flags"] = "+bitexact"
    if codec in ("x264", "x264-lossless"):
        options["preset"] = preset or "medium"
        if codec == "x264":
            options["crf"] = str(crf)
        else:
            options["qp"] = "0"
        params = [f"threads={threads}", "sliced-threads=0"]
        asm = x264_asm()
        if asm is not None:
            params.append(f"asm={asm}")
        options["x264-params"] = ":".join(params)
    elif codec == "x265":
        options["preset"] = preset or "medium"
        options["crf"] = str(crf)
        params = ["log-level=error", f"pools={threads}", f"frame-threads={min(4, threads)}"]
        if len(pts) <= X265_FEW_FRAMES:
            params.append("bframes=0")  # see X265_FEW_FRAMES
        options["x265-params"] = ":".join(params)
    elif codec == "av1":
        if preset:
            options["preset"] = preset
        options["crf"] = str(crf)
        options["svtav1-params"] = f"lp={threads}"
    elif codec == "ffv1":
        # Intra-only with per-slice CRCs: any frame decodes alone and damage is detected.
        options.update({"level": "3", "g": "1", "slicecrc": "1", "slices": str(ffv1_slices(width, height))})
    if codec == "x265":
        extra = encoder_options(spec.encoder, colour).get("x265-params")
        if extra:
            options["x265-params"] += ":" + extra
    else:
        encoder_options(spec.encoder, colour)  # warns once that other encoders drop HDR mastering metadata
    # The exact mean of a long VFR video can have a denominator past FFmpeg's int rationals; rates
    # such as NTSC's 24000/1001 stay exact.
    rate = mean_rate(pts, time_base).limit_denominator(1001 * 1000)
    return ChunkSettings(codec, spec.encoder, fmt, width, height, time_base, rate, threads, options,
                         colour, (int(sample_aspect_ratio[0]), int(sample_aspect_ratio[1])))


class ChunkWriter:
    """Encodes one shard's frames, each at its source pts, into a chunk file at a local ``path``.

    Use as a context manager; leaving it by an exception closes the file without finishing it, and
    the caller discards it. After a clean exit, :attr:`info` describes the chunk for its receipt."""

    def __init__(self, path: str, settings: ChunkSettings) -> None:
        self.path = path
        self.settings = settings
        self.frames = 0
        self.info: dict[str, Any] = {}
        self._order: list[int] = []  # encoder pts of the packets, in decode order
        try:
            self._container = av.open(path, "w", format=CHUNK_FORMAT, container_options={"fflags": "+bitexact"})
            stream = cast("av.video.stream.VideoStream", self._container.add_stream(settings.encoder, rate=settings.rate))
            stream.width, stream.height, stream.pix_fmt = settings.width, settings.height, settings.pix_fmt
            stream.codec_context.time_base = settings.time_base
            stream.time_base = settings.time_base
            stream.options = dict(settings.options)
            stream.thread_count = settings.threads
            stream.thread_type = "SLICE" if settings.codec == "ffv1" else "FRAME"
            if settings.sample_aspect_ratio != (1, 1):
                stream.codec_context.sample_aspect_ratio = Fraction(*settings.sample_aspect_ratio)
            tag(stream, settings.colour)
            self._stream = stream
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise EncodeError(f"cannot create chunk {path}: {exc}") from exc

    def write(self, pixels: np.ndarray, pts: int) -> None:
        """Encode one frame (BGR, 8 or 16 bits) presented at ``pts`` (source time base)."""
        s = self.settings
        if pixels.shape[1] != s.width or pixels.shape[0] != s.height:
            pixels = np.ascontiguousarray(pixels[: s.height, : s.width])
        frame = from_bgr(pixels, s.pix_fmt, s.colour)
        frame.pts = pts
        frame.time_base = s.time_base
        try:
            self._mux(self._stream.encode(frame))
        except (av.error.FFmpegError, OSError) as exc:
            raise EncodeError(f"cannot encode the frame at pts {pts} into chunk {self.path}: {exc}") from exc
        self.frames += 1

    def _mux(self, packets) -> None:
        for packet in packets:
            assert packet.pts is not None, "encoders give every packet a pts"
            self._order.append(packet.pts)
            self._container.mux(packet)

    def close(self) -> None:
        try:
            self._mux(self._stream.encode(None))
        finally:
            self._container.close()
        self.info = self._describe()

    def _describe(self) -> dict[str, Any]:
        """What the tail needs: the stream's parameters, the reorder delay and the muxer's shift."""
        with av.open(self.path) as chunk:
            stream = chunk.streams.video[0]
            params = chunk_params(stream)
            first = next((p for p in chunk.demux(stream) if p.size), None)
            shift = 0
            if first is not None and first.pts is not None and self._order:
                # NUT stores no negative timestamps: its muxer shifts a chunk whose first dts is
                # negative (B-frames) by a constant; the tail takes it off again.
                shift = int(first.pts * Fraction(stream.time_base or self.settings.time_base) / self.settings.time_base) - self._order[0]
        return {
            **params,
            "reorder_delay": reorder_delay(self._order),
            "pts_shift": shift,
            "settings": self.settings.to_json(),
        }

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._container.close()


def chunk_params(stream) -> dict[str, Any]:
    """The parameters two chunks must share to be concatenated (one codec header for all)."""
    ctx = stream.codec_context
    extradata = bytes(ctx.extradata or b"")
    return {
        "codec": ctx.codec.canonical_name if ctx.codec is not None else "none",
        "width": ctx.width,
        "height": ctx.height,
        "pix_fmt": ctx.format.name if ctx.format is not None else None,
        "profile": ctx.profile,
        "extradata_sha256": hashlib.sha256(extradata).hexdigest(),
    }


def reorder_delay(decode_order_pts: Sequence[int]) -> int:
    """How many packets a frame can come after the first frame it precedes in presentation: the
    smallest D with sorted_pts[k - D] <= pts[k] for every decode position k."""
    rank = {p: r for r, p in enumerate(sorted(decode_order_pts))}
    return max([0] + [k - rank[p] for k, p in enumerate(decode_order_pts)])


def check_encoder(settings: ChunkSettings) -> None:
    """Open the encoder once with ``settings`` before any work, so that an option it refuses
    (``--preset`` of another codec's names, a CRF outside its range) is one line now, not a
    failure of every shard later.

    Raises:
        UsageError: naming the codec, the settings and FFmpeg's reason.
    """
    ctx = av.CodecContext.create(settings.encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = settings.width, settings.height, settings.pix_fmt  # type: ignore[attr-defined]
    ctx.time_base = settings.time_base
    ctx.framerate = settings.rate  # type: ignore[attr-defined]
    ctx.options = dict(settings.options)
    try:
        ctx.open()
    except (av.error.FFmpegError, ValueError) as exc:
        shown = {k: v for k, v in settings.options.items() if k in ("preset", "crf", "qp")}
        reason = getattr(exc, "strerror", None) or exc
        raise UsageError(f"--codec {settings.codec} refuses these settings ({shown}): {reason}; check --preset and --crf") from None
