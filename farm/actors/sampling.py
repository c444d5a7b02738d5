"""Ray shells for ``farm preview``, ``estimate`` and ``tune``: farm's own code run on one of the
cluster's workers, so the numbers and pictures come from the device the job will use (a one-shot
task for a preview; :class:`farm.actors.worker.EnhanceWorker` itself, one per GPU model, to time)."""

from __future__ import annotations

from typing import Sequence

import ray

from farm.actors.pool import ray_cpus, start_worker
from farm.enhance.factories import resolve_factories
from farm.plan import cpu_plan


def connected() -> bool:
    """This process is already joined to a Ray (a test's, or a caller's)."""
    return ray.is_initialized()


def disconnect() -> None:
    ray.shutdown()


def cluster_has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def render_on_cluster(spec, source_frames: Sequence[int], device: str, render, workers: int = 1, gpus_per_worker: float = 1.0):
    """``render(spec, frames)`` (:func:`farm.sampling.preview.render_here`'s) on the cluster, the
    frames spread over up to ``workers`` tasks as a job spreads its shards over its workers (each
    on ``gpus_per_worker`` of a GPU, or a CPU when the cluster has none), each loading the job's
    enhancer.

    Returns:
        What ``render`` returns, ``(frames, device)``, the frames in the order asked.
    """

    def run(spec_json: dict, frames: list[int]):
        from farm.spec import JobSpec

        return render(JobSpec.from_json(spec_json), frames)

    gpu = device != "cpu" and cluster_has_gpus()
    frames = list(source_frames)
    n = max(1, min(workers, len(frames)))
    groups = [frames[len(frames) * i // n: len(frames) * (i + 1) // n] for i in range(n)]  # contiguous, in order
    task = ray.remote(run).options(num_gpus=gpus_per_worker if gpu else 0, num_cpus=1, name=f"farm-preview {spec.source.location}", max_retries=0)
    spec_ref = ray.put(spec.to_json())
    results = ray.get([task.remote(spec_ref, group) for group in groups])
    return [frame for rendered, _ in results for frame in rendered], results[0][1]


def device_groups() -> dict[str, str | None]:
    """The cluster's kinds of workers: accelerator type (Ray's ``accelerator_type:X`` resource)
    -> one live node id that has it; ``{"cpu": None}`` on a cluster without GPUs."""
    groups: dict[str, str | None] = {}
    for node in ray.nodes():
        resources = node.get("Resources", {})
        if not node.get("Alive") or not resources.get("GPU"):
            continue
        kinds = [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")] or ["gpu"]
        groups.setdefault(kinds[0], node["NodeID"])
    return groups or {"cpu": None}


def gpu_count(kind: str) -> float:
    """GPUs of ``kind`` in the cluster now."""
    total = 0.0
    for node in ray.nodes():
        resources = node.get("Resources", {})
        if node.get("Alive") and resources.get("GPU") and (f"accelerator_type:{kind}" in resources or kind == "gpu"):
            total += resources["GPU"]
    return total


def kill(handle) -> None:
    ray.kill(handle, no_restart=True)


def sample_on_cluster(device: str, gpus_per_worker: float, cap: int | None):
    """A :data:`farm.sampling.estimate.Sampler` that runs the job's own worker once per GPU model of the
    cluster (on one node that has it), all kinds at once; on a cluster without GPUs, one CPU worker
    with the threads the pool would give it."""
    import time

    def sample(prepared, shards):
        groups = device_groups()
        n, threads = cpu_plan(ray_cpus(), cap)
        job, factories = prepared.job, resolve_factories(prepared.spec.model)
        handles, started = {}, time.perf_counter()
        for k, (kind, node) in enumerate(groups.items()):
            handles[kind] = start_worker(job, f"e{k}", device, f"farm-sample-{job.job_id}-e{k}", gpus=1 if node is not None else 0,
                                         threads=threads, node=node, factories=factories)
        ready = {kind: h.ready.remote() for kind, h in handles.items()}
        ready_s, names = {}, {}
        for kind, ref in ready.items():
            names[kind] = ray.get(ref).get("device_name", kind)
            ready_s[kind] = time.perf_counter() - started
        calls = {kind: [h.run_shard.remote(s.index, s.start, s.stop, 1) for s in shards] for kind, h in handles.items()}
        out = []
        try:
            for kind, refs in calls.items():
                workers = gpu_count(kind) / gpus_per_worker if groups[kind] is not None else n
                if cap is not None:
                    workers = min(workers, cap)
                out.append((names[kind], workers, ready_s[kind], ray.get(refs)))
        finally:
            for h in handles.values():
                kill(h)
        return out

    return sample


def tune_runner(prepare_variant, shards, device: str, cpus: int):
    """A :data:`farm.sampling.tune.Runner`: the candidate's workers (``batch`` frames per call; on a CPU
    with its threads each, on CUDA ``workers`` sharing one GPU), each running a warm-up shard,
    then one timed shard each, all at once; returns frames per second of them together.

    ``prepare_variant(candidate)`` gives the prepared scratch job for the candidate's model
    settings (precision, compile, tile)."""
    import time

    def run(candidate) -> float:
        prepared = prepare_variant(candidate)
        job, factories = prepared.job, resolve_factories(prepared.spec.model)
        gpus = 1 / candidate.workers if device == "cuda" else 0
        handles = [start_worker(job, f"t{k}", device, f"farm-tune-{job.job_id}-{k}", gpus=gpus, threads=candidate.threads,
                                factories=factories, batch=candidate.batch or None)
                   for k in range(int(candidate.workers))]
        try:
            ray.get([h.ready.remote() for h in handles])
            warm = shards[0]
            ray.get([h.run_shard.remote(warm.index, warm.start, warm.stop, 1) for h in handles])
            timed = [shards[1 + k % (len(shards) - 1)] if len(shards) > 1 else warm for k in range(len(handles))]
            t = time.perf_counter()
            receipts = ray.get([h.run_shard.remote(s.index, s.start, s.stop, 1) for h, s in zip(handles, timed)])
            wall = time.perf_counter() - t
        finally:
            for h in handles:
                kill(h)
        run.receipts[candidate] = receipts  # type: ignore[attr-defined]
        return sum(r.output_frames for r in receipts) / wall

    run.receipts = {}  # type: ignore[attr-defined]  # the timed shards' receipts, per candidate (farm tune's stages)
    return run
