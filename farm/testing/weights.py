"""Random weights in the real architectures (RRDBNet, SRVGGNetCompact, GFPGANv1Clean, RetinaFace,
ParseNet), in the layouts the real loaders read: the real model code runs in tests on a CPU."""

from __future__ import annotations

import os

import numpy as np

from farm.testing.clips import pattern_frame

# ----------------------------------------------------------------------------------------------
# Random weights in the real architectures


def _save(state: dict, path: str, key: str | None = "params_ema") -> str:
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({key: state} if key else state, path)
    return path


def write_rrdbnet_weights(
    path: str, *, scale: int = 4, num_feat: int = 8, num_block: int = 1, num_grow_ch: int = 4, seed: int = 0
) -> str:
    """Random RRDBNet weights (tiny by default; ``num_feat=64, num_block=23, num_grow_ch=32`` is
    RealESRGAN_x4plus's size).

    Freshly initialised RRDBNets output values just below 0, which RealESRGANer clamps to a black
    frame, and a comparison of black frames proves nothing. The last layer is therefore rescaled
    so that, on test patterns, each channel's output has mean 0.5 and deviation 0.2: the output
    is a picture that depends on every input pixel nearby, and on the input's precision."""
    import torch

    from farm.enhance.patches import install_torchvision_shim

    install_torchvision_shim()
    from basicsr.archs.rrdbnet_arch import RRDBNet

    torch.manual_seed(seed)
    net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch, scale=scale)
    probe = np.stack([pattern_frame(i, 32, 24) for i in range(4)]).astype(np.float32) / 255
    with torch.no_grad():
        out = net(torch.from_numpy(probe).permute(0, 3, 1, 2))
        mean, std = out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3)).clamp_min(1e-6)
        gain = 0.2 / std
        net.conv_last.weight.mul_(gain[:, None, None, None])
        net.conv_last.bias.copy_((net.conv_last.bias - mean) * gain + 0.5)
    return _save(net.state_dict(), path)


def write_compact_weights(path: str, *, scale: int = 4, num_feat: int = 8, num_conv: int = 2, seed: int = 0) -> str:
    """Random SRVGGNetCompact weights (``num_feat=64, num_conv=32`` is realesr-general-x4v3's size)."""
    import torch

    from farm.enhance.patches import install_torchvision_shim

    install_torchvision_shim()
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    torch.manual_seed(seed)
    net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv, upscale=scale, act_type="prelu")
    return _save(net.state_dict(), path, key="params")


def write_gfpgan_weights(path: str, *, channel_multiplier: int = 1, seed: int = 0) -> str:
    """Random GFPGAN (clean architecture) weights; GFPGANer's face size is fixed at 512."""
    import torch

    from farm.enhance.patches import install_torchvision_shim

    install_torchvision_shim()
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    torch.manual_seed(seed)
    net = GFPGANv1Clean(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=channel_multiplier,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )
    return _save(net.state_dict(), path)


def write_face_helper_weights(weights_dir: str, *, find_no_faces: bool = True, seed: int = 0) -> tuple[str, str]:
    """Random facexlib detector (RetinaFace-ResNet50) and parser (ParseNet) weights under their
    registry names. With ``find_no_faces`` the detector's classification head is zeroed, so it
    finds no face (random detectors otherwise "find" dozens per frame)."""
    import torch

    from farm.enhance.patches import install_torchvision_shim
    from farm.enhance.registry import FACE_DETECTOR, FACE_PARSER

    install_torchvision_shim()
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.parsenet import ParseNet

    torch.manual_seed(seed)
    detector = RetinaFace(network_name="resnet50", half=False, device="cpu").state_dict()
    if find_no_faces:
        for key, value in detector.items():
            if key.startswith("ClassHead."):
                value.zero_()
                if key.endswith(".bias"):
                    value[1::2] = -100.0  # "face" logit far below "background" for every anchor
    parser = ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict()
    det_path = _save(detector, os.path.join(weights_dir, FACE_DETECTOR.file), key=None)
    parse_path = _save(parser, os.path.join(weights_dir, FACE_PARSER.file), key=None)
    return det_path, parse_path
