"""A job's identity: the same input (its size and the sha256 of its first and last MiB), settings
(model and encode) and weights always make the same job id. Reads only: the input's two ends and
a user's own weights files."""

from __future__ import annotations

import dataclasses

from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.config import job_id as make_job_id
from farm.enhance.hashes import file_sha256
from farm.enhance.weights import sr_weights_source
from farm.errors import FarmError
from farm.media import SourceInfo
from farm.storage.fs import Storage, split_location
from farm.video.probe import probe


def input_fingerprint(location: str, size: int) -> str:
    """Identity of the input's content: its size and the sha256 of its first and last MiB."""
    import hashlib

    digest = hashlib.sha256(str(size).encode())
    parent, name = split_location(location)
    with Storage(parent).open(name) as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            digest.update(f.read(1 << 20))
    return digest.hexdigest()


def _size(location: str) -> int:
    parent, name = split_location(location)
    return Storage(parent).size(name)


def identify(cfg: JobConfig) -> str | None:
    """The job id ``cfg`` will have, when the input (and any own weights) are readable here."""
    try:
        return job_identity(cfg.model, probe(cfg.input), cfg.out, cfg.frames)[2]
    except (FarmError, OSError):
        return None


def job_identity(model: ModelConfig, source: SourceInfo, out: OutputConfig, frames: tuple[int, int] | None = None) -> tuple[ModelConfig, str, str]:
    """``model`` with the hashes of a user's own weights files, the input's fingerprint, and the
    job id they give: the same input, settings (model and encode) and weights always make the
    same job."""
    model = dataclasses.replace(
        model,
        sr_weights_sha256=file_sha256(model.sr_weights) if model.sr_weights else None,
        face_weights_sha256=file_sha256(model.face_weights) if model.face and model.face_weights else None,
        sr_weights_source=sr_weights_source(model),
    )
    fingerprint = input_fingerprint(source.location, source.size_bytes or _size(source.location))
    return model, fingerprint, make_job_id(source.location, fingerprint, model, out, frames)
