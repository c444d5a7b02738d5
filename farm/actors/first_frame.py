"""The first-frame check before a long job: the first output frame must not be uniform or black where
its source frame is not, so a broken decode, corrupt weights or a driver fault stops the job in
seconds, naming what to check. Pure numpy, run by the worker on the job's first shard."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from farm.errors import BadOutput
from farm.plan import Geometry

log = logging.getLogger(__name__)

#: Black: the picture's brightest value is at most this share of full scale, while its source's
#: brightest is at least BRIGHT_SOURCE of it.
BLACK_MAX = 0.02
BRIGHT_SOURCE = 0.25


def verdict(source: np.ndarray, output: np.ndarray, geometry: Geometry | None) -> str | None:
    """What is wrong with ``output`` for ``source``: "NaN", "uniform", "black", or None when it is
    fine; "flat source" when the source itself is flat (no verdict possible)."""
    if np.issubdtype(source.dtype, np.integer) and _flat(source):
        return "flat source"
    picture = output
    if geometry is not None:
        (x, y), (w, h) = geometry.offset, geometry.picture
        if output.shape[:2] == (geometry.canvas[1], geometry.canvas[0]):
            picture = output[y : y + h, x : x + w]
    if np.issubdtype(picture.dtype, np.floating) and np.isnan(picture).any():
        return "NaN"
    if _flat(picture):
        return "uniform"
    full = float(np.iinfo(output.dtype).max) if np.issubdtype(output.dtype, np.integer) else 1.0
    source_full = float(np.iinfo(source.dtype).max) if np.issubdtype(source.dtype, np.integer) else 1.0
    if float(picture.max()) <= BLACK_MAX * full and float(source.max()) >= BRIGHT_SOURCE * source_full:
        return "black"
    return None


def _flat(image: np.ndarray) -> bool:
    flat = image.reshape(-1, image.shape[-1]) if image.ndim == 3 else image.reshape(-1, 1)
    return bool((flat == flat[0]).all())


class FirstFrameCheck:
    """Looks at the first shard's frames until one with a varied source has been judged."""

    def __init__(self, geometry: Geometry | None, what: str) -> None:
        self.geometry = geometry
        self.what = what  # the model and weights, for the message
        self.done = False

    def see(self, sources: Sequence[np.ndarray], outputs: Sequence[np.ndarray], numbers: Sequence[int]) -> None:
        """Judge the first frame with a varied source among these.

        Raises:
            BadOutput: naming the frame, what is wrong, and what to check.
        """
        for source, output, number in zip(sources, outputs, numbers):
            found = verdict(source, output, self.geometry)
            if found == "flat source":
                continue
            self.done = True
            if found is None:
                return
            value = output.reshape(-1, output.shape[-1])[0].tolist() if found == "uniform" else None
            detail = f" (every pixel {value})" if value is not None else ""
            raise BadOutput(
                f"first-frame check: output frame {number} is {found}{detail} though its source frame is not; "
                f"check the weights ({self.what}: re-fetch or verify them), the device and its driver (`farm doctor`), "
                "and the decode (`farm preview` shows the source frames)"
            )

    def finish(self) -> None:
        if not self.done:
            log.warning("first-frame check: every frame of the first shard is flat (a black intro?); nothing to judge")
