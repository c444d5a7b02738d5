"""The final task: concatenate the done chunks into the output (packets copied, nothing encoded),
verify it, and only then put it at the output path (a temporary name until verified, so a failed
mux leaves nothing behind)."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from typing import Any

from farm.config import OutputConfig
from farm.errors import MuxError, OutputError
from farm.storage.fs import Storage, is_url, split_location
from farm.storage.jobdir import JobDir
from farm.video.mux import ChunkRef, mux, remove_output, verify, write_png_sequence

log = logging.getLogger(__name__)


def assemble(jobs_root: str, job_id: str, output: str, out: OutputConfig, segments: list[tuple[str, int, int]]) -> dict[str, Any]:
    """Write ``output`` from the chunks ``segments`` (``(name, start, stop)`` in frame order, source
    frames; a chunk holds output frames ``[k start, k stop)``, k = 2 for ``--deinterlace double``).

    ``out`` must be the settings the chunks were encoded with (the job spec's); the chunks carry
    the frame size.

    Raises:
        MuxError, OutputError: nothing is left at ``output``.
    """
    job = JobDir(jobs_root, job_id)
    spec = job.read_spec()
    if out != spec.out:
        raise MuxError(
            f"job {job_id}'s chunks were encoded as --codec {spec.out.codec} --crf {spec.out.crf}, not as asked "
            f"(--codec {out.codec} --crf {out.crf}); submit with the job's settings, or pass --restart"
        )
    k = spec.frames_per_source_frame
    refs = [_chunk_ref(job, name, k * start, k * stop) for name, start, stop in segments]
    if out.codec == "png":
        return _png(spec, refs, output)
    parent, name = split_location(output)
    storage = Storage(parent)
    scratch = storage.scratch_file(name)
    try:
        index = spec.output_index
        mux(spec.source, refs, scratch, index=index, field_order=spec.output_field_order)
        shift = verify(scratch, spec.source, index=index)
        nbytes = os.path.getsize(scratch)
        storage.commit_file(scratch, name)
    except BaseException:
        remove_output(scratch)
        raise
    log.info("wrote %s (%d bytes)", output, nbytes)
    return {"output": output, "frames": len(index), "bytes": nbytes, "shift": shift}


def _png(spec, refs: list[ChunkRef], output: str) -> dict[str, Any]:
    if is_url(output):
        raise OutputError("--codec png writes a local directory; give a local path as the output")
    output = output.rstrip("/")
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise OutputError(f"{output} exists and is not an empty directory; choose a new output directory for --codec png")
    parent = os.path.dirname(os.path.abspath(output))
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.tmp-", dir=parent)
    try:
        index = spec.output_index
        write_png_sequence(spec.source, refs, scratch, index=index)
        written = sorted(n for n in os.listdir(scratch) if n.endswith(".png"))
        if len(written) != len(index):
            raise MuxError(f"wrote {len(written)} PNG files for {len(index)} frames")
        if os.path.isdir(output):
            os.rmdir(output)
        os.replace(scratch, output)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return {"output": output, "frames": len(index), "bytes": 0, "shift": 0}


def _chunk_ref(job: JobDir, name: str, start: int, stop: int) -> ChunkRef:
    """A chunk and what its worker recorded about it (its receipt's ``video``)."""
    try:
        receipt = job.read_receipt(name)
    except FileNotFoundError:
        raise MuxError(f"chunk {name} (frames [{start}, {stop})) has no receipt; pass --restart to redo the job") from None
    if receipt.video is None:
        raise MuxError(f"chunk {name} (frames [{start}, {stop})) was written by an older farm; pass --restart to redo the job")
    return ChunkRef(opener=functools.partial(job.open_segment, name), start=start, stop=stop, name=name, video=receipt.video)


def mux_placement(output: str) -> dict[str, Any] | None:
    """Where the mux runs: Ray task options, or None for in this process. It copies packets, so it
    takes no CPU slot (Ray Jobs run the driver on the head; the cloud configs give it 0 CPUs). An
    ``s3://`` output: on any node. A local path: on the driver's node, pinned; a driver that is
    not a node (a Ray Client, ``ray://``) writes it itself."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if is_url(output):
        return {"num_cpus": 0}
    if ray.util.client.ray.is_connected():
        return None
    return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}
