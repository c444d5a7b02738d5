"""OpenCV's LANCZOS4 ``cv2.resize`` for 8-bit images, and the placing of the upscaled picture on its
canvas, in torch on the frames' device (imported lazily), so only the canvas-sized uint8 frame
crosses to the host. Bit-exact: OpenCV's own fixed-point arithmetic (the tests allow ±1)."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from farm.plan import Geometry

#: resize.cpp's INTER_RESIZE_COEF_BITS: 8-bit images are filtered with 11-bit integer coefficients.
COEF_BITS = 11
TAPS = 8
_S45 = 0.70710678118654752440084436210485
#: interpolateLanczos4's table: (sin, cos) factors of each tap's sin(pi * (t + 3 - i) / 4).
_CS = ((1, 0), (-_S45, -_S45), (0, 1), (_S45, -_S45), (-1, 0), (_S45, _S45), (0, -1), (-_S45, _S45))


def lanczos4_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """The source indices (int64, replicated into ``[0, src)``) and integer weights (int32, 11-bit
    fixed point) of the 8 taps of each of ``dst`` outputs along one axis of ``src`` inputs, both of
    shape ``(8, dst)``, computed as resize.cpp computes them (float32 where it uses float)."""
    if src < 1 or dst < 1:
        raise ValueError(f"cannot resize {src} pixels to {dst}; both sizes must be at least 1")
    scale = 1.0 / (dst / src)  # resize.cpp: scale_x = 1. / inv_scale_x, in double
    fx = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    sx = np.floor(fx)
    t = (fx - sx).astype(np.float32)
    angle = -(t + np.float32(3)).astype(np.float64) * math.pi * 0.25
    s0, c0 = np.sin(angle), np.cos(angle)
    coeffs = np.empty((TAPS, dst), np.float32)
    for i, (cs_sin, cs_cos) in enumerate(_CS):
        y0 = (t + np.float32(3 - i)).astype(np.float32)
        y = -y0.astype(np.float64) * math.pi * 0.25
        with np.errstate(divide="ignore", invalid="ignore"):
            value = ((cs_sin * s0 + cs_cos * c0) / (y * y)).astype(np.float32)
        # interpolateLanczos4: a tap at distance ~0 gets 1e30, which the normalisation makes 1.
        coeffs[i] = np.where(np.abs(y0) >= np.float32(1e-6), value, np.float32(1e30))
    total = np.zeros(dst, np.float32)
    for i in range(TAPS):  # summed in this order, in float32
        total += coeffs[i]
    coeffs *= np.float32(1) / total
    weights = np.rint(coeffs * np.float32(1 << COEF_BITS)).astype(np.int32)  # saturate_cast<short>
    index = np.clip(sx.astype(np.int64)[None, :] - 3 + np.arange(TAPS)[:, None], 0, src - 1)
    return index, weights


@functools.lru_cache(maxsize=32)
def _device_taps(src: int, dst: int, device: Any) -> tuple[Any, Any]:
    import torch

    index, weights = lanczos4_taps(src, dst)
    return torch.from_numpy(index).to(device), torch.from_numpy(weights).to(device)


def lanczos4(batch: Any, size: tuple[int, int]) -> Any:
    """``cv2.resize(frame, size, interpolation=cv2.INTER_LANCZOS4)`` for every frame of ``batch``.

    Args:
        batch: a torch tensor ``(N, C, H, W)`` of 8-bit values (uint8, an integer type, or floats
            holding integers in 0..255), on any device.
        size: ``(width, height)`` of the result, as cv2 takes it.

    Returns:
        The resized batch ``(N, C, height, width)``, on the same device, of ``batch``'s dtype,
        holding OpenCV's values (rounded and clamped to 0..255).

    Raises:
        ValueError: a size below 1, or a batch that is not 4-dimensional.
    """
    import torch

    if batch.ndim != 4:
        raise ValueError(f"lanczos4 takes a (N, C, H, W) batch, got shape {tuple(batch.shape)}")
    width, height = size
    src_h, src_w = batch.shape[2], batch.shape[3]
    if (width, height) == (src_w, src_h):
        return batch.clone()  # cv2.resize copies
    x = batch.to(torch.int32)
    # The 2-D sum is exact in int32 (as in OpenCV), so the pass order does not change a value:
    # take the order with fewer multiply-adds.
    if width * src_h <= src_w * height:
        x = _pass(x, 3, src_w, width)
        x = _pass(x, 2, src_h, height)
    else:
        x = _pass(x, 2, src_h, height)
        x = _pass(x, 3, src_w, width)
    x = x.add_(1 << (2 * COEF_BITS - 1)).bitwise_right_shift_(2 * COEF_BITS).clamp_(0, 255)
    return x.to(batch.dtype)


def _pass(x: Any, dim: int, src: int, dst: int) -> Any:
    """One axis of the filter: 8 gathers and multiply-adds, no rounding (int32 sums)."""
    if src == dst:
        return x * (1 << COEF_BITS)  # the identity: one tap of weight 2048
    index, weights = _device_taps(src, dst, x.device)
    shape = [1] * x.ndim
    shape[dim] = dst
    out = None
    for k in range(TAPS):
        term = x.index_select(dim, index[k]).mul_(weights[k].view(shape))
        out = term if out is None else out.add_(term)
    return out


def place_on_device(batch: Any, size: tuple[int, int], geometry: Geometry) -> Any:
    """The output frames for a batch of model outputs, as the CPU path makes them: resized to
    ``size`` (RealESRGANer's ``int(w * outscale) x int(h * outscale)``) if they are not, then to
    ``geometry.picture`` if that differs (anamorphic sources), then centred on black at
    ``geometry.offset`` on a ``geometry.canvas`` frame. Each resize rounds to 8 bits, as the CPU path does.

    Args:
        batch: ``(N, C, H, W)`` 8-bit values (any dtype holding them), on the device.
        size: ``(width, height)`` the models' output is resized to first.
        geometry: the job's output geometry.

    Returns:
        A uint8 tensor ``(N, canvas_height, canvas_width, C)`` on the batch's device (channels in
        ``batch``'s order), ready to download as frames.
    """
    import torch

    if (batch.shape[3], batch.shape[2]) != size:
        batch = lanczos4(batch, size)
    if size != geometry.picture:
        batch = lanczos4(batch, geometry.picture)
    picture = batch.to(torch.uint8).permute(0, 2, 3, 1)
    if geometry.picture == geometry.canvas:
        return picture.contiguous()
    (cw, ch), (pw, ph), (x, y) = geometry.canvas, geometry.picture, geometry.offset
    canvas = torch.zeros((batch.shape[0], ch, cw, batch.shape[1]), dtype=torch.uint8, device=batch.device)
    canvas[:, y : y + ph, x : x + pw] = picture
    return canvas
