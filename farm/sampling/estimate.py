"""``farm estimate``: what a job will take, from a timed sample of the job itself: its own worker runs
a warm-up shard and a few short shards on the job's device, in a scratch jobs root (deleted after).
Model time: the frames at the steady rate, plus each worker's first calls; the tail is not counted."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from farm.config import JobConfig
from farm.job import Following, Owned, open_job
from farm.plan import Shard
from farm.receipt import Receipt
from farm.storage.fs import is_url, normalize

log = logging.getLogger(__name__)

#: Shards sampled after the warm-up, and at most this many frames of each.
SAMPLE_SHARDS = 3
SAMPLE_FRAMES = 16
#: Frames of the warm-up shard (model load, cuDNN autotuning, first allocations).
WARMUP_FRAMES = 2


@dataclass(frozen=True)
class DeviceSample:
    """One kind of worker, timed on the sample."""

    kind: str  # the device name the worker reported ("cpu", "NVIDIA H100 80GB HBM3", "fake")
    workers: float  # how many such workers the job gets on this cluster
    frames: int  # output frames timed, after the warm-up
    model_s_per_frame: float
    worker_s_per_frame: float  # the worker's whole shard time per frame
    bytes_per_frame: float  # of the chunks, in the output codec
    load_s: float  # the worker's start: model load and checks
    first_calls_s: float = 0.0  # the model's first calls' cost beyond the steady rate (once per worker)


@dataclass(frozen=True)
class Estimate:
    frames: int  # output frames of the job
    samples: tuple[DeviceSample, ...]
    wall_s: float  # on this cluster (or on ``gpus`` of each kind)
    gpu_hours: float  # worker-hours: the devices held for the job
    model_hours: float
    chunk_bytes: int
    output_bytes: int
    cost: float | None = None
    gpus: float | None = None  # --gpus N, when given
    codec: str = "x264"
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["samples"] = [dataclasses.asdict(s) for s in self.samples]
        return data


#: ``(prepared job, shards to run) -> one (kind, workers, ready seconds, receipts) per kind``;
#: the first receipt of each kind is the warm-up's.
Sampler = Callable[[Owned | Following, Sequence[Shard]], list[tuple[str, float, float, list[Receipt]]]]


def sample_shards(prepared: Owned | Following, count: int = SAMPLE_SHARDS, frames: int = SAMPLE_FRAMES) -> list[Shard]:
    """A warm-up shard and ``count`` shards of the job's plan spread through the video, each cut
    to at most ``frames`` source frames (the first frames of the real shard: same keyframe start)."""
    shards = prepared.spec.shards()
    warm = shards[0]
    picks = [shards[int((k + 0.5) * len(shards) / count)] for k in range(min(count, len(shards)))]
    picks = list(dict.fromkeys(picks))
    out = [Shard(warm.index, warm.start, min(warm.stop, warm.start + WARMUP_FRAMES))]
    return out + [Shard(s.index, s.start, min(s.stop, s.start + frames)) for s in picks]


def summarise(kind: str, workers: float, ready_s: float, receipts: list[Receipt]) -> DeviceSample:
    """Per-frame figures of one kind from its sample receipts (the warm-up's left out, unless it
    is the only one), and the warm-up's model time beyond them (its first calls)."""
    timed = receipts[1:] or receipts
    frames = sum(r.output_frames for r in timed)
    model_s_per_frame = sum(_enhance_s(r) for r in timed) / frames
    warm = receipts[0]
    first_calls_s = max(0.0, _enhance_s(warm) - warm.output_frames * model_s_per_frame) if len(receipts) > 1 else 0.0
    return DeviceSample(
        kind=kind,
        workers=workers,
        frames=frames,
        model_s_per_frame=model_s_per_frame,
        worker_s_per_frame=sum(r.seconds for r in timed) / frames,
        bytes_per_frame=sum(r.bytes for r in timed) / frames,
        load_s=ready_s,
        first_calls_s=first_calls_s,
    )


def _enhance_s(receipt: Receipt) -> float:
    return (receipt.timings or {})["enhance_s"]  # every worker's receipt has it


def combine(prepared: Owned | Following, samples: Sequence[DeviceSample], gpus: float | None, price: float | None) -> Estimate:
    """The job's figures from its samples: frames from the probe, rates from the samples."""
    spec = prepared.spec
    frames = spec.source.num_frames * spec.frames_per_source_frame
    workers = {s.kind: (gpus if gpus is not None else s.workers) for s in samples}
    rate = sum(workers[s.kind] / s.worker_s_per_frame for s in samples)  # frames per second, all kinds
    wall = frames / rate + max(s.load_s + s.first_calls_s for s in samples)
    # Each kind does its share of the frames at its own speed.
    shares = {s.kind: workers[s.kind] / s.worker_s_per_frame / rate for s in samples}
    # Each worker that gets a shard pays its first calls once (no more workers than shards work).
    shards = len(spec.shards())
    first_calls = {s.kind: min(workers[s.kind], max(1, round(shards * shares[s.kind]))) * s.first_calls_s for s in samples}
    gpu_hours = sum(frames * shares[s.kind] * s.worker_s_per_frame + first_calls[s.kind] for s in samples) / 3600
    model_hours = sum(frames * shares[s.kind] * s.model_s_per_frame + first_calls[s.kind] for s in samples) / 3600
    bytes_per_frame = sum(shares[s.kind] * s.bytes_per_frame for s in samples)
    chunk_bytes = int(frames * bytes_per_frame)
    cost = gpu_hours * price if price is not None else None
    return Estimate(frames, tuple(samples), wall, gpu_hours, model_hours, chunk_bytes, chunk_bytes, cost, gpus, spec.out.codec)


def estimate(cfg: JobConfig, *, gpus: float | None = None, price: float | None = None, sampler: Sampler,
             sample_frames: int = SAMPLE_FRAMES, count: int = SAMPLE_SHARDS) -> Estimate:
    """Time a sample of ``cfg``'s job and estimate the whole.

    Raises:
        FarmError: what ``farm submit`` would refuse, with the same line.
    """
    scratch_parent = normalize(cfg.jobs_root) if cfg.jobs_root else None
    if scratch_parent is None or not is_url(scratch_parent):
        root = tempfile.mkdtemp(prefix="farm-estimate-", dir=scratch_parent if scratch_parent and os.path.isdir(scratch_parent) else None)
    else:
        root = f"{scratch_parent}/.farm-estimate-{uuid.uuid4().hex[:8]}"
    prepared = None
    try:
        prepared = open_job(dataclasses.replace(cfg, jobs_root=root, restart=True))
        shards = sample_shards(prepared, count, sample_frames)
        results = sampler(prepared, shards)
        samples = [summarise(kind, workers, ready_s, receipts) for kind, workers, ready_s, receipts in results]
        return combine(prepared, samples, gpus, price)
    finally:
        if prepared is not None:  # stop its renewals before the folder they write to goes
            prepared.owner.release()
        if is_url(root):
            from farm.storage.fs import Storage

            Storage(root).remove("", recursive=True)
        else:
            shutil.rmtree(root, ignore_errors=True)

