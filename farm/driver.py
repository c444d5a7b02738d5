"""submit: start or join Ray (or hand the job to a cluster as a Ray Job), get the job's
coordinator, keep a pool of enhance workers, and carry out the ledger's instructions until the
output is written and verified. The checks before any work are in :mod:`farm.preflight`.

The driver holds no state that matters: killed at any point, the same command (or ``farm resume``)
continues from the job directory."""

from __future__ import annotations

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
from farm.actors.mux_task import assemble
from farm.actors.pool import NAMESPACE, WorkerPool
from farm.actors.pool import ray_cause as _cause
from farm.config import JobConfig
from farm.errors import ClusterError, FarmError, JobCancelled, JobFailed, StorageError
from farm.ledger import (
    Abort,
    Assign,
    Cancelled,
    Finish,
    Heartbeat,
    Mux,
    MuxDone,
    Resync,
    WorkerJoined,
    MuxFailed,
    ShardDone,
    ShardFailed,
    StopWorker,
    Tick,
    WorkerLost,
)
from farm.preflight import Prepared, identify, prepare
from farm.receipt import Receipt
from farm.storage.fs import is_url, normalize
from farm.video.mux import verify

log = logging.getLogger(__name__)

POLL_S = 0.5
PROGRESS_S = 1.0
MAINTAIN_S = 3.0


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
    disk: str | None = None  # the disk estimate made before work


# ----------------------------------------------------------------------------------------------
# Ray


def start_ray(address: str | None, num_cpus: int | None = None, dashboard: bool = True, token: str | None = None) -> str | None:
    """Join the cluster at ``address`` (``host:port``, ``auto`` or ``ray://``), or start an
    embedded one on loopback; returns the dashboard URL when there is one."""
    if token:
        use_token(token)
    if address:
        try:
            ctx = ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, namespace=NAMESPACE)
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
            dashboard_port=_port(8265),
            logging_level=logging.ERROR,
            log_to_driver=False,
            namespace=NAMESPACE,
        )
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url else None


def _port(preferred: int) -> int:
    """``preferred`` if nothing listens on it on loopback, else a free port (another Ray on this
    machine has the dashboard's usual port)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def use_token(token: str) -> None:
    """Ray's token authentication reads the token from the environment, in this process and in
    everything it starts; Ray caches its settings at import, so they are reloaded here (as Ray's
    own `_enable_token_auth` does)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = token
    from ray._raylet import Config  # type: ignore[attr-defined]

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
    handle: Any = remote.remote(jobs_root, job_id, policy)  # an actor handle (Ray's stubs do not say so)
    try:
        ray.get(handle.ping.remote(), timeout=120)
    except RayActorError as exc:
        raise StorageError(f"the job coordinator could not start: {_cause(exc)}") from None
    except GetTimeoutError:
        raise ClusterError("the job coordinator did not start within 2 minutes; is the head node short of resources?") from None
    return handle


def mux_placement(output: str) -> dict[str, Any]:
    """Where the mux task runs. It copies packets (nothing is encoded), so it takes no CPU slot:
    Ray Jobs run the driver on the head, and the shipped cloud configs give the head 0 CPUs.

    An object-store output (``s3://...``) is reachable from every node: the task may run on any
    node. A local output path is the driver's machine's: the task runs there, pinned, asking for
    no CPU, so that it fits a CPU-less head."""
    if is_url(output):
        return {"num_cpus": 0}
    return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}


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
        self.attempt: dict[Any, int] = {}  # run_shard ref -> attempt
        self.polls: dict[Any, str] = {}  # progress ref -> worker
        self.last_seen: dict[str, float] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.snapshot: dict[str, Any] = {}
        self.t0 = time.time()
        self.frames_at_start = 0
        self.shards_at_start = 0
        self.shards = prepared.spec.shards()
        self.cancelling = False
        self.coordinator_s = 0.0  # time this driver waited on the coordinator (calls included)

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
            self.snapshot, instructions = ray.get(self.coord.start_run.remote(self.driver_id, time.monotonic(), self.policy))
            self.frames_at_start = self.snapshot["frames_done"]
            self.shards_at_start = self.snapshot["shards_done"]
            self.pool = WorkerPool(self.p.job, self.p.spec.model.device, self.cfg.gpus_per_worker, self.cfg.workers)
            self.pool.maintain(set(), time.monotonic())
            instructions = instructions + self._handle([Tick(time.monotonic())])
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
        t = time.perf_counter()
        instructions = ray.get(self.coord.handle.remote(events, self.driver_id))
        if any(isinstance(i, Resync) for i in instructions):
            log.warning("the job's coordinator was restarted; announcing the workers again")
            instructions = ray.get(self.coord.resync.remote(self.driver_id, self._rejoin(time.monotonic()) + list(events)))
        self.coordinator_s += time.perf_counter() - t
        return instructions

    def _loop(self, instructions: list) -> dict[str, Any]:
        last_progress = last_maintain = last_control = 0.0
        pool = self.pool
        assert pool is not None
        while True:
            result = self._carry_out(instructions)
            if result is not None:
                return result
            events: list = []
            now = time.monotonic()
            waiting = list(self.inflight) + list(pool.pending_ready) + list(self.polls)
            done_refs, _ = ray.wait(waiting, num_returns=1, timeout=POLL_S) if waiting else ([], [])
            if not waiting:
                time.sleep(POLL_S)
            if done_refs:
                done_refs, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
            for ref in done_refs:
                events.extend(self._completed(ref, now))
            now = time.monotonic()
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
                last_maintain = now
            events.append(Tick(now))
            instructions = self._handle(events)

    def _rejoin(self, now: float) -> list:
        """Every ready worker, with the shard it is running, for a restarted coordinator."""
        pool = self.pool
        if pool is None:
            return []
        running = {worker: (shard, self.attempt.get(ref, 0)) for ref, (worker, shard) in self.inflight.items()}
        out = []
        for worker, member in pool.members.items():
            if member.ready and member.node is not None:
                shard, attempt = running.get(worker, (None, 0))
                out.append(WorkerJoined(worker, member.node, now, shard, attempt))
        return out

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
        self.attempt.pop(ref, None)
        try:
            receipt = ray.get(ref)
        except RayActorError as exc:
            pool.remove(worker)
            return [WorkerLost(worker, now, _cause(exc))]
        except RayTaskError as exc:
            cause = exc.cause
            retryable = cause.retryable if isinstance(cause, FarmError) else True
            return [ShardFailed(shard, worker, now, _cause(exc), retryable)]
        return [ShardDone(shard, worker, now, receipt if isinstance(receipt, Receipt) else Receipt.from_json(receipt))]

    def _carry_out(self, instructions: list) -> dict[str, Any] | None:
        pool = self.pool
        assert pool is not None
        for ins in instructions:
            if isinstance(ins, Assign):
                member = pool.members.get(ins.worker)
                if member is None:
                    continue
                s = self.shards[ins.shard]
                call = f"farm-shard {self.p.job.job_id} {s.index} [{s.start}, {s.stop}) attempt {ins.attempt}"
                ref = member.handle.run_shard.options(name=call).remote(s.index, s.start, s.stop, ins.attempt)
                self.inflight[ref] = (ins.worker, ins.shard)
                self.attempt[ref] = ins.attempt
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
                if not self._output_current():  # finished for another submit's -o: write ours
                    pool.shutdown()
                    self.inflight.clear()
                    return self._mux()
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
        task = ray.remote(assemble).options(max_retries=0, name=f"farm-mux {self.p.job.job_id}", **mux_placement(normalize(self.cfg.output)))
        try:
            result = ray.get(task.remote(self.p.job.jobs_root, self.p.job.job_id, normalize(self.cfg.output), self.cfg.out, segments))
        except RayTaskError as exc:
            self._handle([MuxFailed(time.monotonic(), _cause(exc))])
            raise JobFailed(f"job {self.p.job.job_id}: {_cause(exc)}") from None
        self._record_output()
        instructions = self._handle([MuxDone(time.monotonic())])
        self.p.job.clean_segments({segment for segment, _, _ in segments})
        self.snapshot = ray.get(self.coord.snapshot.remote())
        self._emit(message=f"wrote {self.cfg.output}")
        assert any(isinstance(i, Finish) for i in instructions)
        shards_run = max(1, self.snapshot["shards_done"] - self.shards_at_start)
        return {"job_id": self.p.job.job_id, "state": "done", **result,
                "coordinator_ms_per_shard": round(1000 * self.coordinator_s / shards_run, 3)}

    def _output_current(self) -> bool:
        """This submit's output needs no new concatenation: this job wrote it, with these encode
        settings, it is unchanged since (size and mtime) and it still verifies. A file at ``-o``
        that the job did not write (another job's, or an older run's with other settings) is not
        current, nor is a PNG directory or an object-store output (not checked here)."""
        out = normalize(self.cfg.output)
        if is_url(out) or self.cfg.out.codec == "png" or not os.path.isfile(out):
            return False
        record = self.p.job.outputs().get(out)
        st = os.stat(out)
        if record is None or record.get("out") != self.cfg.out.to_json() or (record.get("bytes"), record.get("mtime_ns")) != (st.st_size, st.st_mtime_ns):
            return False
        try:
            verify(out, self.p.spec.source, index=self.p.spec.output_index)
        except FarmError:
            return False
        return True

    def _record_output(self) -> None:
        """Note what this submit wrote, for :meth:`_output_current` of the next submit."""
        out = normalize(self.cfg.output)
        if is_url(out) or not os.path.isfile(out):
            return
        st = os.stat(out)
        self.p.job.record_output(out, self.cfg.out, st.st_size, st.st_mtime_ns)

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
                disk=self.p.disk_note or None,
            )
        )

    def _follow(self, holder: dict[str, Any]) -> dict[str, Any]:
        """Another live driver runs this job: follow it to the end instead of racing it."""
        log.info("job %s is already running (driver on %s, pid %s); following it", self.p.job.job_id, holder.get("host"), holder.get("pid"))
        from farm.cli.status import job_status

        while True:
            try:
                self.snapshot = ray.get(self.coord.snapshot.remote())
            except RayActorError:  # the other driver finished and retired the coordinator
                self.snapshot = job_status(self.p.job.jobs_root, self.p.job.job_id)
            self._emit(message=f"following the driver on {holder.get('host')} (pid {holder.get('pid')})")
            state = self.snapshot["state"]
            if state == "done":
                if not self._output_current():  # the other driver wrote its own -o, not ours
                    return self.execute()
                return {"job_id": self.p.job.job_id, "output": self.cfg.output, "state": "done", "followed": True}
            if state in ("failed", "cancelled"):
                raise JobFailed(f"job {self.p.job.job_id} {state}: {self.snapshot.get('reason')}")
            if state == "running":
                try:
                    taken = self._claim()
                except RayActorError:
                    self.coord = coordinator_handle(self.p.job.jobs_root, self.p.job.job_id, self.policy)
                    taken = self._claim()
                if taken is None:
                    return self.execute()
                holder = taken
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
        # Inside the CLI's stdout redirection, so that Ray's last buffered warnings go to stderr.
        if owns_ray:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------
# Ray Jobs: the driver runs on the cluster, the CLI follows it


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
