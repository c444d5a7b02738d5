"""Reading model weights: a weights file's state dict, and the network it is, sniffed from its keys
(RRDBNet or SRVGGNetCompact and their shape; GFPGAN's channel multiplier), so a user's own file
needs no flags. torch and the architectures are imported lazily."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from farm.enhance.patches import install_torchvision_shim
from farm.errors import MissingWeights, WeightsError


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


def tensors_sha256(state: dict[str, Any]) -> str:
    """A digest of a state dict's content, whatever file holds it: every key in order, with its
    dtype, shape and little-endian bytes."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for key, tensor in state.items():
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{key}:{array.dtype.str}:{list(array.shape)};".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SRArch:
    """An ESRGAN-family network's shape, as read from its weights."""

    kind: Literal["rrdb", "compact"]
    scale: int
    params: dict[str, Any]

    def describe(self) -> str:
        p = self.params
        if self.kind == "rrdb":
            return f"x{self.scale} RRDBNet ({p['num_block']} blocks, {p['num_feat']} features)"
        return f"x{self.scale} SRVGGNetCompact ({p['num_conv']} convolutions, {p['num_feat']} features)"

    def flop_per_input_pixel(self) -> float:
        """Multiply-adds x 2 of one forward pass per input pixel (convolutions only; x4plus: 35.9 M)."""
        p = self.params
        f = p["num_feat"]
        if self.kind == "compact":
            macs = 9 * (p["num_in_ch"] * f + p["num_conv"] * f * f + f * p["num_out_ch"] * p["upscale"] ** 2)
            return 2.0 * macs
        g, unshuffle = p["num_grow_ch"], 4 // self.scale  # the body runs at 1/unshuffle² of the input's pixels
        rdb = 9 * (f * g + (f + g) * g + (f + 2 * g) * g + (f + 3 * g) * g + (f + 4 * g) * f)
        body = 9 * p["num_in_ch"] * unshuffle**2 * f + 3 * rdb * p["num_block"] + 9 * f * f
        upsampled = 9 * f * f * (4 + 16 + 16) + 9 * f * p["num_out_ch"] * 16  # conv_up1 at x2, conv_up2, conv_hr, conv_last at x4
        return 2.0 * (body + upsampled) / unshuffle**2

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


def gfpgan_channel_multiplier(state: dict[str, Any], path: str) -> int:
    """GFPGAN's clean architecture scales its U-Net by the StyleGAN2 channel multiplier."""
    first = state.get("conv_body_first.weight")
    if first is None or "stylegan_decoder.style_conv1.modulated_conv.weight" not in state:
        raise WeightsError(f"{path} is not GFPGAN (clean architecture) weights")
    return max(1, int(first.shape[0]) // 16)
