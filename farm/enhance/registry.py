"""The model registry, as data: every official weights file farm knows, where it comes from, and
its sha256. Nothing here imports torch; loading lives in :mod:`farm.enhance`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_GFPGAN = "https://github.com/TencentARC/GFPGAN/releases/download"
_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download"


@dataclass(frozen=True, slots=True)
class WeightsFile:
    """One official release file."""

    file: str
    url: str
    sha256: str


@dataclass(frozen=True, slots=True)
class SRModel:
    """A Real-ESRGAN family model. Its exact shape is read from the weights; ``arch`` and
    ``scale`` are what the registry file must turn out to be."""

    name: str
    weights: WeightsFile
    arch: Literal["rrdb", "compact"]
    scale: int
    about: str


@dataclass(frozen=True, slots=True)
class FaceModel:
    """A GFPGAN face restoration model."""

    name: str
    weights: WeightsFile
    about: str


SR_MODELS: dict[str, SRModel] = {
    m.name: m
    for m in (
        SRModel(
            "realesrgan-x4plus",
            WeightsFile(
                "RealESRGAN_x4plus.pth",
                f"{_ESRGAN}/v0.1.0/RealESRGAN_x4plus.pth",
                "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
            ),
            "rrdb",
            4,
            "general photos and video, x4 (RRDBNet, 23 blocks)",
        ),
        SRModel(
            "realesrgan-x2plus",
            WeightsFile(
                "RealESRGAN_x2plus.pth",
                f"{_ESRGAN}/v0.2.1/RealESRGAN_x2plus.pth",
                "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
            ),
            "rrdb",
            2,
            "general photos and video, x2 (RRDBNet, 23 blocks); a quarter of x4plus's cost",
        ),
        SRModel(
            "realesr-general-x4v3",
            WeightsFile(
                "realesr-general-x4v3.pth",
                f"{_ESRGAN}/v0.2.5.0/realesr-general-x4v3.pth",
                "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
            ),
            "compact",
            4,
            "general scenes, x4, compact (SRVGGNet); about 15x cheaper than x4plus",
        ),
        SRModel(
            "realesrgan-x4plus-anime-6b",
            WeightsFile(
                "RealESRGAN_x4plus_anime_6B.pth",
                f"{_ESRGAN}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
                "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
            ),
            "rrdb",
            4,
            "anime and illustration, x4 (RRDBNet, 6 blocks)",
        ),
    )
}

FACE_MODELS: dict[str, FaceModel] = {
    m.name: m
    for m in (
        FaceModel(
            "gfpgan-1.4",
            WeightsFile(
                "GFPGANv1.4.pth",
                f"{_GFPGAN}/v1.3.4/GFPGANv1.4.pth",
                "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
            ),
            "GFPGAN v1.4 (clean architecture)",
        ),
        FaceModel(
            "gfpgan-1.3",
            WeightsFile(
                "GFPGANv1.3.pth",
                f"{_GFPGAN}/v1.3.0/GFPGANv1.3.pth",
                "c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
            ),
            "GFPGAN v1.3 (clean architecture)",
        ),
    )
}

#: facexlib's models used by GFPGANer: the face detector and the face parser.
FACE_DETECTOR = WeightsFile(
    "detection_Resnet50_Final.pth",
    f"{_FACEXLIB}/v0.1.0/detection_Resnet50_Final.pth",
    "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
)
FACE_PARSER = WeightsFile(
    "parsing_parsenet.pth",
    f"{_FACEXLIB}/v0.2.2/parsing_parsenet.pth",
    "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
)



def all_weights() -> dict[str, WeightsFile]:
    """Every registry file by a short name (model names, plus ``face-detector``, ``face-parser``)."""
    files = {name: m.weights for name, m in SR_MODELS.items()}
    files.update({name: m.weights for name, m in FACE_MODELS.items()})
    files["face-detector"] = FACE_DETECTOR
    files["face-parser"] = FACE_PARSER
    return files
