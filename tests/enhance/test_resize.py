"""The device path for the output's size: OpenCV's LANCZOS4 resize reproduced in torch, and the
picture's placement on its canvas done on the device, give what the host path (cv2.resize, then
place()) gives, within ±1, so a GPU node downloads only the output frame. Run here on a CPU
device with the device path forced on."""

from __future__ import annotations

import time

import numpy as np
import pytest

from farm.config import ModelConfig
from farm.enhance.enhancer import ModelEnhancer, build_enhancer
from farm.plan import Geometry, plan_geometry
from farm.testing.fakes import face_row, frame_key, write_face_script
from tests.helpers import max_abs_diff
from tests.enhance.test_fast_paths import TinyParser, narrow_gfpgan, noisy_frames


def opencv_agreement(got: np.ndarray, want: np.ndarray) -> tuple[int, float]:
    """(max abs difference, share of values exactly equal)."""
    assert got.shape == want.shape and got.dtype == want.dtype == np.uint8
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    return int(diff.max()), float((diff == 0).mean())


def sample_images(width: int, height: int, seed: int) -> dict[str, np.ndarray]:
    """Noise (every tap matters), a smooth picture, and hard black/white edges (the worst for
    LANCZOS4's negative lobes and the 0..255 clamp)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([127 + 120 * np.sin(xx / 7 + c) * np.cos(yy / 5 - c) for c in range(3)], axis=-1)
    edges = ((xx // 3 + yy // 4) % 2 * 255)[..., None].repeat(3, axis=-1)
    return {
        "noise": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "smooth": np.rint(smooth).astype(np.uint8),
        "edges": edges.astype(np.uint8),
    }




def device_resize(images: list[np.ndarray], size: tuple[int, int], dtype: str = "float32") -> list[np.ndarray]:
    import torch

    from farm.enhance.resize import lanczos4

    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(getattr(torch, dtype))
    out = lanczos4(batch, size)
    assert out.dtype == batch.dtype
    return list(out.permute(0, 2, 3, 1).to(torch.uint8).numpy())


# ----------------------------------------------------------------------------------------------
# The resize against cv2.resize


@pytest.mark.parametrize(("source", "size"), [
    ((854 // 4, 480 // 4), (int(854 // 4 * 2.25), int(480 // 4 * 2.25))),  # x2.25, as 480p to 1080p
    ((3416 // 8, 1920 // 8), (1921 // 8, 1080 // 8)),   # an x4 output down to 1080p, at an eighth
    ((37, 29), (int(37 * 1.5), int(29 * 1.5))),          # odd sizes, x1.5
    ((64, 48), (32, 24)),                                # x0.5
    ((101, 77), (int(101 * 0.37), int(77 * 0.37))),      # x0.37
    ((23, 17), (69, 51)),                                # x3
    ((60, 40), (150, 14)),                               # x2.5 across, x0.35 down
    ((64, 48), (64, 108)),                               # width kept, height x2.25
    ((9, 5), (4, 13)),                                   # tiny: every tap past a border
])
def test_lanczos4_equals_opencv(source, size):
    """Frames the networks hand over (noise, smooth, hard edges) resized to the sizes jobs ask for:
    torch gives cv2.resize(INTER_LANCZOS4)'s values, on whole frames, in one batch."""
    import cv2

    images = sample_images(*source, seed=source[0])
    got = device_resize(list(images.values()), size)
    for (kind, image), out in zip(images.items(), got):
        want = cv2.resize(image, size, interpolation=cv2.INTER_LANCZOS4)
        worst, exact = opencv_agreement(out, want)
        assert worst <= 1 and exact >= 0.99, (kind, worst, exact)


def test_lanczos4_takes_uint8_and_keeps_the_dtype():
    """The placement hands the resize uint8 batches (and a second resize gets the first's uint8)."""
    import cv2

    image = sample_images(50, 30, seed=1)["noise"]
    got = device_resize([image], (113, 67), dtype="uint8")[0]
    worst, exact = opencv_agreement(got, cv2.resize(image, (113, 67), interpolation=cv2.INTER_LANCZOS4))
    assert worst <= 1 and exact >= 0.99


def test_placement_on_the_device_equals_the_host_placement():
    """x4 network outputs taken to the output frame: resized to the outscale size, for anamorphic
    sources resized again to the picture, and padded; the device gives place()'s frames. The last
    geometry is the one a shape cannot tell: its x4 output has the canvas's size, unplaced."""
    import cv2
    import torch

    from farm.enhance.resize import place_on_device
    from farm.enhance.upscale import place

    cases = [
        ((64, 48), plan_geometry(64, 48, 4, None, (200, 120))),             # pillarboxed, x2.5
        ((64, 48), plan_geometry(64, 48, 4, None, (200, 120), (8, 9))),     # anamorphic, x4 kept, then resized
        ((37, 29), plan_geometry(37, 29, 4, 2.25, None)),                   # no canvas, x2.25
        ((120, 68), plan_geometry(120, 68, 4, None, (480, 272), (4, 3))),   # x4 output 480x272 = canvas
    ]
    assert cases[-1][1] == Geometry(4.0, (480, 204), (480, 272))
    rng = np.random.default_rng(2)
    for (w, h), geometry in cases:
        outputs = rng.integers(0, 256, (2, h * 4, w * 4, 3), dtype=np.uint8)
        size = (int(w * geometry.outscale), int(h * geometry.outscale))
        got = place_on_device(torch.from_numpy(outputs).permute(0, 3, 1, 2).float(), size, geometry).numpy()
        assert got.shape == (2, geometry.canvas[1], geometry.canvas[0], 3)
        for output, out in zip(outputs, got):
            picture = output if size == (w * 4, h * 4) else cv2.resize(output, size, interpolation=cv2.INTER_LANCZOS4)
            worst, exact = opencv_agreement(out, place(picture, geometry))
            assert worst <= 1 and exact >= 0.99, (geometry, worst, exact)


# ----------------------------------------------------------------------------------------------
# The enhancer: device path (forced on a CPU device) against the host path


def enhancer(weights: str, width: int, height: int, scale: float | None = None, target=None, sar=(1, 1)) -> ModelEnhancer:
    config = ModelConfig(sr_weights=weights, face=False, device="cpu")
    e = build_enhancer(config, lambda s: plan_geometry(width, height, s, scale, target, sar), "cpu")
    assert isinstance(e, ModelEnhancer)
    return e


def both_paths(e: ModelEnhancer, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    numbers = list(range(len(frames)))
    assert e.resize_on_device is False  # a CPU device's default
    host = e.enhance_batch(frames, numbers)
    e.resize_on_device = True
    try:
        device = e.enhance_batch(frames, numbers)
    finally:
        e.resize_on_device = False
    return host, device


@pytest.mark.parametrize(("size", "scale", "target", "sar", "canvas"), [
    ((64, 48), None, (200, 120), (1, 1), (200, 120)),   # pillarboxed into a target box, x2.5
    ((37, 29), 2.25, None, (1, 1), (83, 65)),           # --scale 2.25, odd size
    ((48, 40), None, (90, 120), (1, 1), (90, 120)),     # letterboxed, x1.875
    ((64, 48), None, (200, 120), (8, 9), (200, 120)),   # anamorphic: x4, resized to 142x120, pillarboxed
    ((120, 68), None, (480, 272), (4, 3), (480, 272)),  # anamorphic whose x4 output is the canvas's size
])
def test_device_path_equals_host_path(tiny_x4, one_torch_thread, size, scale, target, sar, canvas):
    """A batch of three frames for each geometry jobs use: the frames the device path places on
    the device equal, whole, the frames cv2 and place() make on the host."""
    e = enhancer(tiny_x4, *size, scale=scale, target=target, sar=sar)
    host, device = both_paths(e, noisy_frames(3, *size, seed=size[0]))
    for a, b in zip(host, device):
        assert a.shape == b.shape == (canvas[1], canvas[0], 3)
        worst, exact = opencv_agreement(b, a)
        assert worst <= 1 and exact >= 0.99, (worst, exact)


def test_device_path_is_used_when_on(tiny_x4, one_torch_thread, monkeypatch):
    """With the device path on, no cv2.resize runs on the host for a resized, padded output (one
    per frame would mean the full x4 frame was downloaded), and the resize runs on the device."""
    import cv2

    import farm.enhance.resize as resize

    e = enhancer(tiny_x4, 64, 48, target=(200, 120))
    frames = noisy_frames(2, 64, 48)
    host_resizes, device_resizes = [], []
    real_resize, real_lanczos4 = cv2.resize, resize.lanczos4
    monkeypatch.setattr(cv2, "resize", lambda img, size, **kw: host_resizes.append(size) or real_resize(img, size, **kw))
    monkeypatch.setattr(resize, "lanczos4", lambda batch, size: device_resizes.append((batch.shape[0], size)) or real_lanczos4(batch, size))
    e.enhance_batch(frames, [0, 1])
    assert (host_resizes, device_resizes) == ([(160, 120), (160, 120)], [])
    host_resizes.clear()
    e.resize_on_device = True
    out = e.enhance_batch(frames, [0, 1])
    assert (host_resizes, device_resizes) == ([], [(2, (160, 120))])
    assert [o.shape for o in out] == [(120, 200, 3)] * 2


def test_model_time_is_counted(tiny_x4, one_torch_thread):
    """The worker splits the enhance stage into device and host time with model_s: it grows by the
    networks' calls with their transfers, and never by more than the call's own wall time."""
    e = enhancer(tiny_x4, 64, 48, target=(200, 120))
    assert e.model_s == 0.0
    for on in (False, True):
        e.resize_on_device = on
        before, start = e.model_s, time.perf_counter()
        e.enhance_batch(noisy_frames(2, 64, 48), [0, 1])
        wall = time.perf_counter() - start
        assert 0 < e.model_s - before <= wall


# ----------------------------------------------------------------------------------------------
# Faces: pasted at the outscale size, on the host, into the downloaded frame


def face_enhancer(tmp_path, tiny_x4, face_weights, frames, faces, scale=None, target=None, sar=(1, 1)) -> ModelEnhancer:
    """A farm enhancer with scripted faces, the tests' stand-in parser and a narrow GFPGAN."""
    script = write_face_script(str(tmp_path / "faces.json"), {frame_key(frames[i]): rows for i, rows in faces.items()})
    h, w = frames[0].shape[:2]
    config = ModelConfig(sr_weights=tiny_x4, face_weights=face_weights["gfpgan"], weights_dir=face_weights["dir"],
                         face_detector=f"scripted:{script}", trust_weights=True, device="cpu", precision="fp32")
    e = build_enhancer(config, lambda s: plan_geometry(w, h, s, scale, target, sar), "cpu")
    assert isinstance(e, ModelEnhancer) and e.faces is not None
    e.restorer.face_helper.face_parse = TinyParser()
    e._guard.network = narrow_gfpgan()
    e.faces.face_batch = 4
    return e


@pytest.mark.slow
@pytest.mark.parametrize(("scale", "target", "sar", "canvas"), [
    (None, (200, 120), (1, 1), (200, 120)),   # pillarboxed, x2.5: faces pasted into the canvas, in place
    (3.0, None, (1, 1), (192, 144)),          # --scale 3: resized on the device, faces pasted in place
    (None, (200, 120), (8, 9), (200, 120)),   # anamorphic: faces at x4, then resized and placed on the host
])
def test_device_path_with_faces_equals_host_path(tmp_path, tiny_x4, face_weights, one_torch_thread, scale, target, sar, canvas):
    """Frames with two overlapping faces, a face cut by the frame's edge, and none: the device
    path gives the host path's frames, whole, and the faces really changed them. Where the picture
    is the outscale size, the faces are written into the downloaded batch itself (no frame copied)."""
    frames = noisy_frames(3, 64, 48, seed=7)
    faces = {0: [face_row(6, 4, 34), face_row(24, 10, 30)], 2: [face_row(40, -8, 30)]}
    e = face_enhancer(tmp_path, tiny_x4, face_weights, frames, faces, scale=scale, target=target, sar=sar)
    host, device = both_paths(e, frames)
    assert e.faces_found == 6
    for a, b in zip(host, device):
        assert a.shape == b.shape == (canvas[1], canvas[0], 3)
        worst, exact = opencv_agreement(b, a)
        assert worst <= 1 and exact >= 0.99, (worst, exact)
    e.faces = None
    plain = e.enhance_batch(frames, [0, 1, 2])
    assert [max_abs_diff(p, d) > 10 for p, d in zip(plain, device)] == [True, False, True]
    if sar == (1, 1):
        assert all(d.base is not None and d.base is device[0].base for d in device)


def test_pasting_in_place_needs_the_outscale_size():
    """A background of another size cannot take the faces in place: the error says which size."""
    from farm.enhance.faces import FacePath

    class Helper:
        upscale_factor = 2.5

    class Restorer:
        face_helper = Helper()

    path = FacePath(Restorer(), "cpu", face_batch=1)
    with pytest.raises(ValueError, match="in place into a 200x120 background.*outscale size, 160x120"):
        path._paste(np.zeros((48, 64, 3), np.uint8), np.zeros((120, 200, 3), np.uint8), [], [], [], in_place=True)


@pytest.mark.gpu
def test_on_cuda_the_device_path_is_the_default_and_equals_the_host_path(tiny_x4):
    """On a GPU the device path is on by default and gives the host path's frames."""
    config = ModelConfig(sr_weights=tiny_x4, face=False, device="cuda", precision="fp32")
    e = build_enhancer(config, lambda s: plan_geometry(854 // 4, 480 // 4, s, None, (480, 270)), "cuda")
    assert isinstance(e, ModelEnhancer) and e.resize_on_device is True
    frames = noisy_frames(2, 854 // 4, 480 // 4)
    device = e.enhance_batch(frames, [0, 1])
    e.resize_on_device = False
    host = e.enhance_batch(frames, [0, 1])
    for a, b in zip(host, device):
        worst, exact = opencv_agreement(b, a)
        assert worst <= 1 and exact >= 0.99, (worst, exact)
