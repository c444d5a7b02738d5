"""Everything checked before a job starts, without Ray: the input, the output location, the
weights, the options and the disk space; then the job directory is created or found again.

A failure here is one FarmError line, and nothing is written at the output path.

The job's ownership is taken (:mod:`farm.storage.ownership`) before anything in the job directory
is written; a job another live driver holds is left exactly as it is.

Over 300 lines because the disk estimate's tables and the output checks are read with the rest of
what a submit refuses before work."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.config import job_id as make_job_id
from farm.enhance.hashes import file_sha256
from farm.enhance.weights import check_weights, sr_weights_source
from farm.errors import FarmError, OutputError, StorageError, UsageError
from farm.media import SourceInfo, effective_mode, frames_per_source_frame
from farm.plan import Geometry, default_shard_frames, plan_geometry, search_ranges, snap_window
from farm.storage.fs import Storage, is_url, nearest_existing, normalize, split_location
from farm.storage.jobdir import SUBMIT, JobDir
from farm.storage.ownership import Ownership
from farm.spec import JobSpec, frames_per_second
from farm.video.containers import CONTAINERS, check_streams_fit, container_for
from farm.video.encode import check_encoder, chunk_settings, encodable_size, output_pix_fmt
from farm.video.mux import verify
from farm.video.probe import cut_source, probe
from farm.video.scenes import detect_scene_cuts

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Prepared:
    cfg: JobConfig
    job: JobDir
    spec: JobSpec
    geometry: Geometry
    resumed: bool
    disk_note: str = ""  # the disk estimate, shown before work
    # This driver's hold on the job. Not owned: another live driver runs it, and nothing in the
    # job directory was written (``spec`` is then the job's, or a provisional one not stored).
    owner: Ownership | None = None


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
    elif os.path.splitext(out)[1].lower() in CONTAINERS:
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


#: Bits per output pixel of the lossy codecs at CRF 18 (``--crf`` default), for the disk estimate.
#: Upscaled video is smooth (the model removes noise), so real outputs take less: x264 at CRF 18
#: gives about 0.05-0.15 bits per pixel on upscaled 1080p film; these values leave about 2x room
#: for grain, noise and animation. x265 and AV1 reach the same quality with fewer bits.
LOSSY_BITS_PER_PIXEL_AT_CRF18 = {"x264": 0.3, "x265": 0.2, "av1": 0.2}
#: Each CRF step of this many down doubles the bitrate (x264's and x265's rule of thumb).
CRF_DOUBLING_STEP = 6
#: Bytes per output pixel of the lossless codecs. FFV1 RGB of real video takes about 1.3 bytes per
#: pixel at 8 bits; 2 leaves room for grain and noise, which compress worse. PNG is about the same.
LOSSLESS_BYTES_PER_PIXEL = 2.0


def output_bytes_per_pixel(codec: str, crf: int, high_bit_depth: bool) -> float:
    """Expected bytes per output pixel of ``codec`` at ``crf`` (conservative; see the tables).

    Lossless codecs: :data:`LOSSLESS_BYTES_PER_PIXEL` (twice that for 16-bit RGB). Lossy codecs:
    :data:`LOSSY_BITS_PER_PIXEL_AT_CRF18`, doubled for every :data:`CRF_DOUBLING_STEP` below 18
    (halved above), never more than a lossless codec's; CRF 0 (lossless in x264) and a codec in
    neither table count as lossless.
    """
    lossless = LOSSLESS_BYTES_PER_PIXEL * (2 if high_bit_depth else 1)
    bits = LOSSY_BITS_PER_PIXEL_AT_CRF18.get(codec)
    if bits is None or crf <= 0:
        return lossless
    return min(lossless, bits / 8 * 2 ** ((18 - crf) / CRF_DOUBLING_STEP))


def estimate_bytes(frames: int, canvas: tuple[int, int], high_bit_depth: bool, codec: str, crf: int = 18) -> tuple[int, int]:
    """Conservative sizes of a job's chunks and of its output, in bytes.

    The chunks are in the output codec and the output is their concatenation, so both are about
    ``frames x pixels x`` :func:`output_bytes_per_pixel`.
    """
    size = int(frames * canvas[0] * canvas[1] * output_bytes_per_pixel(codec, crf, high_bit_depth))
    return size, size


def free_bytes(location: str) -> tuple[int, int] | None:
    """``(free bytes, device id)`` of the filesystem that holds (or would hold) a local
    ``location``; None for object storage, whose space farm cannot know."""
    if is_url(location):
        return None
    path = nearest_existing(location)
    return shutil.disk_usage(path).free, os.stat(path).st_dev


def check_disk_space(cfg: JobConfig, job: JobDir, source: SourceInfo, geometry: Geometry) -> str:
    """Refuse a job whose chunks (and output, on the same disk) would not fit, before any work.

    Chunks already done by an earlier run of the job count as written.

    Returns:
        One line with the estimate, for the live view.

    Raises:
        StorageError: naming the space needed and free, and what to do.
    """
    frames = source.num_frames * frames_per_source_frame(effective_mode(cfg.model.deinterlace, source.field_order))
    chunks, output = estimate_bytes(frames, geometry.canvas, source.high_bit_depth, cfg.out.codec, cfg.out.crf)
    if job.exists() and not cfg.restart:
        chunks = max(0, chunks - sum(int(r.get("bytes", 0)) for r in job.receipts()))
    jobs_disk = free_bytes(job.jobs_root)
    out_disk = free_bytes(normalize(cfg.output))
    lossy = cfg.out.codec in LOSSY_BITS_PER_PIXEL_AT_CRF18 and cfg.out.crf > 0
    note = f"about {_gb(chunks)} of chunks still to write and {_gb(output)} of output ({cfg.out.codec}"
    note += f", CRF {cfg.out.crf})" if lossy else ")"
    log.info("disk needed: %s", note)
    needs: list[tuple[str, int, int]] = []  # (what, needed, free)
    if jobs_disk is not None and out_disk is not None and jobs_disk[1] == out_disk[1]:
        needs.append((f"{job.jobs_root} (chunks and output)", chunks + output, jobs_disk[0]))
    else:
        if jobs_disk is not None:
            needs.append((f"{job.jobs_root} (chunks)", chunks, jobs_disk[0]))
        if out_disk is not None:
            needs.append((f"{os.path.dirname(normalize(cfg.output))} (output)", output, out_disk[0]))
    for where, needed, free in needs:
        if needed > free:
            raise StorageError(
                f"not enough disk space: the job needs about {_gb(needed)} on {where}, {_gb(free)} is free; "
                "free some space, or pass --jobs-root on a larger disk"
            )
    return note


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def prepare(cfg: JobConfig, *, source: SourceInfo | None = None) -> Prepared:
    """Everything checkable before Ray starts: input, output, weights, options; then the job dir.
    ``source``: the input's probe, when the caller has made it.

    Raises:
        FarmError: one clear line; nothing is written at the output path.
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
    model, fingerprint, job_id = _identity(model, source, cfg.out, cfg.frames)
    jobs_root = normalize(cfg.jobs_root) if cfg.jobs_root else default_jobs_root(normalize(cfg.output))
    job = JobDir(jobs_root, job_id)
    disk_note = check_disk_space(cfg, job, source, geometry)
    # Ownership first: a job another driver runs is not touched (not cleared by --restart, its
    # spec and submit record not rewritten); this driver follows it instead.
    owner = Ownership(job, output=normalize(cfg.output))
    if not owner.try_take():
        spec = job.read_spec() if job.exists() else JobSpec(job_id, source, model, cfg.shard_frames or default_shard_frames(source.num_frames),
                                                           fingerprint, time.time(), out=cfg.out)
        return Prepared(cfg, job, spec, geometry, job.exists(), disk_note, owner)
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
        )
        job.write_spec(spec)
    # The spec keeps the model settings it was created with; weights paths may have moved since.
    spec = dataclasses.replace(spec, out=cfg.out, model=dataclasses.replace(spec.model, weights_dir=model.weights_dir, sr_weights=model.sr_weights, face_weights=model.face_weights, trust_weights=model.trust_weights))
    if resumed:
        job.write_spec(spec)
    # The speed settings this submit runs with (they change no pixel): what `farm tune` set, or the user.
    settings = {"workers": cfg.workers, "gpus_per_worker": cfg.gpus_per_worker, "batch_frames": cfg.batch_frames, "precision": model.precision,
                "compile": model.compile, "tile": model.tile, "tuned_from": cfg.tuned_from}
    record = {"output": normalize(cfg.output), "out": cfg.out.to_json(), "input": source.location, "settings": settings}
    if cfg.frames is not None:  # a clip's job resumes as the clip
        record["frames"] = list(cfg.frames)
    job.storage.write_json(SUBMIT, record)
    return Prepared(cfg, job, spec, geometry, resumed, disk_note, owner)


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


def _size(location: str) -> int:
    parent, name = split_location(location)
    return Storage(parent).size(name)


def identify(cfg: JobConfig) -> str | None:
    """The job id ``cfg`` will have, when the input (and any own weights) are readable here."""
    try:
        return _identity(cfg.model, probe(cfg.input), cfg.out, cfg.frames)[2]
    except (FarmError, OSError):
        return None


def _identity(model: ModelConfig, source: SourceInfo, out: OutputConfig, frames: tuple[int, int] | None = None) -> tuple[ModelConfig, str, str]:
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


def load_submit(jobs_root: str, job_id: str) -> dict[str, Any]:
    """The output settings of a job's last submit (for ``farm resume``)."""
    job = JobDir.existing(jobs_root, job_id)
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
        out=OutputConfig.from_json(last["out"]),
        jobs_root=jobs_root,
        frames=tuple(last["frames"]) if last.get("frames") else None,  # type: ignore[arg-type]
        **{k: v for k, v in overrides.items() if v is not None},
    )


def output_current(p: Prepared) -> bool:
    """This submit's output needs no new concatenation: this job wrote it, with these encode
    settings, it is unchanged since (size and mtime) and it still verifies. A file at ``-o``
    that the job did not write (another job's, or an older run's with other settings) is not
    current, nor is a PNG directory or an object-store output (not checked here)."""
    out = normalize(p.cfg.output)
    if is_url(out) or p.cfg.out.codec == "png" or not os.path.isfile(out):
        return False
    record = p.job.outputs().get(out)
    st = os.stat(out)
    if record is None or record.get("out") != p.cfg.out.to_json() or (record.get("bytes"), record.get("mtime_ns")) != (st.st_size, st.st_mtime_ns):
        return False
    try:
        verify(out, p.spec.source, index=p.spec.output_index)
    except FarmError:
        return False
    return True


def record_output(p: Prepared) -> None:
    """Note what this submit wrote, for :func:`output_current` of the next submit."""
    out = normalize(p.cfg.output)
    if is_url(out) or not os.path.isfile(out):
        return
    st = os.stat(out)
    p.job.record_output(out, p.cfg.out, st.st_size, st.st_mtime_ns)
