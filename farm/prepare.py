"""Everything checked before a job starts, without Ray: the input, the output location, the
weights, the options and the disk space; then the job directory is created or found again.

A failure here is one FarmError line, and nothing is written at the output path."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

from farm.config import JobConfig, ModelConfig, OutputConfig, job_id as make_job_id
from farm.enhance import check_weights
from farm.errors import FarmError, InputError, OutputError, StorageError, UsageError
from farm.jobs import SUBMIT, JobDir, JobSpec
from farm.plan import default_shard_frames
from farm.storage import Storage, is_url, nearest_existing, normalize, sha256_file, split_location
from farm.video.encode import check_encoder, chunk_settings, encodable_size, output_pix_fmt
from farm.video.geometry import Geometry, plan_geometry
from farm.video.mux import check_streams_fit, container_for
from farm.video.probe import SourceInfo, probe

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Prepared:
    cfg: JobConfig
    job: JobDir
    spec: JobSpec
    geometry: Geometry
    resumed: bool


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


def default_jobs_root(output: str) -> str:
    parent, _ = split_location(output)
    return f"{parent}/.farm-jobs"


def check_output(cfg: JobConfig) -> None:
    """Refuse an output that would overwrite the input or cannot be written."""
    out, src = normalize(cfg.output), normalize(cfg.input)
    if out == src or (not is_url(out) and os.path.exists(out) and os.path.exists(src) and os.path.samefile(out, src)):
        raise OutputError(f"the output {cfg.output} is the input; choose another output path")
    if cfg.out.codec != "png":
        container_for(out)
    elif os.path.splitext(out)[1].lower() in (".mkv", ".mp4", ".mov", ".webm", ".ts", ".avi", ".nut", ".m4v"):
        raise OutputError("--codec png writes a directory of PNG files; give a directory as the output, not a video name")
    if is_url(out):
        return
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        above = nearest_existing(parent)
        if not os.path.isdir(above):
            raise OutputError(f"the output {out} is under {above}, which is a file, not a folder; choose another output path")
        raise OutputError(f"the output folder {parent} does not exist; create it first")
    _check_writable(parent, "the output folder")
    if os.path.isdir(out) and cfg.out.codec != "png":
        raise OutputError(f"the output {out} is a directory; give a file name such as {out}/video.mkv")


def _check_writable(folder: str, what: str) -> None:
    """Create and remove a file in ``folder``: permission bits say nothing when running as root,
    and read-only mounts or special filesystems only show on a real attempt."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".farm-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"{what} {folder} is not writable ({exc.strerror or exc}); choose another location") from None


#: Bytes per output pixel assumed when estimating disk space. Lossless RGB (FFV1) of real video
#: takes about 1.3 bytes per pixel at 8 bits; 2 leaves room for grain and noise, which compress
#: worse; lossy codecs take much less. Chunks are in the output codec, so the job's chunks take
#: about what the output takes.
OUTPUT_BYTES_PER_PIXEL = {"ffv1": 2.0, "x264-lossless": 2.0, "png": 2.0, "x264": 0.1, "x265": 0.1, "av1": 0.1}


def estimate_bytes(frames: int, canvas: tuple[int, int], high_bit_depth: bool, codec: str) -> tuple[int, int]:
    """Conservative sizes of a job's chunks and of its output, in bytes (16-bit doubles both).
    The chunks are the output's packets, so both are about the same size."""
    pixels = frames * canvas[0] * canvas[1] * (2 if high_bit_depth else 1)
    size = int(pixels * OUTPUT_BYTES_PER_PIXEL[codec])
    return size, size


def free_bytes(location: str) -> tuple[int, int] | None:
    """``(free bytes, device id)`` of the filesystem that holds (or would hold) a local
    ``location``; None for object storage, whose space farm cannot know."""
    if is_url(location):
        return None
    path = nearest_existing(location)
    return shutil.disk_usage(path).free, os.stat(path).st_dev


def check_disk_space(cfg: JobConfig, job: JobDir, source: SourceInfo, geometry: Geometry) -> None:
    """Refuse a job whose segments (and output, on the same disk) would not fit, before any work.

    Segments already done by an earlier run of the job count as written.

    Raises:
        StorageError: naming the space needed and free, and what to do.
    """
    segments, output = estimate_bytes(source.num_frames, geometry.canvas, source.high_bit_depth, cfg.out.codec)
    if job.exists() and not cfg.restart:
        segments = max(0, segments - sum(int(r.get("bytes", 0)) for r in job.receipts()))
    jobs_disk = free_bytes(job.jobs_root)
    out_disk = free_bytes(normalize(cfg.output))
    needs: list[tuple[str, int, int]] = []  # (what, needed, free)
    if jobs_disk is not None and out_disk is not None and jobs_disk[1] == out_disk[1]:
        needs.append((f"{job.jobs_root} (segments and output)", segments + output, jobs_disk[0]))
    else:
        if jobs_disk is not None:
            needs.append((f"{job.jobs_root} (segments)", segments, jobs_disk[0]))
        if out_disk is not None:
            needs.append((f"{os.path.dirname(normalize(cfg.output))} (output)", output, out_disk[0]))
    for where, needed, free in needs:
        if needed > free:
            raise StorageError(
                f"not enough disk space: the job needs about {_gb(needed)} on {where}, {_gb(free)} is free; "
                "free some space, or pass --jobs-root on a larger disk"
            )


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def prepare(cfg: JobConfig) -> Prepared:
    """Everything checkable before Ray starts: input, output, weights, options; then the job dir.

    Raises:
        FarmError: one clear line; nothing is written at the output path.
    """
    check_output(cfg)
    source = probe(cfg.input)
    if cfg.out.codec != "png":
        check_streams_fit(source, cfg.output, cfg.out.codec)
    pix_fmt = output_pix_fmt(cfg.out.codec, cfg.out.pix_fmt, source.high_bit_depth)
    model = cfg.model
    model_scale = check_weights(model)
    geometry = plan_geometry(source.width, source.height, model_scale, model.scale, model.target, source.sample_aspect_ratio, model.square_pixels)
    if encodable_size(*geometry.canvas, pix_fmt) != geometry.canvas:
        log.warning("%s needs even sides: the %dx%d output loses its last odd row or column", pix_fmt, *geometry.canvas)
    out = cfg.out
    check_encoder(chunk_settings(out.codec, out.crf, out.preset, out.pix_fmt, geometry.canvas, source.high_bit_depth,
                                 source.index.pts, source.index.time_base))
    model, fingerprint, job_id = _identity(model, source)
    jobs_root = normalize(cfg.jobs_root) if cfg.jobs_root else default_jobs_root(normalize(cfg.output))
    job = JobDir(jobs_root, job_id)
    check_disk_space(cfg, job, source, geometry)
    resumed = False
    if job.exists() and cfg.restart:
        job.clear()
    elif job.exists() and job.read_spec().out != cfg.out:
        # Chunks are encoded in the output codec: other output settings cannot reuse them. (Until
        # the job id follows the output settings, the old job's chunks are dropped here.)
        log.warning("job %s was encoded with other output settings; its chunks are redone", job_id)
        job.clear()
    elif job.exists():
        spec = job.read_spec()
        if cfg.shard_frames is not None and cfg.shard_frames != spec.shard_frames:
            raise UsageError(
                f"job {job_id} was planned with --shard-frames {spec.shard_frames}; "
                "drop --shard-frames to resume it, or pass --restart to start over"
            )
        resumed = True
    if not resumed:
        spec = JobSpec(
            job_id=job_id,
            source=source,
            model=model,
            shard_frames=cfg.shard_frames or default_shard_frames(source.num_frames),
            input_fingerprint=fingerprint,
            created=time.time(),
            out=cfg.out,
        )
        job.write_spec(spec)
    # The spec keeps the model settings it was created with; weights paths may have moved since.
    spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, weights_dir=model.weights_dir, sr_weights=model.sr_weights, face_weights=model.face_weights, trust_weights=model.trust_weights))
    if resumed:
        job.write_spec(spec)
    job.storage.write_json(SUBMIT, {"output": normalize(cfg.output), "out": cfg.out.to_json(), "input": source.location})
    return Prepared(cfg, job, spec, geometry, resumed)


def _size(location: str) -> int:
    parent, name = split_location(location)
    return Storage(parent).size(name)


def identify(cfg: JobConfig) -> str | None:
    """The job id ``cfg`` will have, when the input (and any own weights) are readable here."""
    try:
        return _identity(cfg.model, probe(cfg.input))[2]
    except (FarmError, OSError):
        return None


def _identity(model: ModelConfig, source: SourceInfo) -> tuple[ModelConfig, str, str]:
    """``model`` with the hashes of a user's own weights files, the input's fingerprint, and the
    job id they give: the same input, settings and weights always make the same job."""
    model = dataclasses.replace(
        model,
        sr_weights_sha256=sha256_file(model.sr_weights) if model.sr_weights else None,
        face_weights_sha256=sha256_file(model.face_weights) if model.face and model.face_weights else None,
    )
    fingerprint = input_fingerprint(source.location, source.size_bytes or _size(source.location))
    return model, fingerprint, make_job_id(source.location, fingerprint, model)


def load_submit(jobs_root: str, job_id: str) -> dict[str, Any]:
    """The output settings of a job's last submit (for ``farm resume``)."""
    job = JobDir(jobs_root, job_id)
    if not job.exists():
        raise InputError(f"no job {job_id} under {jobs_root}; `farm ls --jobs-root {jobs_root}` lists the jobs")
    try:
        return job.storage.read_json(SUBMIT)
    except FileNotFoundError:
        raise StorageError(f"job {job_id} has no recorded submit; run `farm submit` again") from None


def resume_config(jobs_root: str, job_id: str, **overrides: Any) -> JobConfig:
    """A JobConfig that continues ``job_id`` exactly as it was submitted."""
    job = JobDir(jobs_root, job_id)
    spec = job.read_spec()
    last = load_submit(jobs_root, job_id)
    model = spec.model
    return JobConfig(
        input=last["input"],
        output=last["output"],
        model=model,
        out=OutputConfig(**last["out"]),
        jobs_root=jobs_root,
        **{k: v for k, v in overrides.items() if v is not None},
    )
