"""Opening a job, the one step before Ray that writes: the checks (:mod:`farm.preflight`) and the
identity (:mod:`farm.identity`), the ownership taken, then the spec and this submit's record written
(a job another live driver holds is left as it is); what a submit wrote; resuming a recorded submit."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from farm.config import JobConfig, ModelConfig
from farm.enhance.weights import check_weights
from farm.errors import FarmError, StorageError, UsageError
from farm.identity import job_identity
from farm.jobfiles import SpeedSettings, SubmitRecord
from farm.media import SourceInfo
from farm.plan import DEFAULT_PART_FRAMES, Geometry, default_shard_frames, plan_geometry, search_ranges, snap_window
from farm.preflight import check_disk_space, check_output
from farm.storage.fs import is_url, normalize, split_location
from farm.storage.jobdir import JobDir
from farm.spec import JobSpec, frames_per_second
from farm.storage.ownership import Ownership
from farm.video.containers import check_streams_fit
from farm.video.encode import check_encoder, chunk_settings, encodable_size, output_pix_fmt
from farm.video.mux import verify
from farm.video.probe import cut_source, probe
from farm.video.scenes import detect_scene_cuts

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Owned:
    """A job this driver holds: its spec and this submit's record are written, and a run may start.
    ``resumed``: the job directory was there (and not cleared by ``--restart``)."""

    cfg: JobConfig
    job: JobDir
    spec: JobSpec
    geometry: Geometry
    resumed: bool
    disk_note: str  # the disk estimate, shown before work
    owner: Ownership  # this driver's hold on the job, renewed in its thread until released

    def __post_init__(self) -> None:
        _check_one_job(self.job, self.spec, self.owner)


@dataclass(frozen=True, slots=True)
class Following:
    """A job another live driver holds: nothing in its directory was written, and the caller
    follows that driver (:func:`farm.follow.follow`) until it may take the job over. ``spec``: the
    job's, or a provisional one not stored (the job has no directory yet)."""

    cfg: JobConfig
    job: JobDir
    spec: JobSpec
    disk_note: str  # the disk estimate, shown before work
    owner: Ownership  # not held: ``owner.holder`` names the driver that holds the job

    def __post_init__(self) -> None:
        _check_one_job(self.job, self.spec, self.owner)


def _check_one_job(job: JobDir, spec: JobSpec, owner: Ownership) -> None:
    if spec.job_id != job.job_id or owner.job.job_id != job.job_id:
        raise ValueError(f"job {job.job_id} given job {spec.job_id}'s spec and job {owner.job.job_id}'s ownership; "
                         "the three must be one job's")


def default_jobs_root(output: str) -> str:
    parent, _ = split_location(output)
    return f"{parent}/.farm-jobs"


@dataclass(frozen=True, slots=True)
class Checked:
    """A submit that passed every check made before Ray (nothing written): its source, the model
    settings its identity was taken from, the plan's geometry, and its job directory."""

    cfg: JobConfig
    source: SourceInfo
    model: ModelConfig
    model_scale: int
    geometry: Geometry
    fingerprint: str
    job: JobDir
    disk_note: str  # the disk estimate, shown before work


def check_job(cfg: JobConfig, *, source: SourceInfo | None = None) -> Checked:
    """Everything checkable before Ray starts: input, output, weights, options, disk; and the job's
    identity. ``source``: the input's probe, when the caller has made it.

    Raises:
        FarmError: one clear line; nothing is written anywhere.
    """
    check_output(cfg)
    source = probe(cfg.input) if source is None else source
    if cfg.frames is not None:  # a preview clip: a job of those frames only (its own id)
        source = cut_source(source, *cfg.frames)
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
    model, fingerprint, job_id = job_identity(model, source, cfg.out, cfg.frames)
    jobs_root = normalize(cfg.jobs_root) if cfg.jobs_root else default_jobs_root(normalize(cfg.output))
    job = JobDir(jobs_root, job_id)
    return Checked(cfg, source, model, model_scale, geometry, fingerprint, job, check_disk_space(cfg, job, source, geometry))


def open_job(cfg: JobConfig, *, source: SourceInfo | None = None) -> Owned | Following:
    """The checks of :func:`check_job`, then the job directory.

    Returns:
        :class:`Owned` when this driver now holds the job (its spec and this submit's record
        written), :class:`Following` when another live driver does (nothing written).

    Raises:
        FarmError: one clear line; nothing is written at the output path.
    """
    c = check_job(cfg, source=source)
    source, model, model_scale, geometry, fingerprint, job, disk_note = c.source, c.model, c.model_scale, c.geometry, c.fingerprint, c.job, c.disk_note
    job_id = job.job_id
    # Ownership first: a job another driver runs is not touched (not cleared by --restart, its
    # spec and submit record not rewritten); this driver follows it instead.
    owner = Ownership(job, output=normalize(cfg.output))
    if not owner.try_take():
        spec = job.read_spec() if job.exists() else JobSpec(job_id, source, model, cfg.shard_frames or default_shard_frames(source.num_frames),
                                                           fingerprint, time.time(), out=cfg.out)
        return Following(cfg, job, spec, disk_note, owner)
    resumed = False
    if job.exists() and cfg.restart:
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
        shard_frames = cfg.shard_frames or default_shard_frames(source.num_frames)
        spec = JobSpec(
            job_id=job_id,
            source=source,
            model=model,
            shard_frames=shard_frames,
            input_fingerprint=fingerprint,
            created=time.time(),
            out=cfg.out,
            scene_cuts=find_scene_cuts(source, shard_frames),
            model_scale=model_scale,
            geometry=geometry,
            part_frames=DEFAULT_PART_FRAMES,
        )
        job.write_spec(spec)
    # The spec keeps the model settings it was created with; weights paths may have moved since.
    spec = dataclasses.replace(spec, out=cfg.out, model=dataclasses.replace(spec.model, weights_dir=model.weights_dir, sr_weights=model.sr_weights, face_weights=model.face_weights, trust_weights=model.trust_weights))
    if resumed:
        job.write_spec(spec)
    # The speed settings this submit runs with (they change no pixel): what `farm tune` set, or the user.
    settings = SpeedSettings(cfg.workers, cfg.gpus_per_worker, cfg.batch_frames, model.precision, model.compile, model.tile,
                             cfg.tuned_from)
    # A clip's job records its frames, so that it resumes as the clip.
    job.write_submit(SubmitRecord(normalize(cfg.output), cfg.out, source.location, settings, cfg.frames))
    return Owned(cfg, job, spec, geometry, resumed, disk_note, owner)


def find_scene_cuts(source: SourceInfo, shard_frames: int) -> tuple[int, ...]:
    """The scene cuts near the planned boundaries of a new job (decoded once, stored in its spec)."""
    window = snap_window(shard_frames, frames_per_second(source))
    ranges = search_ranges(source.num_frames, shard_frames, window)
    if not ranges:
        return ()
    t = time.perf_counter()
    cuts = detect_scene_cuts(source.location, source.video_stream, source.index, ranges)
    log.info("scene cuts near %d boundaries: %d found in %.1f s", len(ranges), len(cuts), time.perf_counter() - t)
    return cuts


def load_submit(jobs_root: str, job_id: str) -> SubmitRecord:
    """The output settings of a job's last submit (for ``farm resume``)."""
    submit = JobDir.existing(jobs_root, job_id).read_submit()
    if submit is None:
        raise StorageError(f"job {job_id} has no recorded submit; run `farm submit` again")
    return submit


def resume_config(jobs_root: str, job_id: str, **overrides: Any) -> JobConfig:
    """A JobConfig that continues ``job_id`` exactly as it was submitted."""
    job = JobDir(jobs_root, job_id)
    spec = job.read_spec()
    last = load_submit(jobs_root, job_id)
    return JobConfig(
        input=last.input,
        output=last.output,
        model=spec.model,
        out=last.out,
        jobs_root=jobs_root,
        frames=last.frames,
        **{k: v for k, v in overrides.items() if v is not None},
    )


def output_current(p: Owned | Following) -> bool:
    """This submit's output needs no new concatenation: this job wrote it, with these encode
    settings, it is unchanged since (size and mtime) and it still verifies. A file at ``-o``
    that the job did not write (another job's, or an older run's with other settings) is not
    current, nor is a PNG directory or an object-store output (not checked here)."""
    out = normalize(p.cfg.output)
    if is_url(out) or p.cfg.out.codec == "png" or not os.path.isfile(out):
        return False
    record = p.job.outputs().get(out)
    st = os.stat(out)
    if record is None or record.out != p.cfg.out or (record.bytes, record.mtime_ns) != (st.st_size, st.st_mtime_ns):
        return False
    try:
        verify(out, p.spec.source, index=p.spec.output_index)
    except FarmError:
        return False
    return True


def record_output(p: Owned) -> None:
    """Note what this submit wrote, for :func:`output_current` of the next submit."""
    out = normalize(p.cfg.output)
    if is_url(out) or not os.path.isfile(out):
        return
    st = os.stat(out)
    p.job.record_output(out, p.cfg.out, st.st_size, st.st_mtime_ns)
