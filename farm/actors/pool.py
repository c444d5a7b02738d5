"""The worker pool: keeps one enhance worker per GPU slot on every live node of the cluster (or N
CPU workers), starts workers where nodes join, forgets those on nodes that died, and avoids nodes
the ledger has blocked; tells the workers on a node Ray is draining to leave (EnhanceWorker.drain)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import ray
from ray.exceptions import ActorUnschedulableError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from farm.actors.connect import NAMESPACE
from farm.actors.worker import EnhanceWorker
from farm.enhance.factories import Factories
from farm.errors import FarmError
from farm.events import WorkerJoined, WorkerLost, WorkerStartFailed
from farm.plan import EncoderSizing, cpu_plan, expected_gpu_fps, gpu_tflops, size_encoder
from farm.storage.jobdir import JobDir
from farm.spec import JobSpec

log = logging.getLogger(__name__)



@dataclass
class _Member:
    handle: Any
    node: str | None  # Ray node id it runs on or is pinned to (None until known)
    ready: bool = False
    device: str = "?"
    host: str = "?"


class WorkerPool:
    """Keeps the desired number of enhance workers alive, one per GPU slot across the cluster's
    live nodes (or N CPU workers), avoiding blocked nodes."""

    def __init__(self, job: JobDir, device: str, gpus_per_worker: float, cap: int | None, factories: Factories | None = None,
                 batch: int | None = None) -> None:
        self.job, self.batch = job, batch  # batch: frames per model call (None: by frame size)
        self.factories = factories  # resolved on the driver, handed to every worker (farm.enhance.factories)
        self.device = device
        self.gpus_per_worker = gpus_per_worker
        self.cap = cap
        self.members: dict[str, _Member] = {}
        self.pending_ready: dict[Any, str] = {}
        self.count = 0
        self.told_to_leave: set[str] = set()  # workers whose drain() was called
        # --device cuda asks for GPU workers even before a GPU node exists (an autoscaler adds them on
        # demand); auto uses GPUs when the cluster has some at the start, CPU workers otherwise.
        self.use_gpus = device == "cuda" or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        self.cpu_workers, self.threads = cpu_plan(ray_cpus(), cap)

    def grow(self, cap: int) -> None:
        """Allow up to ``cap`` workers (a queue's runner gave the job more); the next
        :meth:`maintain` starts them. A smaller ``cap`` changes nothing: workers are not stopped."""
        if self.cap is None or cap <= self.cap:
            return
        self.cap = cap
        self.cpu_workers = max(self.cpu_workers, cap)

    def _slots(self, blocked: set[str], nodes: list[dict]) -> dict[str | None, int]:
        """How many workers each live node (of ``ray.nodes()``) should hold."""
        if not self.use_gpus:
            return {None: self.cpu_workers}
        slots: dict[str | None, int] = {}
        for node in nodes:
            gpus = node.get("Resources", {}).get("GPU", 0)
            if node.get("Alive") and gpus and node["NodeID"] not in blocked:
                slots[node["NodeID"]] = int(gpus // self.gpus_per_worker + 1e-9)
        if not slots:
            return {None: self.cap or 1}  # no GPU node yet: pending workers tell the autoscaler
        return _spread(slots, self.cap) if self.cap is not None else slots

    def maintain(self, blocked: set[str], now: float) -> list:
        """Forget workers on nodes that died (returning WorkerLost for them) and start workers
        where slots are free, on live nodes that are not blocked."""
        lost = []
        draining = draining_nodes()
        self.drain_workers_on(draining)
        blocked = blocked | draining  # Ray places nothing there any more; their replacements go elsewhere
        nodes = ray.nodes() if self.use_gpus else []
        if self.use_gpus:
            alive = {n["NodeID"] for n in nodes if n.get("Alive")}
            for worker_id, member in list(self.members.items()):
                if member.node is not None and member.node not in alive:
                    lost.append(WorkerLost(worker_id, now, f"node {member.node[:8]} is gone"))
                    self.remove(worker_id)
        slots = self._slots(blocked, nodes)
        held: dict[str | None, int] = {}
        for m in self.members.values():
            # GPU workers count for their node. One started before any GPU node existed has none
            # until it is placed, and then takes the first free GPU: start no others meanwhile.
            key = m.node if self.use_gpus else None
            held[key] = held.get(key, 0) + 1
        if None not in slots and held.get(None):
            return lost
        for node, n in slots.items():
            for _ in range(n - held.get(node, 0)):
                self._spawn(node)
        return lost

    def drain_workers_on(self, nodes: set[str]) -> list[str]:
        """Ask every worker on ``nodes`` (once) to leave: it gives its shard back at the next part
        boundary and the ledger stops it. Returns the workers asked now."""
        asked = []
        for worker_id, member in self.members.items():
            if member.node in nodes and worker_id not in self.told_to_leave:
                log.warning("node %s is being drained: worker %s gives its shard back at its next part boundary", member.node[:8], worker_id)
                member.handle.drain.remote()
                self.told_to_leave.add(worker_id)
                asked.append(worker_id)
        return asked

    def _spawn(self, node: str | None) -> None:
        self.count += 1
        worker_id = f"w{self.count}"
        job = self.job
        handle = start_worker(job, worker_id, self.device, f"farm-worker-{job.job_id}-{(node or 'local')[:8]}-{worker_id}",
                              gpus=self.gpus_per_worker if self.use_gpus else 0, threads=self.threads, node=node,
                              spread=True, factories=self.factories, batch=self.batch)
        self.members[worker_id] = _Member(handle, node=node)
        self.pending_ready[handle.ready.remote()] = worker_id

    def on_ready(self, ref, now: float) -> list:
        """Turn a finished ready() call into a WorkerJoined (or a WorkerStartFailed: the ledger
        decides when to give up)."""
        worker_id = self.pending_ready.pop(ref)
        member = self.members.get(worker_id)
        if member is None:
            return []
        try:
            info = ray.get(ref)
        except ActorUnschedulableError as exc:
            # Pinned to a node that left before the worker was placed: not the worker's fault,
            # and maintain() starts its replacement on a live node. Pinned to a live node that
            # cannot take it, it is a start failure like any other.
            self.remove(worker_id)
            if member.node is not None and member.node not in {n["NodeID"] for n in ray.nodes() if n.get("Alive")}:
                log.info("worker %s was never placed: node %s left", worker_id, member.node[:8])
                return []
            starting = sum(not m.ready for m in self.members.values())
            return [WorkerStartFailed(worker_id, now, ray_cause(exc), starting)]
        except (RayActorError, RayTaskError) as exc:
            log.warning("worker %s could not start: %s", worker_id, ray_cause(exc))
            self.remove(worker_id)
            starting = sum(not m.ready for m in self.members.values())
            return [WorkerStartFailed(worker_id, now, ray_cause(exc), starting)]
        member.ready = True
        member.node = info["node_id"]
        member.device = info.get("device_name", info.get("device", "?"))
        member.host = info.get("host", "?")
        return [WorkerJoined(worker_id, info["node_id"], now)]

    def remove(self, worker_id: str) -> None:
        member = self.members.pop(worker_id, None)
        if member is not None:
            ray.kill(member.handle, no_restart=True)
        for ref, wid in list(self.pending_ready.items()):
            if wid == worker_id:
                del self.pending_ready[ref]

    def shutdown(self) -> None:
        for worker_id in list(self.members):
            self.remove(worker_id)


def draining_nodes() -> set[str]:
    """Hex ids of the nodes Ray is draining (``ray drain-node``, the autoscaler's preemption or
    idle termination; the node stays alive until its deadline). Ray 2.60 has no public call for
    it: the GCS's list (``ray._private.state.state.get_draining_nodes``) is read, and an empty set
    stands where that private call is gone or fails (SIGTERM to the workers still drains them)."""
    try:
        from ray._private.state import state

        return set(state.get_draining_nodes())
    except Exception as exc:  # a private API: its absence must not stop the job
        log.debug("cannot read Ray's draining nodes: %s", exc)
        return set()


# progress() has a concurrency group of its own (see EnhanceWorker.progress). Ray's type stubs lack
# concurrency_groups, which ray.remote accepts.
_REMOTE_WORKER = ray.remote(concurrency_groups={"status": 1})(EnhanceWorker)  # type: ignore[call-overload]


def start_worker(job: JobDir, worker_id: str, device: str, name: str, *, gpus: float = 0, threads: int | None = None, node: str | None = None,
                 spread: bool = False, factories: Factories | None = None, batch: int | None = None) -> Any:
    """An :class:`EnhanceWorker` actor of ``job`` (named ``name``, never restarted by Ray): with
    ``gpus`` of a GPU and one CPU, or on ``threads`` CPUs (its torch threads) when ``gpus`` is 0;
    pinned to ``node`` when given, else spread over the nodes when ``spread``."""
    options: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "max_restarts": 0}
    if node is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
    elif spread and gpus:
        options["scheduling_strategy"] = "SPREAD"
    if gpus:
        options.update(num_gpus=gpus, num_cpus=1)
        threads = None
    else:
        options.update(num_cpus=threads or 1)
    return _REMOTE_WORKER.options(**options).remote(job.jobs_root, job.job_id, worker_id, device, threads, factories, batch)


def cluster_encoder_sizing(spec: JobSpec, nodes: list[dict], flop_per_input_pixel: Callable[[], float | None]) -> EncoderSizing | None:
    """The encoder sizing for a job starting on the GPU nodes among ``nodes`` (``ray.nodes()``):
    the tightest node's CPUs per GPU, and the fastest GPU type's expected frame rate for the network
    whose cost ``flop_per_input_pixel()`` gives (asked only when there are GPU nodes; None: not known,
    the preset is left as it is). None without GPU nodes."""
    gpu_nodes = [n["Resources"] for n in nodes if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) > 0]
    if not gpu_nodes or spec.geometry is None:
        return None
    cpus_per_gpu = min(int(r.get("CPU", 0) // r["GPU"]) for r in gpu_nodes)
    types = [k.split(":", 1)[1] for r in gpu_nodes for k in r if k.startswith("accelerator_type:")]
    fastest = max(types, key=lambda t: gpu_tflops(t) or 0, default=None)
    flop = flop_per_input_pixel()
    fps = expected_gpu_fps(flop, spec.source.width * spec.source.height, fastest) if flop else None
    return size_encoder(spec.out.codec, spec.geometry.canvas, spec.out.preset, cpus_per_gpu, fps)


def ray_cpus() -> int:
    """The CPUs of the cluster free now (all of them, before anything runs)."""
    return int(ray.available_resources().get("CPU", ray.cluster_resources().get("CPU", 1)))


def _spread(slots: dict[str | None, int], cap: int) -> dict[str | None, int]:
    """Distribute at most ``cap`` workers over nodes round-robin, within each node's slots."""
    out: dict[str | None, int] = {n: 0 for n in slots}
    total = 0
    while total < cap:
        progressed = False
        for node in sorted(slots, key=lambda n: n or ""):
            if total < cap and out[node] < slots[node]:
                out[node] += 1
                total += 1
                progressed = True
        if not progressed:
            break
    return {n: k for n, k in out.items() if k}


def ray_cause(exc: BaseException) -> str:
    """The one line worth showing for an exception that crossed Ray."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, FarmError):
        return cause.message
    if isinstance(exc, RayTaskError) and cause is not None:
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
