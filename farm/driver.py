"""submit and resume: check everything that can be checked before work, start or join Ray, get the
job's coordinator, keep a pool of enhance workers, and carry out the ledger's instructions until
the output is written and verified.

The driver holds no state that matters: killed at any point, the same command (or ``farm resume``)
continues from the job directory."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from farm.actors.coordinator import Coordinator
from farm.actors.muxer import assemble
from farm.actors.worker import EnhanceWorker
from farm.config import JobConfig, OutputConfig, job_id as make_job_id
from farm.enhance import check_weights
from farm.errors import ClusterError, FarmError, InputError, JobCancelled, JobFailed, OutputError, StorageError, UsageError
from farm.jobs import JobDir, JobSpec
from farm.ledger import (
    Abort,
    Assign,
    Cancelled,
    Finish,
    Heartbeat,
    Mux,
    MuxDone,
    MuxFailed,
    ShardDone,
    ShardFailed,
    StopWorker,
    Tick,
    WorkerJoined,
    WorkerLost,
)
from farm.plan import default_shard_frames
from farm.storage import Storage, is_url, normalize, sha256_file, split_location
from farm.video.geometry import Geometry, plan_geometry
from farm.video.mux import check_streams_fit, container_for, verify
from farm.video.probe import probe

log = logging.getLogger(__name__)

NAMESPACE = "farm"
POLL_S = 0.5
PROGRESS_S = 1.0
MAINTAIN_S = 3.0
SUBMIT = "submit.json"  # the last submit's output settings, for `farm resume JOB`


@dataclass
class Progress:
    """What the terminal view shows; sent to ``on_progress`` about once a second."""

    job_id: str
    state: str
    frames_done: int
    frames_total: int
    shards_done: int
    shards_total: int
    fps: float
    eta_s: float | None
    workers: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    dashboard_url: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Prepared:
    cfg: JobConfig
    job: JobDir
    spec: JobSpec
    geometry: Geometry
    resumed: bool


# ----------------------------------------------------------------------------------------------
# Checks before any work


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
        raise OutputError(f"the output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"the output folder {parent} is not writable")
    if os.path.isdir(out) and cfg.out.codec != "png":
        raise OutputError(f"the output {out} is a directory; give a file name such as {out}/video.mkv")


def prepare(cfg: JobConfig) -> Prepared:
    """Everything checkable before Ray starts: input, output, weights, options; then the job dir.

    Raises:
        FarmError: one clear line; nothing is written at the output path.
    """
    check_output(cfg)
    source = probe(cfg.input)
    if cfg.out.codec != "png":
        check_streams_fit(source, cfg.output, cfg.out.codec)
    model = cfg.model
    model_scale = check_weights(model)
    geometry = plan_geometry(source.width, source.height, model_scale, model.scale, model.target)
    model = dataclasses.replace(
        model,
        sr_weights_sha256=sha256_file(model.sr_weights) if model.sr_weights else None,
        face_weights_sha256=sha256_file(model.face_weights) if model.face and model.face_weights else None,
    )
    fingerprint = input_fingerprint(source.location, source.size_bytes or _size(source.location))
    job_id = make_job_id(source.location, fingerprint, model)
    jobs_root = normalize(cfg.jobs_root) if cfg.jobs_root else default_jobs_root(normalize(cfg.output))
    job = JobDir(jobs_root, job_id)
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
        spec = JobSpec(
            job_id=job_id,
            source=source,
            model=model,
            shard_frames=cfg.shard_frames or default_shard_frames(source.num_frames),
            input_fingerprint=fingerprint,
            created=time.time(),
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


# ----------------------------------------------------------------------------------------------
# Ray


def start_ray(address: str | None, num_cpus: int | None = None, dashboard: bool = True, token: str | None = None) -> str | None:
    """Join the cluster at ``address`` (``host:port``, ``auto`` or ``ray://``), or start an
    embedded one on loopback; returns the dashboard URL when there is one."""
    if token:
        use_token(token)
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "namespace": NAMESPACE}
    if address:
        try:
            ctx = ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            hint = "; pass --token or set RAY_AUTH_TOKEN" if "auth" in str(exc).lower() or "token" in str(exc).lower() else ""
            raise ClusterError(f"cannot join the Ray cluster at {address}: {_first_line(exc)}{hint}") from None
    else:
        # An embedded cluster serves this machine only: keep every port on loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ctx = ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            **quiet,
        )
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url else None


def use_token(token: str) -> None:
    """Ray's token authentication reads the token from the environment, in this process and in
    everything it starts; Ray caches its settings at import, so they are reloaded here (as Ray's
    own `_enable_token_auth` does)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = token
    from ray._raylet import Config

    Config.initialize("")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def coordinator_handle(jobs_root: str, job_id: str, policy: dict[str, Any]):
    """The job's one coordinator: created on the head node if absent, found if present."""
    import hashlib

    root_tag = hashlib.sha256(jobs_root.encode()).hexdigest()[:6]
    remote = ray.remote(Coordinator).options(
        name=f"farm-coordinator-{job_id}-{root_tag}",
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        max_task_retries=3,
        resources={"node:__internal_head__": 0.001},
    )
    handle = remote.remote(jobs_root, job_id, policy)
    try:
        ray.get(handle.ping.remote(), timeout=120)
    except RayActorError as exc:
        raise StorageError(f"the job coordinator could not start: {_cause(exc)}") from None
    except GetTimeoutError:
        raise ClusterError("the job coordinator did not start within 2 minutes; is the head node short of resources?") from None
    return handle


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, FarmError):
        return cause.message
    if isinstance(exc, RayTaskError) and cause is not None:
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------
# The worker pool


@dataclass
class _Member:
    handle: Any
    node: str | None  # Ray node id it was placed on (None until known)
    ready: bool = False
    device: str = "?"
    host: str = "?"


class WorkerPool:
    """Keeps the desired number of enhance workers alive, one per GPU slot across the cluster's
    live nodes (or N CPU workers), avoiding blocked nodes."""

    def __init__(self, prepared: Prepared, gpus_per_worker: float, cap: int | None) -> None:
        self.p = prepared
        self.gpus_per_worker = gpus_per_worker
        self.cap = cap
        self.members: dict[str, _Member] = {}
        self.pending_ready: dict[Any, str] = {}
        self.count = 0
        self.ready_failures: list[str] = []
        self.use_gpus = prepared.spec.model.device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0
        self.cpu_workers, self.threads = self._cpu_plan()

    def _cpu_plan(self) -> tuple[int, int]:
        cpus = int(ray.available_resources().get("CPU", ray.cluster_resources().get("CPU", 1)))
        n = self.cap or max(1, cpus // 4)
        return n, max(1, cpus // n)

    def _slots(self, blocked: set[str]) -> dict[str | None, int]:
        """How many workers each live node should hold."""
        if not self.use_gpus:
            return {None: self.cpu_workers}
        slots: dict[str | None, int] = {}
        for node in ray.nodes():
            gpus = node.get("Resources", {}).get("GPU", 0)
            if node.get("Alive") and gpus and node["NodeID"] not in blocked:
                slots[node["NodeID"]] = int(gpus // self.gpus_per_worker + 1e-9)
        return _spread(slots, self.cap) if self.cap is not None else slots

    def maintain(self, blocked: set[str], now: float) -> list:
        """Forget workers on nodes that died (returning WorkerLost for them) and start workers
        where slots are free, on live nodes that are not blocked."""
        lost = []
        if self.use_gpus:
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            for worker_id, member in list(self.members.items()):
                if member.node is not None and member.node not in alive:
                    lost.append(WorkerLost(worker_id, now, f"node {member.node[:8]} is gone"))
                    self.remove(worker_id)
        slots = self._slots(blocked)
        held: dict[str | None, int] = {}
        for m in self.members.values():
            held[m.node] = held.get(m.node, 0) + 1
        for node, n in slots.items():
            for _ in range(n - held.get(node, 0)):
                self._spawn(node)
        return lost

    def _spawn(self, node: str | None) -> None:
        self.count += 1
        worker_id = f"w{self.count}"
        job = self.p.job
        options: dict[str, Any] = {
            "name": f"farm-worker-{job.job_id}-{worker_id}",
            "namespace": NAMESPACE,
            "max_restarts": 0,
            "max_concurrency": 2,  # progress() answers while run_shard() works
        }
        if self.use_gpus:
            options.update(num_gpus=self.gpus_per_worker, num_cpus=1)
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
            threads = None
        else:
            options.update(num_cpus=self.threads)
            threads = self.threads
        handle = ray.remote(EnhanceWorker).options(**options).remote(job.jobs_root, job.job_id, worker_id, self.p.spec.model.device, threads)
        self.members[worker_id] = _Member(handle, node)
        self.pending_ready[handle.ready.remote()] = worker_id

    def on_ready(self, ref, now: float) -> list:
        """Turn a finished ready() call into a WorkerJoined (or a recorded failure)."""
        worker_id = self.pending_ready.pop(ref)
        member = self.members.get(worker_id)
        if member is None:
            return []
        try:
            info = ray.get(ref)
        except (RayActorError, RayTaskError) as exc:
            self.ready_failures.append(_cause(exc))
            log.warning("worker %s could not start: %s", worker_id, _cause(exc))
            self.remove(worker_id)
            return []
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


# ----------------------------------------------------------------------------------------------
# The run


class Run:
    """One driver run of one job."""

    def __init__(self, prepared: Prepared, on_progress: Callable[[Progress], None] | None, dashboard_url: str | None) -> None:
        self.p = prepared
        self.cfg = prepared.cfg
        self.on_progress = on_progress
        self.dashboard_url = dashboard_url
        self.driver_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.policy = {"max_attempts": self.cfg.max_attempts, "lease_timeout_s": self.cfg.lease_timeout_s}
        self.coord = coordinator_handle(prepared.job.jobs_root, prepared.job.job_id, self.policy)
        self.pool: WorkerPool | None = None
        self.inflight: dict[Any, tuple[str, int]] = {}  # run_shard ref -> (worker, shard)
        self.polls: dict[Any, str] = {}  # progress ref -> worker
        self.last_seen: dict[str, float] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.snapshot: dict[str, Any] = {}
        self.t0 = time.time()
        self.frames_at_start = 0
        self.shards = prepared.spec.shards()
        self.cancelling = False

    def _claim(self) -> dict[str, Any] | None:
        """Claim the job for this driver; a holder on this host whose process is gone is dead and
        is taken over at once (elsewhere, its claim goes stale within seconds)."""
        info = {"host": socket.gethostname(), "pid": os.getpid()}
        holder = ray.get(self.coord.claim.remote(self.driver_id, info))
        if holder and holder.get("host") == info["host"] and not _pid_alive(holder.get("pid")):
            holder = ray.get(self.coord.claim.remote(self.driver_id, info, holder["id"]))
        return holder

    def execute(self) -> dict[str, Any]:
        holder = self._claim()
        if holder is not None:
            return self._follow(holder)
        finished = False
        try:
            if ray.get(self.coord.snapshot.remote())["state"] == "done" and self._output_current():
                finished = True
                return {"job_id": self.p.job.job_id, "output": self.cfg.output, "state": "done", "already_done": True}
            self.snapshot = ray.get(self.coord.start_run.remote(self.policy))
            self.frames_at_start = self.snapshot["frames_done"]
            self.pool = WorkerPool(self.p, self.cfg.gpus_per_worker, self.cfg.workers)
            self.pool.maintain(set(), time.time())
            instructions = self._handle([Tick(time.time())])
            result = self._loop(instructions)
            finished = True
            return result
        except (JobFailed, JobCancelled):
            finished = True
            raise
        finally:
            if self.pool is not None:
                self.pool.shutdown()
            try:
                ray.get(self.coord.flush.remote(True), timeout=30)
                ray.get(self.coord.release.remote(self.driver_id), timeout=30)
                if finished:  # the ledger on storage has the final state; nothing needs the actor now
                    ray.kill(self.coord, no_restart=True)
            except (RayActorError, GetTimeoutError) as exc:
                log.warning("could not reach the coordinator at exit: %s", _cause(exc))

    def _handle(self, events: list) -> list:
        return ray.get(self.coord.handle.remote(events))

    def _loop(self, instructions: list) -> dict[str, Any]:
        last_progress = last_maintain = last_control = 0.0
        pool = self.pool
        assert pool is not None
        while True:
            result = self._carry_out(instructions)
            if result is not None:
                return result
            events: list = []
            now = time.time()
            waiting = list(self.inflight) + list(pool.pending_ready) + list(self.polls)
            done_refs, _ = ray.wait(waiting, num_returns=1, timeout=POLL_S) if waiting else ([], [])
            if not waiting:
                time.sleep(POLL_S)
            if done_refs:
                done_refs, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
            for ref in done_refs:
                events.extend(self._completed(ref, now))
            now = time.time()
            if now - last_progress >= PROGRESS_S:
                self._poll_progress()
                holder = self._claim()
                if holder is not None:
                    raise ClusterError(f"another driver (on {holder.get('host')}, pid {holder.get('pid')}) took this job over")
                self.snapshot = ray.get(self.coord.snapshot.remote())
                self._emit()
                last_progress = now
            if now - last_control >= 2.0:
                if self.p.job.cancel_requested():
                    events.append(Cancelled(now))
                    self.cancelling = True
                last_control = now
            if now - last_maintain >= MAINTAIN_S:
                events.extend(pool.maintain(set(self.snapshot.get("blocked_nodes", [])), now))
                self._check_pool(pool)
                last_maintain = now
            events.append(Tick(now))
            instructions = self._handle(events)

    def _completed(self, ref, now: float) -> list:
        pool = self.pool
        assert pool is not None
        if ref in pool.pending_ready:
            return pool.on_ready(ref, now)
        if ref in self.polls:
            worker = self.polls.pop(ref)
            try:
                stats = ray.get(ref)
            except (RayActorError, RayTaskError):
                return []
            self.stats[worker] = stats
            if stats["updated"] > self.last_seen.get(worker, 0.0):
                self.last_seen[worker] = stats["updated"]
                return [Heartbeat(worker, now)]
            return []
        worker, shard = self.inflight.pop(ref)
        try:
            receipt = ray.get(ref)
        except RayActorError as exc:
            pool.remove(worker)
            return [WorkerLost(worker, now, _cause(exc))]
        except RayTaskError as exc:
            cause = exc.cause
            retryable = cause.retryable if isinstance(cause, FarmError) else True
            return [ShardFailed(shard, worker, now, _cause(exc), retryable)]
        return [
            ShardDone(
                shard,
                worker,
                now,
                segment=receipt["segment"],
                frames=receipt["frames"],
                bytes=receipt["bytes"],
                sha256=receipt["sha256"],
                seconds=receipt["seconds"],
                faces=receipt.get("faces", 0),
            )
        ]

    def _carry_out(self, instructions: list) -> dict[str, Any] | None:
        pool = self.pool
        assert pool is not None
        for ins in instructions:
            if isinstance(ins, Assign):
                member = pool.members.get(ins.worker)
                if member is None:
                    continue
                s = self.shards[ins.shard]
                ref = member.handle.run_shard.options(name=f"shard {s.index} [{s.start}, {s.stop})").remote(s.index, s.start, s.stop, ins.attempt)
                self.inflight[ref] = (ins.worker, ins.shard)
            elif isinstance(ins, StopWorker):
                log.warning("stopping worker %s: %s", ins.worker, ins.reason)
                pool.remove(ins.worker)
                self.inflight = {r: v for r, v in self.inflight.items() if v[0] != ins.worker}
            elif isinstance(ins, Abort):
                self.snapshot = ray.get(self.coord.snapshot.remote())
                self._emit()
                raise JobFailed(f"job {self.p.job.job_id} failed: {ins.reason}")
            elif isinstance(ins, Mux):
                pool.shutdown()
                self.inflight.clear()
                return self._mux()
            elif isinstance(ins, Finish):
                return {"job_id": self.p.job.job_id, "output": self.cfg.output, "state": "done"}
        if self.cancelling:
            raise JobCancelled(f"job {self.p.job.job_id} cancelled; what was done is kept (`farm resume {self.p.job.job_id}` continues it)")
        return None

    def _mux(self) -> dict[str, Any]:
        self.snapshot = ray.get(self.coord.snapshot.remote())
        self.snapshot["state"] = "muxing"
        self._emit(message="assembling the output")
        records = ray.get(self.coord.done_records.remote())
        segments = [(records[s.index].segment, s.start, s.stop) for s in self.shards]
        task = ray.remote(assemble).options(
            num_cpus=1,
            max_retries=0,
            name="farm-mux",
            scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
        )
        try:
            result = ray.get(task.remote(self.p.job.jobs_root, self.p.job.job_id, normalize(self.cfg.output), self.cfg.out, segments, self.p.geometry.canvas))
        except RayTaskError as exc:
            self._handle([MuxFailed(time.time(), _cause(exc))])
            raise JobFailed(f"job {self.p.job.job_id}: {_cause(exc)}") from None
        instructions = self._handle([MuxDone(time.time())])
        self.p.job.clean_segments({segment for segment, _, _ in segments})
        self.snapshot = ray.get(self.coord.snapshot.remote())
        self._emit(message=f"wrote {self.cfg.output}")
        assert any(isinstance(i, Finish) for i in instructions)
        return {"job_id": self.p.job.job_id, "state": "done", **result}

    def _output_current(self) -> bool:
        """A finished job whose output is present and verifies needs no new mux."""
        out = normalize(self.cfg.output)
        if is_url(out) or self.cfg.out.codec == "png" or not os.path.isfile(out):
            return False
        try:
            verify(out, self.p.spec.source)
        except FarmError:
            return False
        return True

    def _poll_progress(self) -> None:
        pool = self.pool
        assert pool is not None
        busy = {w for w, _ in self.inflight.values()}
        for worker in busy:
            if worker in self.polls.values() or worker not in pool.members:
                continue
            self.polls[pool.members[worker].handle.progress.remote()] = worker
        stats = []
        for worker, member in pool.members.items():
            if not member.ready:
                continue
            s = self.stats.get(worker, {})
            fps = s.get("frames_done", 0) / s["busy_s"] if s.get("busy_s") else 0.0
            shard = next((sh for w, sh in self.inflight.values() if w == worker), None)
            stats.append({"worker": worker, "node": member.node, "host": member.host, "device": member.device, "fps": round(fps, 2), "shard": shard, "shards_done": s.get("shards_done", 0)})
        fps, eta = self._rates()
        self.coord.report.remote(stats, {"fps": round(fps, 3), "eta_s": eta, "dashboard_url": self.dashboard_url})

    def _check_pool(self, pool: WorkerPool) -> None:
        if pool.ready_failures and not any(m.ready for m in pool.members.values()) and len(pool.ready_failures) >= max(3, 2 * len(pool.members)):
            raise JobFailed(f"no worker could start: {pool.ready_failures[-1]}")

    def _rates(self) -> tuple[float, float | None]:
        """Frames per second of this run so far, and the seconds left at that rate."""
        snap = self.snapshot
        fps = (snap.get("frames_done", 0) - self.frames_at_start) / max(1e-6, time.time() - self.t0)
        remaining = snap.get("frames_total", 0) - snap.get("frames_done", 0)
        return fps, (remaining / fps if fps > 0 else None)

    def _emit(self, message: str | None = None) -> None:
        if self.on_progress is None:
            return
        snap = self.snapshot
        fps, eta = self._rates()
        self.on_progress(
            Progress(
                job_id=self.p.job.job_id,
                state=snap.get("state", "running"),
                frames_done=snap.get("frames_done", 0),
                frames_total=snap.get("frames_total", 0),
                shards_done=snap.get("shards_done", 0),
                shards_total=snap.get("shards_total", 0),
                fps=fps,
                eta_s=eta,
                workers=snap.get("workers", []),
                failures=snap.get("failures", []),
                dashboard_url=self.dashboard_url,
                message=message,
            )
        )

    def _follow(self, holder: dict[str, Any]) -> dict[str, Any]:
        """Another live driver runs this job: follow it to the end instead of racing it."""
        log.info("job %s is already running (driver on %s, pid %s); following it", self.p.job.job_id, holder.get("host"), holder.get("pid"))
        from farm.status import job_status

        while True:
            try:
                self.snapshot = ray.get(self.coord.snapshot.remote())
            except RayActorError:  # the other driver finished and retired the coordinator
                self.snapshot = job_status(self.p.job.jobs_root, self.p.job.job_id)
            self._emit(message=f"following the driver on {holder.get('host')} (pid {holder.get('pid')})")
            state = self.snapshot["state"]
            if state == "done":
                return {"job_id": self.p.job.job_id, "output": self.cfg.output, "state": "done", "followed": True}
            if state in ("failed", "cancelled"):
                raise JobFailed(f"job {self.p.job.job_id} {state}: {self.snapshot.get('reason')}")
            if state == "running":
                try:
                    holder = self._claim()
                except RayActorError:
                    self.coord = coordinator_handle(self.p.job.jobs_root, self.p.job.job_id, self.policy)
                    holder = self._claim()
                if holder is None:
                    return self.execute()
            time.sleep(PROGRESS_S)


def submit(cfg: JobConfig, *, address: str | None = None, on_progress: Callable[[Progress], None] | None = None, dashboard: bool = True) -> dict[str, Any]:
    """Run ``cfg`` to completion (or resume it); returns a summary.

    Raises:
        FarmError: bad input or options (before any work), or a failed/cancelled job.
    """
    prepared = prepare(cfg)
    owns_ray = not ray.is_initialized()
    url = start_ray(address, dashboard=dashboard) if owns_ray else None
    try:
        return Run(prepared, on_progress, url).execute()
    finally:
        if owns_ray and not address:
            ray.shutdown()


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



# ----------------------------------------------------------------------------------------------
# Ray Jobs: the driver runs on the cluster, the CLI follows it


def identify(cfg: JobConfig) -> str | None:
    """The job id ``cfg`` will have, when the input (and any own weights) are readable here."""
    try:
        source = probe(cfg.input)
        model = dataclasses.replace(
            cfg.model,
            sr_weights_sha256=sha256_file(cfg.model.sr_weights) if cfg.model.sr_weights else None,
            face_weights_sha256=sha256_file(cfg.model.face_weights) if cfg.model.face and cfg.model.face_weights else None,
        )
        fingerprint = input_fingerprint(source.location, source.size_bytes or _size(source.location))
        return make_job_id(source.location, fingerprint, model)
    except (FarmError, OSError):
        return None


def submit_ray_job(
    cfg: JobConfig,
    forwarded: list[str],
    dashboard: str,
    *,
    token: str | None = None,
    detach: bool = False,
    on_line: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Submit ``farm submit <forwarded>`` as a Ray Job to the cluster whose dashboard is at
    ``dashboard``; unless ``detach``, follow its logs until it ends.

    The entrypoint runs farm from the cluster's own environment (``python -m farm``); input,
    output and jobs root must be paths the cluster sees (shared storage or object store URLs).

    Raises:
        ClusterError: the cluster cannot be reached or refuses the job.
        JobFailed: the job ended in failure (its last error line is the message).
    """
    import asyncio
    import shlex

    from ray.job_submission import JobStatus, JobSubmissionClient

    if token:
        use_token(token)
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):  # they would override the address given
        os.environ.pop(name, None)
    job_id = identify(cfg)
    entrypoint = shlex.join(["python", "-m", "farm", "submit", *forwarded, "--address", "auto"])
    submission_id = f"farm-{(job_id or 'job')[:48]}-{uuid.uuid4().hex[:6]}"
    metadata = {"farm_input": cfg.input, "farm_output": cfg.output, "farm_job_id": job_id or "unknown until the driver starts"}
    # The SDK sets its own logger to INFO and logs every websocket it opens and closes.
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        client = JobSubmissionClient(dashboard, headers=headers)
        client.submit_job(entrypoint=entrypoint, submission_id=submission_id, metadata=metadata)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        auth = any(w in str(exc).lower() for w in ("401", "403", "auth", "token"))
        hint = "; the cluster wants its authentication token: pass --token or set RAY_AUTH_TOKEN" if auth else ""
        raise ClusterError(f"cannot submit to the Ray cluster at {dashboard}: {_first_line(exc)}{hint}") from None
    result = {"submission_id": submission_id, "job_id": job_id, "output": cfg.output, "dashboard": dashboard}
    if detach:
        return {**result, "state": "submitted"}
    last_error: list[str] = []

    async def follow() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            for line in chunk.splitlines():
                if line.startswith("error: "):
                    last_error[:] = [line[len("error: ") :]]
                on_line(line)

    asyncio.run(follow())
    status = client.get_job_status(submission_id)
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(submission_id)
        reason = last_error[0] if last_error else (info.message or str(status))
        raise JobFailed(f"Ray job {submission_id} {getattr(status, 'value', status)!s}: {reason}".replace(" FAILED:", " failed:"))
    return {**result, "state": "done"}
