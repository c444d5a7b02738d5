"""Output geometry: how big the enhanced picture is and where it sits in the output frame.

With ``--target`` the picture is fitted inside the target (aspect kept) and centred on a black
canvas of exactly the target size, as the single-machine script did with ffmpeg's scale+pad; the
model is asked for the fitted size directly, so there is one resize, not two."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farm.config import MAX_OUTPUT_SIDE
from farm.errors import OutputError, UsageError


@dataclass(frozen=True, slots=True)
class Geometry:
    """``outscale`` is what the models are asked for; ``canvas`` is the output frame size."""

    outscale: float
    picture: tuple[int, int]  # (width, height) of the enhanced picture
    canvas: tuple[int, int]  # (width, height) of the output frame

    @property
    def offset(self) -> tuple[int, int]:
        return (self.canvas[0] - self.picture[0]) // 2, (self.canvas[1] - self.picture[1]) // 2


def plan_geometry(
    width: int, height: int, model_scale: int, scale: float | None, target: tuple[int, int] | None
) -> Geometry:
    """Work out the output geometry for a ``width`` x ``height`` source.

    Raises:
        UsageError: both ``scale`` and ``target`` were given, or the picture would vanish.
        OutputError: the output frame would be larger than the encoders accept.
    """
    if scale is not None and target is not None:
        raise UsageError("--scale and --target both set the output size; pass only one")
    if target is None:
        outscale = float(scale) if scale is not None else float(model_scale)
        picture = (int(width * outscale), int(height * outscale))
        canvas = picture
    else:
        outscale = min(target[0] / width, target[1] / height)
        picture = (min(int(width * outscale), target[0]), min(int(height * outscale), target[1]))
        canvas = target
    if min(picture) < 1:
        raise UsageError(f"--scale {scale} makes a {width}x{height} picture vanish; use a larger scale")
    # x264 and x265 refuse sides over 16384; FFmpeg refuses any frame of (w+128)*(h+128) >= 2^28.
    if max(canvas) > MAX_OUTPUT_SIDE or (canvas[0] + 128) * (canvas[1] + 128) >= 2**31 // 8:
        raise OutputError(
            f"the output would be {canvas[0]}x{canvas[1]}, larger than the encoders accept "
            f"({MAX_OUTPUT_SIDE} per side, about 268 million pixels per frame); use a smaller --scale or a --target such as 2160p"
        )
    return Geometry(outscale, picture, canvas)


def place(picture: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Centre ``picture`` on a black canvas of the output size (a no-op without a target)."""
    h, w = picture.shape[:2]
    if (w, h) == geometry.canvas:
        return picture
    canvas = np.zeros((geometry.canvas[1], geometry.canvas[0], *picture.shape[2:]), dtype=picture.dtype)
    x, y = (geometry.canvas[0] - w) // 2, (geometry.canvas[1] - h) // 2
    canvas[y : y + h, x : x + w] = picture
    return canvas
