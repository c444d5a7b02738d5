"""The enhancer a worker uses: RealESRGANer (and GFPGANer around it) loaded once on one device, with
out-of-memory retries in tiles and batches; or a registered factory's (:mod:`farm.enhance.factories`).
torch and the model libraries are imported lazily, after the torchvision shim."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

from farm.config import ModelConfig
from farm.enhance.arch import gfpgan_channel_multiplier, load_state_dict, sr_arch_from_state_dict
from farm.enhance.faces import FacePath
from farm.enhance.factories import Enhancer, Factories, resolve_factories
from farm.enhance.patches import Guard, faces_in_16_bit, facexlib_setup, install_torchvision_shim, new_upsampler
from farm.enhance.upscale import BatchUpscaler, batch_for, place
from farm.enhance.weights import face_weights_path, resolve_sr
from farm.errors import EnhanceError, OutOfDeviceMemory, UsageError, WeightsError
from farm.plan import Geometry

log = logging.getLogger(__name__)

#: Tile sizes tried, largest first, when a frame runs out of device memory.
OOM_TILES = (512, 256, 128, 64)

__all__ = ["Enhancer", "ModelEnhancer", "OOM_TILES", "build_enhancer", "resolve_device"]


def resolve_device(requested: str) -> str:
    """``cuda`` or ``cpu`` for this process; ``auto`` takes CUDA when torch sees a GPU."""
    import torch

    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise UsageError("--device cuda, but torch sees no CUDA device here; use --device cpu or check the driver")
    return "cpu"


class ModelEnhancer:
    """RealESRGANer, with GFPGANer around it when faces are on, loaded once on one device.

    ``resize_on_device`` (default: on for CUDA, off for CPU, where cv2 is faster): resize the
    networks' output to the output size and place it on the canvas on the device, so that only the
    output frame is downloaded. ``model_s``: seconds spent in the networks' calls and the
    device↔host transfers over the enhancer's life (the library paths, for 16-bit frames and tiles,
    count whole), so that the enhance stage's time can be split into device time and host time."""

    def __init__(self, config: ModelConfig, geometry_for: Callable[[int], Geometry], device: str,
                 detector_factory: Callable[[], Any] | None = None, resize_on_device: bool | None = None) -> None:
        # The shim before torch, imported here: importing farm stays cheap, and a new user never
        # meets basicsr's broken import.
        install_torchvision_shim()
        import torch

        self.config = config
        self.device = device
        self._torch = torch
        half = config.precision == "fp16" or (config.precision == "auto" and device == "cuda")
        if half and device != "cuda":
            raise UsageError("--fp16 needs a CUDA device; use --fp32 on CPU")
        self.half = half
        path, _ = resolve_sr(config)
        state = load_state_dict(path)
        arch = sr_arch_from_state_dict(state, path)
        network = arch.build()
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{path} does not fit the {arch.kind} architecture it looks like: {exc}") from None
        self.model_scale = arch.scale
        self.geometry: Geometry = geometry_for(arch.scale)
        self.upsampler = new_upsampler(network, arch.scale, config.tile, half, torch.device(device))
        # channels_last: the layout cuDNN's fp16 tensor-core kernels want, and faster on these CPUs
        # too (RRDBNet x4plus, 64x48 frame: 0.65 → 0.57 s); results stay within ±1 of the default.
        self.upsampler.model = self.upsampler.model.to(memory_format=torch.channels_last)
        if device == "cuda":
            torch.backends.cudnn.benchmark = True  # one frame size per job: tune the convs once
        if config.compile:
            self.upsampler.model = torch.compile(self.upsampler.model)
        self.upscale = BatchUpscaler(self.upsampler, device, channels_last=True,
                                     resize_on_device=device == "cuda" if resize_on_device is None else resize_on_device)
        self.model_s = 0.0
        self.batch_frames: int | None = None  # frames per model call; None: chosen by frame size
        self.restorer = None
        self.faces: FacePath | None = None
        self.faces_found = 0
        if config.face:
            from gfpgan import GFPGANer

            face_path, _ = face_weights_path(config)
            multiplier = gfpgan_channel_multiplier(load_state_dict(face_path), face_path)
            with facexlib_setup(config.weights_dir, config.face_detector, detector_factory):
                try:
                    self.restorer = GFPGANer(
                        model_path=face_path,
                        upscale=self.geometry.outscale,
                        arch="clean",
                        channel_multiplier=multiplier,
                        bg_upsampler=self.upsampler,
                        device=torch.device(device),
                    )
                except RuntimeError as exc:
                    raise WeightsError(f"{face_path} does not fit GFPGAN's clean architecture: {exc}") from None
            self._guard = Guard(self.restorer.gfpgan)
            self.restorer.gfpgan = self._guard
            faces_in_16_bit(self.restorer.face_helper)
            # Batches of faces help on a GPU; on a CPU GFPGAN's grouped modulated convs get slower
            # per face in batches (GFPGAN v1.4 here: 2.4 s alone, 2.55 s each in pairs), so one at a time.
            self.faces = FacePath(self.restorer, device, face_batch=8 if device == "cuda" else 1)

    @property
    def resize_on_device(self) -> bool:
        return self.upscale.resize_on_device

    @resize_on_device.setter
    def resize_on_device(self, on: bool) -> None:
        self.upscale.resize_on_device = on

    def describe(self) -> dict[str, Any]:
        torch = self._torch
        name = torch.cuda.get_device_name(0) if self.device == "cuda" else "cpu"
        return {
            "device": self.device,
            "device_name": name,
            "precision": "fp16" if self.half else "fp32",
            "model_scale": self.model_scale,
            "face": self.restorer is not None,
            "compile": self.config.compile,
            "torch": torch.__version__,
        }

    def batch_size(self, height: int, width: int) -> int:
        """Frames per model call for ``height`` x ``width`` sources."""
        return self.batch_frames or batch_for(self.device, height, width)

    def enhance(self, frame: np.ndarray, number: int) -> np.ndarray:
        """The output frame for source frame ``number``; retries with tiles on out-of-memory.

        Raises:
            OutOfDeviceMemory: even the smallest tile does not fit.
            EnhanceError: any other failure, naming the frame.
        """
        tiles = [self.config.tile] + [t for t in OOM_TILES if self.config.tile == 0 or t < self.config.tile]
        for i, tile in enumerate(tiles):
            self.upsampler.tile_size = tile
            try:
                return self._enhance_once([frame])[0]
            except Exception as exc:
                if not _is_oom(exc):
                    raise EnhanceError(f"frame {number}: the model failed: {type(exc).__name__}: {exc}") from None
                if self.device == "cuda":
                    self._torch.cuda.empty_cache()
                if i + 1 < len(tiles):
                    log.warning("frame %d: out of memory with tile %s; retrying with tile %d", number, tile or "off", tiles[i + 1])
            finally:
                self.upsampler.tile_size = self.config.tile
        raise OutOfDeviceMemory(f"frame {number}: out of device memory even with {tiles[-1]}px tiles")

    def enhance_batch(self, frames: list[np.ndarray], numbers: list[int]) -> list[np.ndarray]:
        """:meth:`enhance` for consecutive frames, in one model call where it works.

        A batch that fails for any reason is redone frame by frame, so out-of-memory still ends in
        tiles and any other error names its frame; after an out-of-memory the batches shrink.

        Raises:
            OutOfDeviceMemory, EnhanceError: as :meth:`enhance`.
        """
        if len(frames) > 1 and self.config.tile == 0:
            try:
                return self._enhance_once(frames)
            except Exception as exc:
                if _is_oom(exc):
                    if self.device == "cuda":
                        self._torch.cuda.empty_cache()
                    self.batch_frames = max(1, len(frames) // 2)
                    log.warning("frames %d-%d: out of memory as a batch; %d frames per call from now on",
                                numbers[0], numbers[-1], self.batch_frames)
                else:
                    log.info("frames %d-%d failed as a batch (%s); redoing them one by one", numbers[0], numbers[-1], exc)
        return [self.enhance(frame, number) for frame, number in zip(frames, numbers)]

    def _enhance_once(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """The output frames for ``frames`` at the current tile size, placed on the canvas.

        Placement is done here once, never judged from an array's shape: an anamorphic source's
        model output can have the canvas's size without being placed (480x270 at SAR 4:3 into
        1080p: x4 is 1920x1080, the picture 1920x810)."""
        geometry, outscale = self.geometry, self.geometry.outscale
        if any(f.dtype != np.uint8 for f in frames):
            # High bit depth: RealESRGANer/GFPGANer themselves (they scale 16-bit input and return uint16).
            return [place(self._enhance_by_the_libraries(f), geometry) for f in frames]
        if self.upsampler.tile_size != 0 or len({f.shape for f in frames}) != 1:
            backgrounds = self._timed(lambda: [self.upsampler.enhance(f, outscale=outscale)[0] for f in frames])
        elif self.faces is None:
            return self._timed(lambda: self.upscale(frames, outscale, geometry))
        elif self.resize_on_device and geometry.picture == _outscale_size(frames[0], outscale):
            # The faces are pasted at the outscale size, which is the picture's: paste them into the
            # picture's region of the downloaded canvas, in place (no whole-frame copy on the host).
            canvases = self._timed(lambda: self.upscale(frames, outscale, geometry))
            (x, y), (w, h) = geometry.offset, geometry.picture
            self._faces(frames, [c[y : y + h, x : x + w] for c in canvases], in_place=True)
            return canvases
        else:
            # Anamorphic (or clipped) pictures with faces: the device stops at the outscale size
            # (or cv2 resizes to it); the faces are pasted at that size and place() resizes after.
            backgrounds = self._timed(lambda: self.upscale(frames, outscale))
        if self.faces is not None:
            backgrounds = self._faces(frames, backgrounds, in_place=False)
        return [place(b, geometry) for b in backgrounds]

    def _timed(self, call: Callable[[], Any]) -> Any:
        """``call()``, its seconds added to :attr:`model_s` (a GPU's work is waited for by the download)."""
        start = time.perf_counter()
        try:
            return call()
        finally:
            self.model_s += time.perf_counter() - start

    def _faces(self, frames: list[np.ndarray], backgrounds: list[np.ndarray], in_place: bool) -> list[np.ndarray]:
        assert self.faces is not None
        before = self.faces.model_s
        try:
            outputs, found = self.faces(frames, backgrounds, self.config.face_weight, in_place=in_place)
        finally:
            self.model_s += self.faces.model_s - before
        self.faces_found += found
        return outputs

    def _enhance_by_the_libraries(self, frame: np.ndarray) -> np.ndarray:
        if self.restorer is None:
            return self._timed(lambda: self.upsampler.enhance(frame, outscale=self.geometry.outscale)[0])
        restorer = self.restorer
        self._guard.error = None
        _, faces, output = self._timed(lambda: restorer.enhance(
            frame, has_aligned=False, only_center_face=False, paste_back=True, weight=self.config.face_weight
        ))
        if self._guard.error is not None:
            raise self._guard.error
        self.faces_found += len(faces)
        return output


def _outscale_size(frame: np.ndarray, outscale: float) -> tuple[int, int]:
    """RealESRGANer's (and GFPGANer's) output size for ``frame`` at ``outscale``: ``(width, height)``."""
    return int(frame.shape[1] * outscale), int(frame.shape[0] * outscale)


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def build_enhancer(config: ModelConfig, geometry_for: Callable[[int], Geometry], device: str,
                   factories: Factories | None = None) -> Enhancer:
    """The enhancer a worker uses: from ``factories.enhancer`` when there is one (``factories``
    default: this process's registry, :mod:`farm.enhance.factories`), else the real models."""
    factories = resolve_factories(config) if factories is None else factories
    if factories.enhancer is not None:
        return factories.enhancer(config, geometry_for, device)
    return ModelEnhancer(config, geometry_for, device, factories.face_detector)
