"""The checks before a job's work, which refuse it with one FarmError line and write nothing: the
output location (not the input, a known container, a folder that exists and takes a file: one
empty file created and removed) and the disk space its chunks and output need."""

from __future__ import annotations

import logging
import os
import shutil

from farm.config import JobConfig
from farm.cost import LOSSY_BITS_PER_PIXEL_AT_CRF18, estimate_bytes
from farm.errors import OutputError, StorageError
from farm.media import SourceInfo, effective_mode, frames_per_source_frame
from farm.plan import Geometry
from farm.storage.fs import is_url, nearest_existing, normalize
from farm.storage.jobdir import JobDir
from farm.video.containers import CONTAINERS, container_for

log = logging.getLogger(__name__)


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
        chunks = max(0, chunks - sum(r.bytes for r in job.receipts()))
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
