"""Library patches farm needs, applied where the libraries are used, never globally at import: the
torchvision shim basicsr needs, tiles that never swallow errors, 16-bit paths, GFPGANer's face
errors kept (and its noise fixed), facexlib loading from the weights dir. Each says why it exists."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator

import numpy as np

from farm.enhance.factories import face_detector_factory
from farm.errors import UsageError


def install_torchvision_shim() -> None:
    """basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, which torchvision 0.17
    removed; point that name at its successor before anything imports basicsr."""
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        from torchvision.transforms import _functional_tensor

        sys.modules[name] = _functional_tensor


def new_upsampler(network, scale: int, tile: int, half: bool, device):
    """A RealESRGANer around an already loaded network whose tiled path never swallows errors.

    RealESRGANer's own ``tile_process`` prints and goes on when a tile fails, then pastes the
    previous tile's pixels (or raises NameError); farm must fail or retry instead."""
    install_torchvision_shim()
    import math

    import torch
    from realesrgan import RealESRGANer

    class Upsampler(RealESRGANer):
        def __init__(self) -> None:  # RealESRGANer.__init__ wants a file; the network is loaded
            self.scale = scale
            self.tile_size = tile
            self.tile_pad = 10
            self.pre_pad = 10
            self.mod_scale = None
            self.half = half
            self.device = device
            self.model = network.eval().to(device)
            if half:
                self.model = self.model.half()

        def tile_process(self) -> None:
            batch, channel, height, width = self.img.shape
            self.output = self.img.new_zeros((batch, channel, height * self.scale, width * self.scale))
            size, pad, s = self.tile_size, self.tile_pad, self.scale
            for y in range(math.ceil(height / size)):
                for x in range(math.ceil(width / size)):
                    x0, y0 = x * size, y * size
                    x1, y1 = min(x0 + size, width), min(y0 + size, height)
                    px0, py0 = max(x0 - pad, 0), max(y0 - pad, 0)
                    px1, py1 = min(x1 + pad, width), min(y1 + pad, height)
                    with torch.no_grad():
                        out = self.model(self.img[:, :, py0:py1, px0:px1])
                    ox, oy = (x0 - px0) * s, (y0 - py0) * s
                    self.output[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = out[
                        :, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s
                    ]

        def enhance(self, img, outscale=None, alpha_upsampler="realesrgan"):
            if img.dtype == np.uint16 and img.ndim == 3 and img.shape[2] == 3:
                with torch.no_grad():
                    return _enhance_16_bit(self, img, outscale), "RGB"
            return super().enhance(img, outscale, alpha_upsampler)

    return Upsampler()


def _enhance_16_bit(upsampler, img: np.ndarray, outscale: float | None) -> np.ndarray:
    """RealESRGANer's 16-bit path, step for step, for every uint16 frame. RealESRGANer chooses
    that path by value (max > 256), so a near-black 16-bit frame (a fade) would be read as 8-bit,
    257 times too bright, and come back as uint8."""
    import cv2

    height, width = img.shape[:2]
    upsampler.pre_process(cv2.cvtColor(img.astype(np.float32) / 65535, cv2.COLOR_BGR2RGB))
    upsampler.tile_process() if upsampler.tile_size > 0 else upsampler.process()
    output = upsampler.post_process().data.squeeze().float().cpu().clamp_(0, 1).numpy()
    output = (np.transpose(output[[2, 1, 0], :, :], (1, 2, 0)) * 65535.0).round().astype(np.uint16)
    if outscale is not None and outscale != float(upsampler.scale):
        output = cv2.resize(output, (int(width * outscale), int(height * outscale)), interpolation=cv2.INTER_LANCZOS4)
    return output


def faces_in_16_bit(helper) -> None:
    """Make facexlib's FaceRestoreHelper (inside GFPGANer) right for uint16 frames; 8-bit frames
    go through it unchanged.

    facexlib restores faces in 8 bits (uint8) and pastes them into the upscaled background as
    they are, so on a 16-bit background every face came out almost black; and it recognises
    16-bit input by value (max > 256), as RealESRGANer does. Here 16-bit input is always scaled
    for detection, and the restored faces are pasted in 16 bits, while the face parser still sees
    the 8-bit face it was trained on."""
    read_image, paste = helper.read_image, helper.paste_faces_to_input_image

    def read_16_bit(img):
        if isinstance(img, np.ndarray) and img.dtype == np.uint16:
            img = img / 65535 * 255  # what facexlib itself does when max > 256
        return read_image(img)

    def paste_16_bit(save_path=None, upsample_img=None):
        if upsample_img is None or upsample_img.dtype != np.uint16:
            return paste(save_path=save_path, upsample_img=upsample_img)
        faces, parser = helper.restored_faces, helper.face_parse
        helper.restored_faces = [face.astype(np.uint16) * 257 for face in faces]
        helper.face_parse = _EightBitParserInput(parser)
        try:
            output = paste(save_path=save_path, upsample_img=upsample_img)
        finally:
            helper.restored_faces, helper.face_parse = faces, parser
        # facexlib returns uint8 when every value is at most 256 (a near-black frame); the values
        # are 16-bit ones all the same.
        return output.astype(np.uint16)

    helper.read_image, helper.paste_faces_to_input_image = read_16_bit, paste_16_bit


class _EightBitParserInput:
    """The face parser of a 16-bit paste gets ``2 * (257 * f8) / 255 - 1`` for an 8-bit face f8;
    hand it ``2 * f8 / 255 - 1``, as in the 8-bit paste."""

    def __init__(self, parser) -> None:
        self.parser = parser

    def __call__(self, x):
        return self.parser((x + 1) / 257 - 1)

    def __getattr__(self, name: str):
        return getattr(self.parser, name)


class Guard:
    """Wraps GFPGANer's face network: GFPGANer catches a failing face and pastes the unrestored
    crop; the guard keeps the error so the frame fails (or retries) instead of silently degrading.

    It also fixes the network's StyleGAN noise: GFPGANer draws fresh noise for every face, which
    trained weights may mix into the picture (learnt scales), so the same frame could come out differently on a
    retry, after a resume or on another node. farm uses the noise stored in the weights instead
    (``randomize_noise=False``), so a frame's output depends only on the frame."""

    def __init__(self, network) -> None:
        self.network = network
        self.error: BaseException | None = None

    def __call__(self, *args, **kwargs):
        kwargs.setdefault("randomize_noise", False)
        try:
            return self.network(*args, **kwargs)
        except BaseException as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str):
        return getattr(self.network, name)


@contextlib.contextmanager
def facexlib_setup(weights_dir: str | None, detector: str, detector_factory: Callable[[], Any] | None = None) -> Iterator[None]:
    """While GFPGANer is built: facexlib loads from ``weights_dir`` (never downloading into the
    working directory) and uses the requested detector: ``detector_factory()`` when given (a
    stand-in, :mod:`farm.enhance.factories`), else facexlib's ``detector``."""
    import facexlib.utils.face_restoration_helper as frh
    import gfpgan.utils

    original_helper, original_init_det = gfpgan.utils.FaceRestoreHelper, frh.init_detection_model

    def helper(*args, **kwargs):
        kwargs["model_rootpath"] = weights_dir
        return original_helper(*args, **kwargs)

    gfpgan.utils.FaceRestoreHelper = helper
    detector_factory = detector_factory or face_detector_factory(detector)
    if detector_factory is not None:
        frh.init_detection_model = lambda *a, **k: detector_factory()
    elif detector != "retinaface_resnet50":
        raise UsageError(f"unknown face detector {detector!r}; known: retinaface_resnet50")
    try:
        yield
    finally:
        gfpgan.utils.FaceRestoreHelper = original_helper
        frh.init_detection_model = original_init_det
