"""The models: reading ESRGAN-family and GFPGAN weights, and the one wrapper that builds
RealESRGANer (and GFPGANer around it, as the background upsampler) for a device.

torch, basicsr, realesrgan, gfpgan and facexlib are imported lazily, after the torchvision shim, so
importing farm stays cheap and a new user never meets basicsr's broken import."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import numpy as np

from farm.config import ModelConfig
from farm.enhance.factories import Enhancer, Factories, face_detector_factory, resolve_factories
from farm.enhance.faces import FacePath
from farm.enhance.registry import FACE_DETECTOR, FACE_MODELS, FACE_PARSER, SR_MODELS, WeightsFile
from farm.enhance.upscale import BatchUpscaler, batch_for, place
from farm.enhance.weights import file_sha256, verify_file
from farm.errors import EnhanceError, MissingWeights, OutOfDeviceMemory, UnknownModel, UsageError, WeightsError
from farm.plan import Geometry

log = logging.getLogger(__name__)

#: Tile sizes tried, largest first, when a frame runs out of device memory.
OOM_TILES = (512, 256, 128, 64)


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


# ----------------------------------------------------------------------------------------------
# Weights


def registry_path(weights_dir: str | None, weights: WeightsFile, what: str) -> str:
    """Where a registry file must be, or a MissingWeights naming the file and the fix."""
    if weights_dir is None:
        raise MissingWeights(f"no weights dir for {what} ({weights.file}); pass --weights-dir DIR")
    path = os.path.join(weights_dir, weights.file)
    if not os.path.isfile(path):
        raise MissingWeights(
            f"{path} not found ({what}); run `farm models fetch --weights-dir {weights_dir}` "
            "or pass --weights-dir pointing at a folder that has it"
        )
    return path


def load_state_dict(path: str) -> dict[str, Any]:
    """Read a weights file and return its parameter dict (``params_ema`` preferred, as the
    Real-ESRGAN and GFPGAN loaders do).

    Raises:
        MissingWeights, WeightsError: missing, unreadable, or not a state dict.
    """
    import torch

    if not os.path.isfile(path):
        raise MissingWeights(f"weights file {path} not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise WeightsError(f"{path} is not a readable PyTorch weights file ({type(exc).__name__}); re-download it") from None
    if isinstance(loaded, dict):
        for key in ("params_ema", "params"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors; it is not a model weights file")
    return loaded


@dataclass(frozen=True, slots=True)
class SRArch:
    """An ESRGAN-family network's shape, as read from its weights."""

    kind: Literal["rrdb", "compact"]
    scale: int
    params: dict[str, Any]

    def build(self):
        install_torchvision_shim()
        if self.kind == "rrdb":
            from basicsr.archs.rrdbnet_arch import RRDBNet

            return RRDBNet(**self.params)
        from realesrgan.archs.srvgg_arch import SRVGGNetCompact

        return SRVGGNetCompact(**self.params)


def sr_arch_from_state_dict(state: dict[str, Any], path: str) -> SRArch:
    """Recognise RRDBNet or SRVGGNetCompact and its width, depth and scale from the weights.

    Raises:
        WeightsError: the keys are not of either architecture.
    """
    if "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state:
        first = state["conv_first.weight"]
        num_feat, in_ch = int(first.shape[0]), int(first.shape[1])
        unshuffle = {3: 4, 12: 2, 48: 1}
        if in_ch not in unshuffle:
            raise WeightsError(f"{path}: RRDBNet with {in_ch} input channels is not a 3-channel x1/x2/x4 model")
        num_block = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body.") and ".rdb1.conv1.weight" in k)
        params: dict[str, Any] = {
            "num_in_ch": 3,
            "num_out_ch": int(state["conv_last.weight"].shape[0]),
            "num_feat": num_feat,
            "num_block": num_block,
            "num_grow_ch": int(state["body.0.rdb1.conv1.weight"].shape[0]),
            "scale": unshuffle[in_ch],
        }
        return SRArch("rrdb", unshuffle[in_ch], params)
    if "body.0.weight" in state and state["body.0.weight"].dim() == 4:
        convs = sorted(int(k.split(".")[1]) for k, v in state.items() if k.startswith("body.") and k.endswith(".weight") and v.dim() == 4)
        if not convs or convs != list(range(0, 2 * len(convs), 2)):
            raise WeightsError(f"{path}: compact model with an unexpected layer layout")
        if "body.1.weight" not in state:
            raise WeightsError(f"{path}: compact model without PReLU activations is not supported")
        first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
        num_in, num_feat = int(first.shape[1]), int(first.shape[0])
        out_ch = 3
        upscale_sq = int(last.shape[0]) // out_ch
        upscale = int(round(upscale_sq**0.5))
        if upscale * upscale * out_ch != int(last.shape[0]):
            raise WeightsError(f"{path}: compact model's last layer fits no integer scale")
        params = {
            "num_in_ch": num_in,
            "num_out_ch": out_ch,
            "num_feat": num_feat,
            "num_conv": len(convs) - 2,
            "upscale": upscale,
            "act_type": "prelu",
        }
        return SRArch("compact", upscale, params)
    sample = ", ".join(list(state)[:3])
    raise WeightsError(
        f"{path}: unknown architecture (first keys: {sample}); farm reads RRDBNet and SRVGGNetCompact weights "
        "in Real-ESRGAN's key layout"
    )


def resolve_sr(config: ModelConfig) -> tuple[str, WeightsFile | None]:
    """The SR weights path for ``config`` and, for registry models, the registry entry."""
    entry = sr_model(config)
    if config.sr_weights:
        return config.sr_weights, None
    return registry_path(config.weights_dir, entry.weights, f"model {config.model}"), entry.weights


def sr_model(config: ModelConfig):
    """The registry entry of ``config.model``.

    Raises:
        UnknownModel: naming the known models.
    """
    if config.model not in SR_MODELS:
        raise UnknownModel(f"unknown model {config.model!r}; known: {', '.join(SR_MODELS)}")
    return SR_MODELS[config.model]


def check_weights(config: ModelConfig) -> int:
    """Fail fast, before any work, on weights that are missing, damaged, or do not fit the
    request; returns the SR model's native scale.

    Raises:
        UnknownModel, MissingWeights, WeightsError.
    """
    factories = resolve_factories(config)
    if factories.enhancer is not None:
        return factories.enhancer.model_scale(config)
    check_node_weights(config, factories)
    path, _ = resolve_sr(config)
    arch = sr_arch_from_state_dict(load_state_dict(path), path)
    expected = sr_model(config)
    if config.sr_weights is None and (arch.kind, arch.scale) != (expected.arch, expected.scale):
        raise WeightsError(f"{path} is a x{arch.scale} {arch.kind} model, but {config.model} is x{expected.scale} {expected.arch}")
    if config.face:
        face_path, _ = _face_weights_path(config)
        gfpgan_channel_multiplier(load_state_dict(face_path), face_path)
    return arch.scale


def registry_files(config: ModelConfig, factories: Factories | None = None) -> list[tuple[str, WeightsFile]]:
    """The registry files ``config`` loads, with their paths; a user's own weights files
    (``--sr-weights``, ``--face-weights``) are not registry files, and an enhancer or detector
    from a factory (``factories``, default: this process's registry) loads none.

    Raises:
        UnknownModel, MissingWeights: naming the file and the command that fetches it.
    """
    factories = resolve_factories(config) if factories is None else factories
    if factories.enhancer is not None:
        return []
    if config.face and factories.face_detector is None and config.face_detector != "retinaface_resnet50":
        raise UsageError(f"unknown face detector {config.face_detector!r}; known: retinaface_resnet50")
    files = []
    path, registry = resolve_sr(config)
    if registry is not None:
        files.append((path, registry))
    if config.face:
        face_path, face_registry = _face_weights_path(config)
        if face_registry is not None:
            files.append((face_path, face_registry))
        files.append((registry_path(config.weights_dir, FACE_PARSER, "face parser"), FACE_PARSER))
        if factories.face_detector is None:
            files.append((registry_path(config.weights_dir, FACE_DETECTOR, "face detector"), FACE_DETECTOR))
    return files


def check_node_weights(config: ModelConfig, factories: Factories | None = None, node: str | None = None) -> None:
    """On a worker, before loading: every registry file ``config`` needs is in the weights dir
    and (unless ``trust_weights``) is the official release, and a user's own weights files
    (``--sr-weights``, ``--face-weights``) are the ones the job was submitted with (their sha256
    in the job's record), not whatever this node holds at that path. Hashes are cached per node,
    so the workers of one node hash each file once.

    Raises:
        UnknownModel, MissingWeights, WeightsError: naming the file (and ``node``).
    """
    factories = resolve_factories(config) if factories is None else factories
    files = registry_files(config, factories)  # raises for an unknown model or detector, or a missing file
    if not config.trust_weights:
        for path, weights in files:
            verify_file(path, weights)
    if factories.enhancer is not None:
        return
    own = [(config.sr_weights, config.sr_weights_sha256)]
    if config.face:
        own.append((config.face_weights, config.face_weights_sha256))
    for path, recorded in own:
        if path is None or recorded is None:
            continue
        if not os.path.isfile(path):
            raise MissingWeights(f"{path} not found on node {node or socket.gethostname()}; the job needs that weights file on every node")
        found = file_sha256(path)
        if found != recorded:
            raise WeightsError(
                f"node {node or socket.gethostname()} has another file at {path} (sha256 {found}, the job's is {recorded}); "
                "copy the submitted file to that path on every node, or put it on shared storage"
            )


def _face_weights_path(config: ModelConfig) -> tuple[str, WeightsFile | None]:
    if config.face_model not in FACE_MODELS:
        raise UnknownModel(f"unknown face model {config.face_model!r}; known: {', '.join(FACE_MODELS)}")
    if config.face_weights:
        if not os.path.isfile(config.face_weights):
            raise MissingWeights(f"face weights file {config.face_weights} not found")
        return config.face_weights, None
    entry = FACE_MODELS[config.face_model]
    return registry_path(config.weights_dir, entry.weights, f"face model {config.face_model}"), entry.weights


def gfpgan_channel_multiplier(state: dict[str, Any], path: str) -> int:
    """GFPGAN's clean architecture scales its U-Net by the StyleGAN2 channel multiplier."""
    first = state.get("conv_body_first.weight")
    if first is None or "stylegan_decoder.style_conv1.modulated_conv.weight" not in state:
        raise WeightsError(f"{path} is not GFPGAN (clean architecture) weights")
    return max(1, int(first.shape[0]) // 16)


# ----------------------------------------------------------------------------------------------
# The wrapper


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


def _new_upsampler(network, scale: int, tile: int, half: bool, device):
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


def _faces_in_16_bit(helper) -> None:
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


class _Guard:
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


class ModelEnhancer:
    """RealESRGANer, with GFPGANer around it when faces are on, loaded once on one device."""

    def __init__(self, config: ModelConfig, geometry_for: Callable[[int], Geometry], device: str,
                 detector_factory: Callable[[], Any] | None = None) -> None:
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
        self.upsampler = _new_upsampler(network, arch.scale, config.tile, half, torch.device(device))
        # channels_last: the layout cuDNN's fp16 tensor-core kernels want, and faster on these CPUs
        # too (RRDBNet x4plus, 64x48 frame: 0.65 → 0.57 s); results stay within ±1 of the default.
        self.upsampler.model = self.upsampler.model.to(memory_format=torch.channels_last)
        if device == "cuda":
            torch.backends.cudnn.benchmark = True  # one frame size per job: tune the convs once
        if config.compile:
            self.upsampler.model = torch.compile(self.upsampler.model)
        self.upscale = BatchUpscaler(self.upsampler, device, channels_last=True)
        self.batch_frames: int | None = None  # frames per model call; None: chosen by frame size
        self.restorer = None
        self.faces: FacePath | None = None
        self.faces_found = 0
        if config.face:
            from gfpgan import GFPGANer

            face_path, _ = _face_weights_path(config)
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
            self._guard = _Guard(self.restorer.gfpgan)
            self.restorer.gfpgan = self._guard
            _faces_in_16_bit(self.restorer.face_helper)
            # Batches of faces help on a GPU; on a CPU GFPGAN's grouped modulated convs get slower
            # per face in batches (GFPGAN v1.4 here: 2.4 s alone, 2.55 s each in pairs), so one at a time.
            self.faces = FacePath(self.restorer, device, face_batch=8 if device == "cuda" else 1)

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
                return place(self._enhance_once([frame])[0], self.geometry)
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
                return [place(out, self.geometry) for out in self._enhance_once(frames)]
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
        """The pictures for ``frames`` at the current tile size (not yet placed on the canvas)."""
        outscale = self.geometry.outscale
        if any(f.dtype != np.uint8 for f in frames):
            # High bit depth: RealESRGANer/GFPGANer themselves (they scale 16-bit input and return uint16).
            return [self._enhance_by_the_libraries(f) for f in frames]
        if self.upsampler.tile_size == 0 and len({f.shape for f in frames}) == 1:
            backgrounds = self.upscale(frames, outscale)
        else:
            backgrounds = [self.upsampler.enhance(f, outscale=outscale)[0] for f in frames]
        if self.faces is None:
            return backgrounds
        outputs, found = self.faces(frames, backgrounds, self.config.face_weight)
        self.faces_found += found
        return outputs

    def _enhance_by_the_libraries(self, frame: np.ndarray) -> np.ndarray:
        if self.restorer is None:
            output, _ = self.upsampler.enhance(frame, outscale=self.geometry.outscale)
            return output
        self._guard.error = None
        _, faces, output = self.restorer.enhance(
            frame, has_aligned=False, only_center_face=False, paste_back=True, weight=self.config.face_weight
        )
        if self._guard.error is not None:
            raise self._guard.error
        self.faces_found += len(faces)
        return output


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
