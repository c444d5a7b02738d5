"""Colour: the source's matrix, primaries, transfer and range, used to convert YUV→RGB for the
models and RGB→YUV for the output exactly as a player would, and tagged on the output stream.
Untagged values are taken as players take them; transfer and primaries are carried, never converted."""

from __future__ import annotations

import logging
import struct
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from farm.media import MATRICES, Colour

log = logging.getLogger(__name__)

# FFmpeg's enum values and names (libavutil/pixfmt.h, av_color_*_name); the matrices' are farm.media's.
PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film", 9: "bt2020",
             10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "jedec-p22"}
TRANSFERS = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "linear", 9: "log100",
             10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12",
             16: "smpte2084", 17: "smpte428", 18: "arib-std-b67"}
RANGES = {1: "tv", 2: "pc"}
UNSPECIFIED = 2  # AVCOL_SPC/PRI/TRC_UNSPECIFIED
#: swscale's matrix codes (SWS_CS_*) for the matrices it converts; others fall back to BT.601.
_SWS = {"bt709": 1, "fcc": 4, "bt470bg": 5, "smpte170m": 5, "smpte240m": 7, "bt2020nc": 9, "bt2020c": 9}
#: The matrix/primaries/transfer players assume for untagged video of at least this many lines.
HD_LINES = 720


def _code(table: dict[int, str], name: str | None) -> int:
    return next((k for k, v in table.items() if v == name), UNSPECIFIED)


def colour_of(source: av.VideoFrame | av.video.stream.VideoStream, height: int | None = None) -> Colour:
    """The colour of a decoded frame (preferred: it has the decoder's tags and side data) or a
    stream, untagged parts filled in as players fill them in for a ``height``-line picture."""
    ctx = source.codec_context if isinstance(source, av.video.stream.VideoStream) else source
    height = height or source.height
    fmt = source.format.name if source.format is not None else ""
    tagged = (MATRICES.get(ctx.colorspace), RANGES.get(ctx.color_range),
              PRIMARIES.get(ctx.color_primaries), TRANSFERS.get(ctx.color_trc))
    matrix, rng, primaries, transfer = tagged
    if fmt and _is_rgb(fmt):  # decoded without a matrix; a YUV output gets the one players assume
        matrix = rng = None
    if height >= HD_LINES:
        guess = ("bt709", "bt709", "bt709")
    else:  # BT.601: 625-line (PAL, 576 lines) or 525-line (NTSC, 480) primaries, as mpv guesses
        guess = ("smpte170m", "bt470bg" if height > 480 else "smpte170m", "smpte170m")
    matrix = matrix or guess[0]
    primaries = primaries or guess[1]
    transfer = transfer or guess[2]
    rng = rng or ("pc" if fmt.startswith("yuvj") else "tv")
    if matrix == "gbr":  # a YUV-coded stream tagged RGB (rare, broken): read it as players guess
        matrix = guess[0]
    mastering = light = None
    if isinstance(source, av.VideoFrame):
        mastering, light = _hdr_metadata(source)
    return Colour(matrix, rng, primaries, transfer, None in tagged, mastering, light)


def _hdr_metadata(frame: av.VideoFrame) -> tuple[str | None, str | None]:
    """x265's ``master-display`` and ``max-cll`` strings from the frame's side data, if any."""
    mastering = light = None
    side: Any = frame.side_data  # a SideDataContainer (PyAV's stub says a TypedDict)
    md = bytes(side[SideDataType.MASTERING_DISPLAY_METADATA]) if SideDataType.MASTERING_DISPLAY_METADATA in side else b""
    if len(md) >= 88:
        # AVMasteringDisplayMetadata: primaries[3][2], white[2], min, max (AVRational each), has_*.
        r = struct.unpack("<20i2i", md[:88])
        q = [Fraction(r[2 * i], r[2 * i + 1] or 1) for i in range(10)]
        if r[20] and r[21]:  # has_primaries, has_luminance
            def c(v: Fraction) -> int:  # chromaticity, in x265's 0.00002 units
                return round(v * 50000)

            def lum(v: Fraction) -> int:  # luminance, in x265's 0.0001 cd/m² units
                return round(v * 10000)

            mastering = (f"G({c(q[2])},{c(q[3])})B({c(q[4])},{c(q[5])})R({c(q[0])},{c(q[1])})"
                         f"WP({c(q[6])},{c(q[7])})L({lum(q[9])},{lum(q[8])})")
    cll = bytes(side[SideDataType.CONTENT_LIGHT_LEVEL]) if SideDataType.CONTENT_LIGHT_LEVEL in side else b""
    if len(cll) >= 8:
        light = "{},{}".format(*struct.unpack("<2I", cll[:8]))  # MaxCLL, MaxFALL
    return mastering, light


def _is_rgb(pix_fmt: str) -> bool:
    """Not YUV: RGB, palette and grey formats have no matrix to convert with (grey is read as
    swscale reads it, as before)."""
    fmt = av.VideoFormat(pix_fmt)
    return fmt.is_rgb or len(fmt.components) < 3


def bgr_format(high_bit_depth: bool) -> str:
    """PyAV's name for the BGR arrays farm hands the models: 8 bits, or 16 for high bit depth."""
    return "bgr48le" if high_bit_depth else "bgr24"


def to_bgr(frame: av.VideoFrame, colour: Colour | None, high_bit_depth: bool) -> np.ndarray:
    """BGR pixels (uint8, or uint16 for high bit depth) of ``frame``, converted with ``colour``'s
    matrix and range (None: swscale's reading of the frame's own tags, farm's old behaviour)."""
    fmt = bgr_format(high_bit_depth)
    if colour is None or _is_rgb(frame.format.name):
        return frame.to_ndarray(format=fmt)
    rgb = frame.reformat(format=fmt, src_colorspace=_SWS.get(colour.matrix, 5), src_color_range=_range(colour))
    return rgb.to_ndarray()


def from_bgr(pixels: np.ndarray | av.VideoFrame, pix_fmt: str, colour: Colour | None) -> av.VideoFrame:
    """A ``pix_fmt`` frame of BGR ``pixels`` (an array, or an RGB frame), converted to YUV with
    ``colour``'s matrix and range and tagged with all of ``colour``."""
    if isinstance(pixels, np.ndarray):
        pixels = av.VideoFrame.from_ndarray(pixels, format=bgr_format(pixels.dtype == np.uint16))
    if colour is None:
        return pixels.reformat(format=pix_fmt)
    if _is_rgb(pix_fmt):
        frame = pixels.reformat(format=pix_fmt)
    else:
        frame = pixels.reformat(format=pix_fmt, dst_colorspace=_SWS.get(colour.matrix, 5), dst_color_range=_range(colour))
    _tag_frame(frame, colour, pix_fmt)
    return frame


def _range(colour: Colour) -> int:
    return 2 if colour.range == "pc" else 1


def _tag_frame(target, colour: Colour, pix_fmt: str) -> None:
    rgb = _is_rgb(pix_fmt)
    target.colorspace = 0 if rgb else _code(MATRICES, colour.matrix)
    target.color_range = 2 if rgb else _range(colour)
    target.color_primaries = _code(PRIMARIES, colour.primaries)
    target.color_trc = _code(TRANSFERS, colour.transfer)


def tag(stream, colour: Colour | None) -> None:
    """Tag an output stream (before its first frame) with ``colour``: matrix and range for YUV
    formats (RGB ones say RGB, full range), primaries and transfer as the source had them."""
    if colour is None:
        return
    _tag_frame(stream.codec_context, colour, stream.codec_context.pix_fmt or "")
    if colour.hdr and "sdr" not in _warned:
        _warned.add("sdr")
        log.warning("the source is HDR (%s): the models were trained on SDR video, so expect colour and "
                    "highlight shifts; the output keeps the source's transfer tags", colour.transfer)


_warned: set[str] = set()  # warnings given once per process


def encoder_options(encoder: str, colour: Colour | None) -> dict[str, str]:
    """Encoder options that carry what tagging the stream cannot: libx265's HDR10 SEI."""
    if colour is None or not colour.hdr:
        return {}
    if encoder == "libx265":
        params = []
        if colour.mastering:
            params.append(f"master-display={colour.mastering}")
        if colour.light:
            params.append(f"max-cll={colour.light}")
        if params:
            params.insert(0, "hdr10=1")
        return {"x265-params": ":".join(params)} if params else {}
    if (colour.mastering or colour.light) and "mastering" not in _warned:
        _warned.add("mastering")
        log.warning("the source's mastering-display/content-light metadata cannot be written by %s through "
                    "PyAV; the output keeps the HDR transfer tags only (use --codec x265 to keep it)", encoder)
    return {}
