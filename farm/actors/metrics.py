"""farm's metrics, through Ray's metrics API: in the Ray dashboard and on every node's Prometheus
endpoint (as ``ray_farm_*``), tagged by job, node and worker. Outside a Ray worker process (unit
tests, scripts) every call is a no-op."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

SHARD_SECONDS_BOUNDARIES = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]


class _Off:
    """Stands in for every metric when there is no Ray to report to."""

    def set_default_tags(self, *args: Any, **kwargs: Any) -> None:
        pass

    def inc(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set(self, *args: Any, **kwargs: Any) -> None:
        pass

    def observe(self, *args: Any, **kwargs: Any) -> None:
        pass


class WorkerMetrics:
    """What one enhance worker reports."""

    def __init__(self, job_id: str, node: str, worker: str) -> None:
        self.tags = {"job": job_id, "node": node, "worker": worker}
        metrics = _metrics_module()
        keys = ("job", "node", "worker")
        if metrics is None:
            self.frames = self.shards = self.faces = self.bytes = self.fps = self.seconds = _Off()
            return
        self.frames = metrics.Counter("farm_frames_done", "Frames enhanced and committed.", tag_keys=keys)
        self.shards = metrics.Counter("farm_worker_shards_done", "Shards committed by this worker.", tag_keys=keys)
        self.faces = metrics.Counter("farm_faces_restored", "Faces restored by GFPGAN.", tag_keys=keys)
        self.bytes = metrics.Counter("farm_bytes_written", "Bytes of segments written to the job directory.", tag_keys=keys)
        self.fps = metrics.Gauge("farm_worker_fps", "Frames per second of the worker's last shard.", tag_keys=keys)
        self.seconds = metrics.Histogram(
            "farm_shard_seconds", "Time to enhance and commit one shard.", boundaries=SHARD_SECONDS_BOUNDARIES, tag_keys=keys
        )
        for metric in (self.frames, self.shards, self.faces, self.bytes, self.fps, self.seconds):
            metric.set_default_tags(self.tags)

    def shard_done(self, frames: int, seconds: float, faces: int, nbytes: int) -> None:
        self.frames.inc(frames)
        self.shards.inc(1)
        if faces:
            self.faces.inc(faces)
        self.bytes.inc(nbytes)
        self.seconds.observe(seconds)
        if seconds > 0:
            self.fps.set(frames / seconds)


class JobMetrics:
    """What the coordinator reports for the whole job."""

    def __init__(self, job_id: str) -> None:
        self.tags = {"job": job_id}
        metrics = _metrics_module()
        if metrics is None:
            self.done = self.failed = self.retried = self.workers = self.progress = _Off()
            return
        self.done = metrics.Counter("farm_shards_done", "Shards completed.", tag_keys=("job",))
        self.failed = metrics.Counter("farm_shards_failed", "Shard attempts that failed.", tag_keys=("job",))
        self.retried = metrics.Counter("farm_shards_retried", "Shard attempts beyond the first.", tag_keys=("job",))
        self.workers = metrics.Gauge("farm_workers_alive", "Workers holding a model and taking shards.", tag_keys=("job",))
        self.progress = metrics.Gauge("farm_job_frames_done", "Frames of the job done so far (all runs).", tag_keys=("job",))
        for metric in (self.done, self.failed, self.retried, self.workers, self.progress):
            metric.set_default_tags(self.tags)


class QueueMetrics:
    """What the queue's board reports for the queue of one jobs root."""

    def __init__(self, jobs_root: str) -> None:
        self.tags = {"queue": jobs_root}
        metrics = _metrics_module()
        if metrics is None:
            self.jobs = self.workers = _Off()
            return
        self.jobs = metrics.Gauge("farm_queue_jobs", "Jobs of the queue in each state.", tag_keys=("queue", "state"))
        self.workers = metrics.Gauge("farm_queue_workers", "Workers the queue gives each job.", tag_keys=("queue", "job", "submitter"))
        for metric in (self.jobs, self.workers):
            metric.set_default_tags(self.tags)

    def show(self, states: dict[str, int], workers: dict[str, tuple[str, int]]) -> None:
        for state, n in states.items():
            self.jobs.set(n, tags={"state": state})
        for job_id, (submitter, n) in workers.items():
            self.workers.set(n, tags={"job": job_id, "submitter": submitter})


def _metrics_module():
    try:
        import ray
        from ray.util import metrics
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    return metrics
