"""Encoders: the lossless per-shard segment (FFV1, RGB, intra-only) and the final output codecs.

Segments carry frames in order and nothing else that matters: the mux takes every frame's pts from
the source's index, so a segment's own timestamps are only a frame counter."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
import numpy as np

from farm.errors import EncodeError, UsageError
from farm.video.color import Colour, tag

Codec = Literal["x264", "x265", "x264-lossless", "ffv1", "png"]
CODECS: tuple[str, ...] = ("x264", "x265", "x264-lossless", "ffv1", "png")
SEGMENT_CODEC: Codec = "ffv1"
SEGMENT_SUFFIX = ".mkv"
#: A nominal rate for segment timestamps; they only count frames (see the module docstring).
SEGMENT_RATE = 25


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """How one ``--codec`` choice is written."""

    encoder: str  # FFmpeg encoder name
    pix_fmt_8bit: str
    pix_fmt_high: str
    lossless: bool


CODEC_SPECS: dict[str, CodecSpec] = {
    "x264": CodecSpec("libx264", "yuv420p", "yuv420p10le", lossless=False),
    "x265": CodecSpec("libx265", "yuv420p", "yuv420p10le", lossless=False),
    "x264-lossless": CodecSpec("libx264rgb", "bgr24", "bgr24", lossless=True),
    "ffv1": CodecSpec("ffv1", "bgr0", "gbrp16le", lossless=True),
    "png": CodecSpec("png", "rgb24", "rgb48be", lossless=True),
}


def output_pix_fmt(codec: str, pix_fmt: str | None, high_bit_depth: bool) -> str:
    """The pixel format the final video is encoded in: ``--pix-fmt`` if given, else 8-bit, or
    10-bit for a high bit depth source where the codec has a 10-bit mode (x264, x265).

    Raises:
        UsageError: the codec cannot encode ``pix_fmt``, or the codec keeps the intermediate as is.
    """
    spec = CODEC_SPECS[codec]
    if pix_fmt is None:
        return spec.pix_fmt_high if high_bit_depth else spec.pix_fmt_8bit
    if codec in (SEGMENT_CODEC, "png"):
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


def array_format(pixels: np.ndarray) -> str:
    """PyAV's name for a BGR array of this dtype."""
    return "bgr48le" if pixels.dtype == np.uint16 else "bgr24"


class SegmentWriter:
    """Writes one shard's frames, losslessly, to a local file. Use as a context manager; leaving
    it by an exception closes the file without finishing it, and the caller discards it."""

    def __init__(self, path: str, width: int, height: int, high_bit_depth: bool, colour: Colour | None = None) -> None:
        self.path = path
        self.frames = 0
        try:
            self._container = av.open(path, "w", format="matroska")
            self._stream = self._container.add_stream("ffv1", rate=SEGMENT_RATE)
            self._stream.width, self._stream.height = width, height
            spec = CODEC_SPECS["ffv1"]
            self._stream.pix_fmt = spec.pix_fmt_high if high_bit_depth else spec.pix_fmt_8bit
            # Intra-only with per-slice CRCs: any frame decodes alone and damage is detected.
            self._stream.options = {"level": "3", "g": "1", "slicecrc": "1"}
            self._stream.thread_type = "AUTO"
            tag(self._stream, colour)  # RGB: the source's primaries and transfer travel with the pixels
        except (av.error.FFmpegError, OSError) as exc:
            raise EncodeError(f"cannot create segment {path}: {exc}") from exc

    def write(self, pixels: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(pixels, format=array_format(pixels))
        frame.pts = self.frames
        frame.time_base = Fraction(1, SEGMENT_RATE)
        try:
            self._container.mux(self._stream.encode(frame))
        except (av.error.FFmpegError, OSError) as exc:
            raise EncodeError(f"cannot encode frame {self.frames} of segment {self.path}: {exc}") from exc
        self.frames += 1

    def close(self) -> None:
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._container.close()
