"""Output geometry: how big the enhanced picture is and where it sits in the output frame.

With ``--target`` the picture is fitted inside the target (aspect kept) and centred on a black
canvas of exactly the target size, as the single-machine script did with ffmpeg's scale+pad; the
model is asked for the fitted size directly, so there is one resize, not two.

Anamorphic sources (sample aspect ratio, SAR, not 1:1, e.g. a 16:9 DVD's 720x480 at 32:27) are
sized by their *display* aspect. ``--target`` fits the display picture, in square pixels, so a
16:9 DVD fills 1920x1080. ``--scale`` keeps the pixels' shape and tags the output with the source's
SAR (1440x960 at 32:27 plays as 16:9), unless ``--square-pixels`` asks for square pixels at the
display aspect (1707x960). A picture that is not a uniform scale of the source is made by the
models at their own scale and resized once to the picture (LANCZOS4, as RealESRGANer resizes)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from farm.config import MAX_OUTPUT_SIDE
from farm.errors import OutputError, UsageError


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


def place(picture: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Resize ``picture`` to the geometry's picture size if it is not (anamorphic sources), and
    centre it on a black canvas of the output size (a no-op without a target)."""
    h, w = picture.shape[:2]
    if (w, h) != geometry.picture:
        import cv2

        picture = cv2.resize(picture, geometry.picture, interpolation=cv2.INTER_LANCZOS4)
        h, w = picture.shape[:2]
    if (w, h) == geometry.canvas:
        return picture
    canvas = np.zeros((geometry.canvas[1], geometry.canvas[0], *picture.shape[2:]), dtype=picture.dtype)
    x, y = (geometry.canvas[0] - w) // 2, (geometry.canvas[1] - h) // 2
    canvas[y : y + h, x : x + w] = picture
    return canvas
