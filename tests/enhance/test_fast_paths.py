"""The fast model paths against the libraries they replace: batched, on-device RealESRGANer and the
box-only, batched GFPGANer face path give what RealESRGANer and GFPGANer give (within ±1), and the
worker hands frames to the model in batches without changing a frame."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from farm.config import ModelConfig
from farm.enhance.enhancer import ModelEnhancer, build_enhancer
from farm.errors import EnhanceError
from farm.plan import plan_geometry
from farm.testing.clips import pattern_frame
from farm.testing.fakes import FakeEnhancer, face_row, fake_output, frame_key, write_face_script
from farm.testing.weights import write_rrdbnet_weights
from tests.helpers import decode_all, max_abs_diff, reference_upsampler


def enhancer(weights: str, width: int, height: int, scale: float | None = None, **options) -> ModelEnhancer:
    config = ModelConfig(sr_weights=weights, face=False, device="cpu", **options)
    e = build_enhancer(config, lambda s: plan_geometry(width, height, s, scale, None), "cpu")
    assert isinstance(e, ModelEnhancer)
    return e


def noisy_frames(n: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """Pattern frames with noise, so that every pixel of the model's output matters."""
    rng = np.random.default_rng(seed)
    return [np.clip(pattern_frame(i, width, height).astype(int) + rng.integers(-40, 40, (height, width, 3)), 0, 255).astype(np.uint8)
            for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Background: batched RealESRGANer


@pytest.mark.parametrize(("model_scale", "size", "outscale"), [
    (4, (40, 32), None),   # x4plus as is
    (4, (37, 29), 2.5),    # odd size, LANCZOS4 down to a non-integer scale
    (2, (35, 27), None),   # x2: mod-pad to even
    (1, (33, 30), None),   # x1: mod-pad to a multiple of 4
])
def test_batched_background_equals_realesrganer(tmp_path, model_scale, size, outscale):
    """Three consecutive frames upscaled in one model call are, frame by frame, what
    RealESRGANer.enhance returns for each (pre-pad, mod-pad, clamp, round, colour order, resize)."""
    weights = write_rrdbnet_weights(str(tmp_path / "w.pth"), scale=model_scale)
    width, height = size
    e = enhancer(weights, width, height, scale=outscale)
    frames = noisy_frames(3, width, height)
    got = e.enhance_batch(frames, [10, 11, 12])
    reference = reference_upsampler(weights, model_scale)
    for frame, out in zip(frames, got):
        expected, _ = reference.enhance(frame, outscale=outscale)
        assert out.shape == expected.shape
        assert max_abs_diff(out, expected) <= 1


def test_batched_compact_model_equals_realesrganer(tmp_path):
    """realesr-general-x4v3's architecture (SRVGGNetCompact) takes the same fast path."""
    from realesrgan import RealESRGANer
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    from farm.testing.weights import write_compact_weights

    weights = write_compact_weights(str(tmp_path / "c.pth"), scale=4)
    e = enhancer(weights, 30, 22)
    frames = noisy_frames(2, 30, 22)
    got = e.enhance_batch(frames, [0, 1])
    net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4, act_type="prelu")
    reference = RealESRGANer(scale=4, model_path=weights, model=net, half=False, device="cpu")
    for frame, out in zip(frames, got):
        assert max_abs_diff(out, reference.enhance(frame)[0]) <= 1


def test_sixteen_bit_frames_go_through_realesrganer(tmp_path):
    """A 10-bit source decodes to uint16; those frames take RealESRGANer's own 16-bit path and
    come back as uint16."""
    weights = write_rrdbnet_weights(str(tmp_path / "w.pth"), scale=2)
    e = enhancer(weights, 24, 20)
    frames = [f.astype(np.uint16) * 257 + 3 for f in noisy_frames(2, 24, 20)]
    got = e.enhance_batch(frames, [0, 1])
    reference = reference_upsampler(weights, 2)
    for frame, out in zip(frames, got):
        expected, _ = reference.enhance(frame)
        assert out.dtype == np.uint16 == expected.dtype
        assert max_abs_diff(out, expected) <= 1


def test_out_of_memory_in_a_batch_retries_frame_by_frame_with_tiles(tmp_path):
    """A batch too large for the device is redone one frame at a time, each frame tiled as far as
    needed; no frame is dropped, later batches are smaller, and the result equals the tiled reference."""
    weights = write_rrdbnet_weights(str(tmp_path / "w.pth"), scale=2)
    e = enhancer(weights, 300, 24)
    model = e.upsampler.model
    calls: list[tuple[int, int]] = []

    class SmallDevice:  # refuses more than one 300-px frame, or anything wider than 280 px
        def __call__(self, x):
            calls.append((x.shape[0], x.shape[-1]))
            if x.shape[0] > 1 or x.shape[-1] > 280:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return model(x)

    e.upsampler.model = SmallDevice()
    frames = noisy_frames(2, 300, 24)
    got = e.enhance_batch(frames, [40, 41])
    reference = reference_upsampler(weights, 2, tile=256)
    for frame, out in zip(frames, got):
        assert max_abs_diff(out, reference.enhance(frame)[0]) <= 1
    assert calls[0][0] == 2 and e.batch_frames == 1
    assert e.upsampler.tile_size == 0


def test_a_failing_batch_names_the_failing_frame(tmp_path):
    """A model error inside a batch is not blamed on the whole batch: the frames are redone one by
    one and the error names the frame that fails."""
    weights = write_rrdbnet_weights(str(tmp_path / "w.pth"), scale=2)
    e = enhancer(weights, 24, 20)
    model = e.upsampler.model
    calls = []

    def broken(x):
        calls.append(x.shape[0])
        if x.shape[0] > 1 or len(calls) == 4:  # the batch, then the third frame alone
            raise RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")
        return model(x)

    e.upsampler.model = broken
    with pytest.raises(EnhanceError, match="frame 7.*CUDNN"):
        e.enhance_batch(noisy_frames(3, 24, 20), [5, 6, 7])
    assert calls == [3, 1, 1, 1]


def test_compile_flag_compiles_the_upscaler_and_keeps_old_job_ids(tmp_path, monkeypatch):
    import torch

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or model)
    weights = write_rrdbnet_weights(str(tmp_path / "w.pth"), scale=2)
    e = enhancer(weights, 24, 20, compile=True)
    assert len(compiled) == 1 and e.describe()["compile"] is True
    plain = ModelConfig(sr_weights=weights, face=False)
    assert "compile" not in plain.identity()
    assert dataclasses.replace(plain, compile=True).identity() != plain.identity()


# ----------------------------------------------------------------------------------------------
# Faces: the box-only, batched GFPGANer


class TinyParser:
    """Stands in for facexlib's ParseNet (several seconds per face on a CPU) in both the farm path
    and the reference: 19 class maps with structure, so the masks are irregular."""

    def __init__(self) -> None:
        import torch

        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 19, 7, padding=3).eval()

    def __call__(self, x):
        return self.conv(x) * 4, x


def narrow_gfpgan():
    """GFPGAN's clean architecture at an eighth of its width (GFPGANer's face size stays 512): the
    same code, with batches of faces affordable on a CPU."""
    import torch
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    torch.manual_seed(5)
    return GFPGANv1Clean(out_size=512, num_style_feat=64, channel_multiplier=1, decoder_load_path=None, fix_decoder=False,
                         num_mlp=2, input_is_latent=True, different_w=True, narrow=0.125, sft_half=True).eval()


def face_setup(tmp_path, tiny_x4, face_weights, frames, faces, scale=None, narrow=False, device="cpu"):
    """A farm enhancer and a reference GFPGANer (with RealESRGANer) on the same weights, the same
    scripted faces and the same stand-in parser (and, with ``narrow``, the same narrow GFPGAN)."""
    from farm.enhance.patches import facexlib_setup, install_torchvision_shim

    script = write_face_script(str(tmp_path / "faces.json"), {frame_key(frames[i]): rows for i, rows in faces.items()})
    h, w = frames[0].shape[:2]
    config = ModelConfig(sr_weights=tiny_x4, face_weights=face_weights["gfpgan"], weights_dir=face_weights["dir"],
                         face_detector=f"scripted:{script}", trust_weights=True, device=device, precision="fp32")
    geometry = lambda s: plan_geometry(w, h, s, scale, None)  # noqa: E731
    e = build_enhancer(config, geometry, device)
    install_torchvision_shim()
    import torch
    from gfpgan import GFPGANer

    with facexlib_setup(face_weights["dir"], f"scripted:{script}"):
        reference = GFPGANer(model_path=face_weights["gfpgan"], upscale=geometry(4).outscale, arch="clean", channel_multiplier=1,
                             bg_upsampler=reference_upsampler(tiny_x4, 4), device=torch.device(device))
    parser = TinyParser()
    parser.conv.to(device)
    e.restorer.face_helper.face_parse = parser
    reference.face_helper.face_parse = parser
    if narrow:
        reference.gfpgan = e._guard.network = narrow_gfpgan().to(device)
    return e, reference


@pytest.mark.slow
def test_face_path_equals_gfpganer(tmp_path, tiny_x4, face_weights):
    """Frames with two overlapping faces, with faces cut by the frame's edges, and without faces:
    farm's face path, with all faces of the batch through the networks together, gives what
    GFPGANer.enhance(paste_back=True) gives, frame by frame. (A narrow GFPGAN keeps four faces
    affordable here; the full-width one, a face at a time, is in the next test and in
    test_local_pipeline.py.)"""
    frames = noisy_frames(4, 80, 64, seed=1)
    faces = {
        0: [face_row(8, 6, 44), face_row(30, 14, 40)],   # two faces that overlap
        2: [face_row(-14, 30, 46)],  # cut by the left and bottom edges
        3: [face_row(52, -10, 36)],  # cut by the top and right edges
    }
    e, reference = face_setup(tmp_path, tiny_x4, face_weights, frames, faces, narrow=True)
    expected = []
    for frame in frames:
        _, restored, out = reference.enhance(frame, has_aligned=False, only_center_face=False, paste_back=True, weight=0.5)
        expected.append((out, len(restored)))
    assert [n for _, n in expected] == [2, 0, 1, 1]
    e.faces.face_batch = 4  # all four faces through GFPGAN and the parser in one call
    got = e.enhance_batch(frames, [0, 1, 2, 3])
    assert e.faces_found == 4
    for i, (out, (want, _)) in enumerate(zip(got, expected)):
        assert max_abs_diff(out, want) <= 1, f"frame {i}"
    background = reference_upsampler(tiny_x4, 4)
    assert max_abs_diff(got[0], background.enhance(frames[0])[0]) > 10  # the faces really changed it


@pytest.mark.slow
def test_face_noise_is_fixed_so_a_frame_always_gives_the_same_output(tmp_path, tiny_x4, face_weights):
    """Trained GFPGAN weights scale StyleGAN noise into the face, and GFPGANer draws new noise on
    every call; farm uses the noise stored in the weights, so a retried or resumed frame is
    identical, and equals GFPGANer's result with that same stored noise."""
    frames = noisy_frames(1, 80, 64, seed=4)
    e, reference = face_setup(tmp_path, tiny_x4, face_weights, frames, {0: [face_row(12, 8, 44)]}, narrow=True)
    net = e._guard.network
    scales = [p for name, p in net.named_parameters() if name.endswith(".weight") and p.numel() == 1]
    assert len(scales) > 4  # the noise scales of the decoder's style convolutions
    for p in scales:
        p.data.fill_(1.0)  # as trained weights do: noise that shows
    first = e.enhance_batch(frames, [0])[0]
    again = e.enhance_batch(frames, [0])[0]
    assert np.array_equal(first, again)
    drawn = [reference.enhance(frames[0], has_aligned=False, only_center_face=False, paste_back=True, weight=0.5)[2] for _ in range(2)]
    assert max_abs_diff(drawn[0], drawn[1]) > 2  # GFPGANer itself differs from call to call
    reference.gfpgan = lambda *a, **k: net(*a, randomize_noise=False, **k)
    stored = reference.enhance(frames[0], has_aligned=False, only_center_face=False, paste_back=True, weight=0.5)[2]
    assert max_abs_diff(first, stored) <= 1


@pytest.mark.slow
def test_face_path_at_a_non_integer_scale_equals_gfpganer(tmp_path, tiny_x4, face_weights):
    """--scale 3 with an x4 model: the background is resized (LANCZOS4) and the face pasted at x3,
    as GFPGANer(upscale=3) does."""
    frames = noisy_frames(2, 64, 56, seed=2)
    e, reference = face_setup(tmp_path, tiny_x4, face_weights, frames, {1: [face_row(10, 8, 40)]}, scale=3.0)
    got = e.enhance_batch(frames, [0, 1])
    for frame, out in zip(frames, got):
        want = reference.enhance(frame, has_aligned=False, only_center_face=False, paste_back=True, weight=0.5)[2]
        assert out.shape == want.shape == (168, 192, 3)
        assert max_abs_diff(out, want) <= 1


def test_box_only_warps_equal_whole_frame_warps():
    """Pasting inside the face's footprint: outside it the whole-frame warp is zero; inside, the
    float64 mask is bit-exact and the uint8 face within ±1, for small and large faces, rotated,
    and cut by the frame's edges."""
    import cv2

    from farm.enhance.faces import FACE_SIZE, footprint, warp_roi

    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    mask = cv2.GaussianBlur(rng.random((FACE_SIZE, FACE_SIZE)), (31, 31), 7)
    mask[:10], mask[-10:], mask[:, :10], mask[:, -10:] = 0, 0, 0, 0
    width, height = 700, 500
    for scale, angle, tx, ty in [(0.3, 0.1, 100, 80), (1.3, -0.4, -200, 50), (0.9, 0.3, 500, 300), (0.05, 0.0, 3, 4), (2.2, 0.2, -600, -500)]:
        matrix = np.array([[scale * np.cos(angle), -scale * np.sin(angle), tx], [scale * np.sin(angle), scale * np.cos(angle), ty]])
        box = footprint(matrix, width, height)
        whole_face = cv2.warpAffine(face, matrix, (width, height))
        whole_mask = cv2.warpAffine(mask, matrix, (width, height), flags=3)
        assert box is not None
        x0, y0, x1, y1 = box
        outside = np.ones((height, width), bool)
        outside[y0:y1, x0:x1] = False
        assert not whole_face[outside].any() and not whole_mask[outside].any()
        assert np.array_equal(warp_roi(mask, matrix, box, width, height), whole_mask[y0:y1, x0:x1])
        assert max_abs_diff(warp_roi(face, matrix, box, width, height), whole_face[y0:y1, x0:x1]) <= 1
    assert footprint(np.array([[0.2, 0, -500.0], [0, 0.2, 10]]), width, height) is None


def test_device_blur_equals_opencv_blur():
    """The parser mask's two 101x101 Gaussian blurs, done as torch convolutions (the CUDA path),
    equal cv2.GaussianBlur's."""
    import torch

    from farm.enhance.faces import _blur_twice, _blur_twice_cv2

    rng = np.random.default_rng(1)
    masks = (rng.random((2, 512, 512)) > 0.4).astype(np.float64) * 255
    got = _blur_twice(torch.from_numpy(masks)).numpy()
    for m, g in zip(masks, got):
        assert np.abs(_blur_twice_cv2(m.copy()) - g).max() < 1e-9


@pytest.mark.gpu
def test_on_cuda_both_paths_equal_the_libraries(tmp_path, tiny_x4, face_weights):
    """On a GPU, in fp32 without TF32 (so that both sides round alike): the background path and the
    face path (with its mask blurred on the device) give what RealESRGANer and GFPGANer give."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    try:
        frames = noisy_frames(3, 72, 56, seed=4)
        e, reference = face_setup(tmp_path, tiny_x4, face_weights, frames, {0: [face_row(6, 4, 44), face_row(30, 12, 40)]},
                                  narrow=True, device="cuda")
        assert e.faces.blur_on_device
        got = e.enhance_batch(frames, [0, 1, 2])
        for frame, out in zip(frames, got):
            want = reference.enhance(frame, has_aligned=False, only_center_face=False, paste_back=True, weight=0.5)[2]
            assert max_abs_diff(out, want) <= 1
    finally:
        torch.backends.cudnn.allow_tf32 = True


# ----------------------------------------------------------------------------------------------
# The worker hands frames over in batches


@dataclasses.dataclass
class BatchingFake(FakeEnhancer):
    batches: list = dataclasses.field(default_factory=list)

    def batch_size(self, height: int, width: int) -> int:
        return 3

    def enhance_batch(self, frames, numbers):
        self.batches.append(list(numbers))
        return [self.enhance(f, n) for f, n in zip(frames, numbers)]


def test_worker_enhances_consecutive_frames_in_batches(tmp_path):
    """Frames [7, 14) reach the model as [7, 8, 9], [10, 11, 12], then 13 alone, and the segment
    holds exactly the frames the per-frame model gives."""
    from farm.actors.worker import EnhanceWorker
    from tests.actors.test_worker import job

    clip, p = job(tmp_path, "fake:scale=2")
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu")
    worker.ready()
    fake = BatchingFake(model_scale=2)
    worker.enhancer = fake
    receipt = worker.run_shard(1, 7, 14, attempt=1)
    assert fake.batches == [[7, 8, 9], [10, 11, 12]] and fake.frames_done == 7
    _, src = decode_all(clip)
    _, got = decode_all(os.path.join(p.job.location, "segments", receipt.segment))
    assert len(got) == 7
    for frame, out in zip(src[7:14], got):
        assert np.array_equal(out, fake_output(frame, 2, None))
    with open(os.path.join(p.job.location, "segments", receipt.segment.rsplit(".", 1)[0] + ".json")) as f:
        assert json.load(f)["frames"] == 7
