"""The face path's fast version of ``GFPGANer.enhance(frame, paste_back=True)`` (all faces, unaligned)
for 8-bit frames whose background is already upscaled, equal within ±1; torch is imported lazily.
Only where the work happens differs from GFPGANer: batched, on the device, pasted per face."""

from __future__ import annotations

import functools
import time
from typing import Any, Sequence

import numpy as np

#: facexlib's parser classes kept in the paste mask (255) or dropped (0): background, neck, cloth,
#: hair and hat are dropped (face_restoration_helper.paste_faces_to_input_image's MASK_COLORMAP).
PARSE_COLORMAP = (0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0)
FACE_SIZE = 512


class FacePath:
    """Detects, restores and pastes faces with a GFPGANer's own networks and face helper.

    ``model_s``: seconds spent in GFPGAN's and the parser's calls with their transfers (the
    detector, with its host-side pre- and post-processing, is not counted), over the path's life."""

    def __init__(self, restorer: Any, device: str, face_batch: int, blur_on_device: bool | None = None) -> None:
        self.restorer = restorer
        self.helper = restorer.face_helper
        self.device = device
        self.face_batch = max(1, face_batch)
        self.blur_on_device = device == "cuda" if blur_on_device is None else blur_on_device
        self.model_s = 0.0

    def __call__(self, frames: Sequence[np.ndarray], backgrounds: Sequence[np.ndarray], weight: float,
                 in_place: bool = False) -> tuple[list[np.ndarray], int]:
        """The output frames (each frame's faces pasted onto its background) and the number of faces.

        With ``in_place`` the faces are written into the given backgrounds (writable arrays of the
        outscale size, e.g. the picture's region of an output frame), which are the output frames.

        Raises:
            RuntimeError: from the networks, e.g. out of device memory.
        """
        found = [self._detect(frame) for frame in frames]
        crops = [crop for frame_crops, _ in found for crop in frame_crops]
        if not crops:
            return list(backgrounds), 0
        faces, masks = self._restore(crops, weight)
        out, k = [], 0
        for frame, (frame_crops, affines), bg in zip(frames, found, backgrounds):
            n = len(frame_crops)
            out.append(self._paste(frame, bg, faces[k : k + n], masks[k : k + n], affines, in_place) if n else bg)
            k += n
        return out, len(crops)

    def _detect(self, frame: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        helper = self.helper
        helper.clean_all()
        helper.read_image(frame)
        helper.get_face_landmarks_5(only_center_face=False, eye_dist_threshold=5)
        helper.align_warp_face()
        found = list(helper.cropped_faces), list(helper.affine_matrices)
        helper.clean_all()
        return found

    def _restore(self, crops: list[np.ndarray], weight: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Restored faces (uint8 BGR) and their paste masks (float64 in [0, 1]), as GFPGANer and
        facexlib compute them."""
        import torch

        faces: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        lut = torch.tensor(PARSE_COLORMAP, dtype=torch.float64, device=self.device)
        for i in range(0, len(crops), self.face_batch):
            start = time.perf_counter()
            batch = torch.from_numpy(np.stack(crops[i : i + self.face_batch])).to(self.device)
            with torch.inference_mode():
                # GFPGANer: crop / 255. in float64, then float32 RGB, normalised to [-1, 1].
                x = batch.permute(0, 3, 1, 2).flip(1).double().div_(255).float().sub_(0.5).div_(0.5).contiguous()
                out = self.restorer.gfpgan(x, return_rgb=False, weight=weight)[0]
                # basicsr's tensor2img with min_max (-1, 1): clamp, to [0, 1], * 255, round.
                restored = out.float().clamp_(-1, 1).add_(1).div_(2).mul_(255.0).round_().to(torch.uint8)
                # facexlib's parser input: the restored face (uint8) / 255. in float32, normalised.
                parse_in = restored.float().div_(255.0).sub_(0.5).div_(0.5)
                classes = self.helper.face_parse(parse_in)[0].argmax(dim=1)
                hard = lut[classes]
                soft = (_blur_twice(hard) if self.blur_on_device else hard).cpu().numpy()
                faces.extend(restored.flip(1).permute(0, 2, 3, 1).contiguous().cpu().numpy())
            self.model_s += time.perf_counter() - start
            for m in soft:
                if not self.blur_on_device:
                    m = _blur_twice_cv2(m)
                m[:10, :] = 0
                m[-10:, :] = 0
                m[:, :10] = 0
                m[:, -10:] = 0
                masks.append(m / 255.0)
        return faces, masks

    def _paste(self, frame: np.ndarray, bg: np.ndarray, faces: list[np.ndarray], masks: list[np.ndarray], affines: list[np.ndarray],
               in_place: bool = False) -> np.ndarray:
        """facexlib's paste_faces_to_input_image, computed inside each face's footprint only; with
        ``in_place``, written into ``bg`` itself (which must then have the outscale size)."""
        import cv2

        up = self.helper.upscale_factor
        h, w = frame.shape[:2]
        h_up, w_up = int(h * up), int(w * up)
        if bg.shape[:2] != (h_up, w_up):
            if in_place:
                raise ValueError(f"cannot paste faces in place into a {bg.shape[1]}x{bg.shape[0]} background; "
                                 f"the faces are pasted at the outscale size, {w_up}x{h_up}")
            bg = cv2.resize(bg, (w_up, h_up), interpolation=cv2.INTER_LANCZOS4)
        placed = []
        for face, mask, affine in zip(faces, masks, affines):
            inverse = cv2.invertAffineTransform(affine)
            inverse *= up
            if up > 1:  # facexlib's "extra offset, for more precise back alignment"
                inverse[:, 2] += 0.5 * up
            box = footprint(inverse, w_up, h_up)
            if box is not None:
                placed.append((face, mask, inverse, box))
        if not placed:
            return bg
        ux0, uy0 = min(b[3][0] for b in placed), min(b[3][1] for b in placed)
        ux1, uy1 = max(b[3][2] for b in placed), max(b[3][3] for b in placed)
        # Faces blend one after the other in float64, as facexlib does, so overlaps stay exact.
        work = bg[uy0:uy1, ux0:ux1].astype(np.float64)
        for face, mask, inverse, (x0, y0, x1, y1) in placed:
            pasted = warp_roi(face, inverse, (x0, y0, x1, y1), w_up, h_up)
            soft = warp_roi(mask, inverse, (x0, y0, x1, y1), w_up, h_up)[:, :, None]
            region = work[y0 - uy0 : y1 - uy0, x0 - ux0 : x1 - ux0]
            region[...] = soft * pasted + (1 - soft) * region
        out = bg if in_place else bg.copy()
        out[uy0:uy1, ux0:ux1] = work.astype(np.uint8)
        return out


# ----------------------------------------------------------------------------------------------
# Blurs: cv2.GaussianBlur(mask, (101, 101), 11), twice, on float64 with reflect-101 borders.


def _blur_twice_cv2(mask: np.ndarray) -> np.ndarray:
    import cv2

    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    return cv2.GaussianBlur(mask, (101, 101), 11)


def _blur_twice(masks):
    """The same two blurs on the device, as separable float64 convolutions (torch's "reflect"
    padding is OpenCV's BORDER_REFLECT_101, GaussianBlur's default)."""
    import cv2
    import torch
    import torch.nn.functional as F

    kernel = torch.from_numpy(cv2.getGaussianKernel(101, 11, cv2.CV_64F).reshape(-1)).to(masks.device)
    row, col = kernel.view(1, 1, 1, -1), kernel.view(1, 1, -1, 1)
    x = masks.unsqueeze(1)
    for _ in range(2):
        x = F.conv2d(F.pad(x, (50, 50, 0, 0), mode="reflect"), row)
        x = F.conv2d(F.pad(x, (0, 0, 50, 50), mode="reflect"), col)
    return x.squeeze(1)


# ----------------------------------------------------------------------------------------------
# Warping a face (or its mask) into one region of the output, with the pixels cv2.warpAffine
# would give for that region of the whole output frame.


def footprint(matrix: np.ndarray, width: int, height: int, size: int = FACE_SIZE) -> tuple[int, int, int, int] | None:
    """The output region ``(x0, y0, x1, y1)`` outside which ``cv2.warpAffine(src, matrix, (width,
    height))`` of a ``size`` square is zero (None when it misses the output)."""
    corners = np.array([[-2, -2, 1], [size + 2, -2, 1], [-2, size + 2, 1], [size + 2, size + 2, 1]], dtype=np.float64)
    mapped = corners @ np.asarray(matrix, dtype=np.float64).T
    x0 = max(int(np.floor(mapped[:, 0].min())) - 2, 0)
    y0 = max(int(np.floor(mapped[:, 1].min())) - 2, 0)
    x1 = min(int(np.ceil(mapped[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(mapped[:, 1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def warp_roi(src: np.ndarray, matrix: np.ndarray, box: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """``cv2.warpAffine(src, matrix, (width, height))[y0:y1, x0:x1]`` (INTER_LINEAR, zero border),
    computed for the region only: exactly where OpenCV's fixed-point warp is used, within ±1
    where its newer float warp is (uint8 since OpenCV 4.11)."""
    import cv2

    x0, y0, x1, y1 = box
    method = _roi_methods()[src.dtype == np.uint8]
    if method == "remap":
        xy, table = fixed_point_maps(matrix, box)
        return cv2.remap(src, xy, table, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if method == "shift":
        shifted = np.array(matrix, dtype=np.float64)
        shifted[0, 2] -= x0
        shifted[1, 2] -= y0
        return cv2.warpAffine(src, shifted, (x1 - x0, y1 - y0))
    return cv2.warpAffine(src, matrix, (width, height))[y0:y1, x0:x1]


def fixed_point_maps(matrix: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The integer map (CV_16SC2) and interpolation-table map (CV_16UC1) OpenCV's WarpAffineInvoker
    builds for the output pixels in ``box``: the inverse matrix, then per pixel
    ``(round(M0*x*1024) + round((M1*y + M2)*1024) + 16) >> 5`` in 1/32 pixel units."""
    m0, m1, m2, m3, m4, m5 = (float(v) for v in np.asarray(matrix, dtype=np.float64).reshape(-1))
    d = m0 * m4 - m1 * m3
    d = 1.0 / d if d != 0 else 0.0
    a11, a22 = m4 * d, m0 * d
    m0, m1, m3, m4 = a11, m1 * -d, m3 * -d, a22
    m2, m5 = -m0 * m2 - m1 * m5, -m3 * m2 - m4 * m5
    x0, y0, x1, y1 = box
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)
    ax = np.rint(m0 * xs * 1024).astype(np.int64)
    ay = np.rint(m3 * xs * 1024).astype(np.int64)
    bx = np.rint((m1 * ys + m2) * 1024).astype(np.int64) + 16
    by = np.rint((m4 * ys + m5) * 1024).astype(np.int64) + 16
    sx = (bx[:, None] + ax[None, :]) >> 5
    sy = (by[:, None] + ay[None, :]) >> 5
    xy = np.stack([np.clip(sx >> 5, -32768, 32767), np.clip(sy >> 5, -32768, 32767)], axis=-1).astype(np.int16)
    table = ((sy & 31) * 32 + (sx & 31)).astype(np.uint16)
    return xy, table


@functools.lru_cache(maxsize=1)
def _roi_methods() -> dict[bool, str]:
    """How this OpenCV's whole-frame warp is best reproduced on a region, found by trying:
    ``{is_uint8: "remap" | "shift" | "full"}``. OpenCV ≥ 4.11 warps uint8 in float (a shifted
    matrix is then within ±1), and float64 with fixed-point maps (reproduced exactly)."""
    import cv2

    rng = np.random.default_rng(7)
    size, out = 64, (150, 120)
    u8 = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    f64 = cv2.GaussianBlur(rng.random((size, size)), (9, 9), 2)
    exact = {True: True, False: True}
    near = {True: True, False: True}
    for _ in range(12):
        angle, scale = rng.uniform(-0.6, 0.6), rng.uniform(0.4, 2.5)
        matrix = np.array(
            [[scale * np.cos(angle), -scale * np.sin(angle), rng.uniform(-20, 90)],
             [scale * np.sin(angle), scale * np.cos(angle), rng.uniform(-20, 60)]]
        )
        box = footprint(matrix, *out, size=size)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        for src, is_u8 in ((u8, True), (f64, False)):
            # The float mask is warped as facexlib's paste warps it: flags=3, which is INTER_AREA.
            whole = cv2.warpAffine(src, matrix, out, flags=cv2.INTER_AREA if not is_u8 else cv2.INTER_LINEAR)[y0:y1, x0:x1]
            xy, table = fixed_point_maps(matrix, box)
            remapped = cv2.remap(src, xy, table, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            exact[is_u8] &= bool(np.array_equal(remapped, whole))
            shifted = np.array(matrix)
            shifted[0, 2] -= x0
            shifted[1, 2] -= y0
            moved = cv2.warpAffine(src, shifted, (x1 - x0, y1 - y0))
            tolerance = 1 if is_u8 else 0
            near[is_u8] &= bool(np.abs(moved.astype(np.float64) - whole.astype(np.float64)).max() <= tolerance)
    return {k: "remap" if exact[k] else "shift" if near[k] else "full" for k in (True, False)}
