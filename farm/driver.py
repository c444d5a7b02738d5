"""submit: start or join Ray (or hand the job to a cluster as a Ray Job), take the job's
ownership on storage (or follow the driver that holds it, :mod:`farm.follow`), get the job's
coordinator, and carry out the ledger's instructions until the output is written and verified.
The checks before any work are in :mod:`farm.preflight`; the Ray calls to workers and their results
as events in :mod:`farm.actors.bridge`; the view's figures in :mod:`farm.progress`.

The driver holds no state that matters: killed at any point, the same command (or ``farm resume``)
continues from the job directory.

Over 300 lines: Ray's entry points (joining, the coordinator, Ray Jobs) sit with the run."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from farm.actors.bridge import RayBridge
from farm.actors.connect import NAMESPACE, join
from farm.actors.coordinator import Coordinator
from farm.actors.mux_task import assemble, mux_placement
from farm.actors.pool import WorkerPool, cluster_encoder_sizing
from farm.actors.pool import ray_cause as _cause
from farm.config import JobConfig
from farm.enhance.factories import job_module, resolve_factories
from farm.enhance.weights import sr_flop_per_input_pixel
from farm.errors import ClusterError, FarmError, JobCancelled, JobFailed, StorageError, first_line
from farm.events import Abort, Assign, Cancelled, Finish, Mux, MuxDone, MuxFailed, Resync, StopWorker, Superseded, Tick
from farm.follow import follow
from farm.preflight import Prepared, identify, output_current, prepare, record_output
from farm.progress import Progress, ProgressTracker
from farm.storage.fs import normalize

if TYPE_CHECKING:
    from farm.media import SourceInfo

log = logging.getLogger(__name__)

POLL_S = 0.5
PROGRESS_S = 1.0
MAINTAIN_S = 3.0
CONTROL_S = 2.0

__all__ = ["Progress", "Run", "prepare", "start_ray", "submit", "submit_ray_job", "use_token"]  # Progress: farm.progress's


# ----------------------------------------------------------------------------------------------
# Ray


def start_ray(address: str | None, num_cpus: int | None = None, dashboard: bool = True, token: str | None = None) -> str | None:
    """Join the cluster at ``address`` (``host:port``, ``auto`` or ``ray://``), or start an
    embedded one on loopback; returns the dashboard URL when there is one."""
    if token:
        use_token(token)
    if address:
        ctx = join(address)
    else:
        ctx = _start_local_ray(num_cpus, dashboard)
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url else None


def _start_local_ray(num_cpus: int | None, dashboard: bool):
    """An embedded cluster for this machine only: every port of its GCS, raylet, workers, dashboard
    and agents on 127.0.0.1, and Ray's token authentication left on (Ray's default for a local
    cluster; it writes a token to ~/.ray/auth_token if there is none). Only an explicit
    ``RAY_AUTH_MODE=disabled`` turns it off.

    Ray binds all interfaces unless it takes the node's address to be loopback, which it does only
    where "clusters are disabled" (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read when ray is imported,
    so the constant is set here too; child processes read the variable)."""
    from ray._private import ray_constants  # type: ignore[attr-defined]

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    saved, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        return ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            # No port given: Ray takes 8265 or the next free one when it binds (a port checked
            # free beforehand can be taken by another Ray starting meanwhile).
            _node_ip_address="127.0.0.1",
            logging_level=logging.ERROR,
            log_to_driver=False,
            namespace=NAMESPACE,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def use_token(token: str) -> None:
    """Ray's token authentication reads the token from the environment, in this process and in
    everything it starts; Ray caches its settings at import, so they are reloaded here (as Ray's
    own `_enable_token_auth` does)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = token
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")


def coordinator_handle(jobs_root: str, job_id: str, policy: dict[str, Any]):
    """The job's one coordinator on this cluster: created on the head node if absent, found if
    present. Its name is the job id's alone, not the jobs root's: one job directory reached by two
    paths (an NFS share mounted at two places) has one coordinator; the driver that holds the job
    on storage points it at its own path when its run starts."""
    remote = ray.remote(Coordinator).options(
        name=f"farm-coordinator-{job_id}",
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


# ----------------------------------------------------------------------------------------------
# The run


class Run:
    """One driver run of one job this driver holds: carries out the ledger's instructions."""

    def __init__(self, prepared: Prepared, on_progress: Callable[[Progress], None] | None, dashboard_url: str | None) -> None:
        assert prepared.owner is not None and prepared.owner.owned, "a run needs the job's ownership"
        self.p = prepared
        self.cfg = prepared.cfg
        self.owner = prepared.owner
        self.on_progress = on_progress
        self.dashboard_url = dashboard_url
        self.run_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.policy = {"max_attempts": self.cfg.max_attempts, "lease_timeout_s": self.cfg.lease_timeout_s}
        self.shards = prepared.spec.shards()
        self.tracker = ProgressTracker(prepared.job.job_id, dashboard_url, prepared.disk_note or None)
        self.coord: Any = None
        self.bridge: RayBridge | None = None
        self.cancelling = False
        self.coordinator_s = 0.0  # time this driver waited on the coordinator (calls included)

    def execute(self) -> dict[str, Any]:
        self.coord = coordinator_handle(self.p.job.jobs_root, self.p.job.job_id, self.policy)
        finished = False
        try:
            if ray.get(self.coord.snapshot.remote())["state"] == "done" and output_current(self.p):
                finished = True
                return {"job_id": self.p.job.job_id, "output": self.cfg.output, "state": "done", "already_done": True}
            driver = {"host": socket.gethostname(), "pid": os.getpid(), "id": self.run_id}
            snapshot, instructions = ray.get(self.coord.start_run.remote(self.run_id, time.monotonic(), self.policy, self.p.job.jobs_root, driver))
            self.tracker.start(snapshot)
            self._size_encoder(snapshot["shards_done"])
            pool = WorkerPool(self.p.job, self.p.spec.model.device, self.cfg.gpus_per_worker, self.cfg.workers,
                              resolve_factories(self.p.spec.model), self.cfg.batch_frames)
            self.bridge = RayBridge(pool, self.shards, self.p.job.job_id)
            pool.maintain(set(), time.monotonic())
            result = self._loop(instructions + self._handle([Tick(time.monotonic())]))
            finished = True
            return result
        except (JobFailed, JobCancelled):
            finished = True
            raise
        finally:
            if self.bridge is not None:
                self.bridge.shutdown()
            if not self.owner.lost:  # a driver that lost the job writes nothing more
                try:
                    ray.get(self.coord.flush.remote(True), timeout=30)
                    if finished:  # the ledger on storage has the final state; nothing needs the actor now
                        ray.kill(self.coord, no_restart=True)
                except (RayActorError, GetTimeoutError) as exc:
                    log.warning("could not reach the coordinator at exit: %s", _cause(exc))

    def _size_encoder(self, shards_done: int) -> None:
        """Record, before the first chunk of a job starting on GPUs, the encoder threads and
        preset its nodes' CPUs per GPU allow (:func:`farm.plan.size_encoder`); a job with chunks
        (``shards_done``, from the ledger the coordinator just rebuilt from storage) or a sizing
        keeps what it has, so every chunk shares one bitstream recipe."""
        spec = self.p.spec
        if spec.encoder is not None or spec.model.device == "cpu" or shards_done:
            return
        sizing = cluster_encoder_sizing(spec, ray.nodes(), lambda: sr_flop_per_input_pixel(spec.model))
        if sizing is None:
            return
        log.info("encoder: %s", sizing.why)
        spec = dataclasses.replace(spec, encoder=sizing)
        self.p.job.write_spec(spec)
        self.p = dataclasses.replace(self.p, spec=spec)

    def _handle(self, events: list) -> list:
        t = time.perf_counter()
        instructions = ray.get(self.coord.handle.remote(events, self.run_id))
        if any(isinstance(i, Resync) for i in instructions):
            self.owner.check()  # only the job's owner may re-announce its workers
            log.warning("the job's coordinator was restarted; announcing the workers again")
            rejoin = self.bridge.rejoin(time.monotonic()) if self.bridge is not None else []
            instructions = ray.get(self.coord.resync.remote(self.run_id, rejoin + list(events)))
        self.coordinator_s += time.perf_counter() - t
        return instructions

    def _loop(self, instructions: list) -> dict[str, Any]:
        """Carry out instructions, gather what happened as events, hand them to the ledger."""
        bridge = self.bridge
        assert bridge is not None
        last_progress = last_maintain = last_control = 0.0
        while True:
            result = self._carry_out(instructions)
            if result is not None:
                return result
            if not bridge.waiting():
                time.sleep(POLL_S)
            events = bridge.collect(POLL_S, time.monotonic())
            now = time.monotonic()
            if now - last_progress >= PROGRESS_S:
                self.owner.check()
                fps, eta = self.tracker.rates()
                self.coord.report.remote(bridge.poll_progress(), {"fps": round(fps, 3), "eta_s": eta, "dashboard_url": self.dashboard_url})
                self._refresh()
                last_progress = now
            if now - last_control >= CONTROL_S:
                if self.p.job.cancel_requested():
                    events.append(Cancelled(now))
                    self.cancelling = True
                last_control = now
            if now - last_maintain >= MAINTAIN_S:
                events.extend(bridge.pool.maintain(set(self.tracker.snapshot.get("blocked_nodes", [])), now))
                last_maintain = now
            events.append(Tick(now))
            instructions = self._handle(events)

    def _carry_out(self, instructions: list) -> dict[str, Any] | None:
        bridge = self.bridge
        assert bridge is not None
        for ins in instructions:
            if isinstance(ins, Assign):
                bridge.assign(ins)
            elif isinstance(ins, StopWorker):
                bridge.stop_worker(ins.worker, ins.reason)
            elif isinstance(ins, Superseded):
                raise ClusterError(f"another driver took job {self.p.job.job_id} over; this one stops")
            elif isinstance(ins, Abort):
                self._refresh()
                raise JobFailed(f"job {self.p.job.job_id} failed: {ins.reason}")
            elif isinstance(ins, Mux):
                bridge.shutdown()
                return self._mux()
            elif isinstance(ins, Finish):
                if not output_current(self.p):  # finished for another submit's -o: write ours
                    bridge.shutdown()
                    return self._mux()
                return {"job_id": self.p.job.job_id, "output": self.cfg.output, "state": "done"}
        if self.cancelling:
            raise JobCancelled(f"job {self.p.job.job_id} cancelled; what was done is kept (`farm resume {self.p.job.job_id}` continues it)")
        return None

    def _mux(self) -> dict[str, Any]:
        """Concatenate the chunks into this submit's output. The ownership is renewed meanwhile
        (its thread), so no follower takes the job over during a long mux."""
        self._refresh(message="assembling the output", state="muxing")
        records = ray.get(self.coord.done_records.remote())
        segments = [(records[s.index].segment, s.start, s.stop) for s in self.shards]
        args = (self.p.job.jobs_root, self.p.job.job_id, normalize(self.cfg.output), self.cfg.out, segments)
        placement = mux_placement(normalize(self.cfg.output))
        try:
            if placement is None:
                result = assemble(*args)
            else:
                result = ray.get(ray.remote(assemble).options(max_retries=0, name=f"farm-mux {self.p.job.job_id}", **placement).remote(*args))
        except (RayTaskError, FarmError) as exc:
            self._handle([MuxFailed(time.monotonic(), _cause(exc))])
            raise JobFailed(f"job {self.p.job.job_id}: {_cause(exc)}") from None
        self.owner.check()
        record_output(self.p)
        instructions = self._handle([MuxDone(time.monotonic())])
        self.p.job.clean_segments({segment for segment, _, _ in segments})
        self._refresh(message=f"wrote {self.cfg.output}")
        assert any(isinstance(i, Finish) for i in instructions)
        return {"job_id": self.p.job.job_id, "state": "done", **result,
                "coordinator_ms_per_shard": round(1000 * self.coordinator_s / self.tracker.shards_run(), 3)}

    def _refresh(self, message: str | None = None, state: str | None = None) -> None:
        self.tracker.update(ray.get(self.coord.snapshot.remote()))
        if self.on_progress is not None:
            self.on_progress(self.tracker.progress(message, state))


def drive(prepared: Prepared, on_progress: Callable[[Progress], None] | None = None, dashboard_url: str | None = None) -> dict[str, Any]:
    """Run the job if this driver holds it; otherwise follow the driver that does, and take the
    job over when it ends without this submit's output, hands the job back, or goes silent (a
    loop: each pass prepares again, now as the owner, without ``--restart``)."""
    while True:
        owner = prepared.owner
        assert owner is not None
        if owner.owned:
            try:
                return Run(prepared, on_progress, dashboard_url).execute()
            finally:
                owner.release()
        tracker = ProgressTracker(prepared.job.job_id, dashboard_url, prepared.disk_note or None)
        result = follow(owner, prepared.job, tracker, functools.partial(output_current, prepared), on_progress)
        if result is not None:
            return {**result, "output": prepared.cfg.output}
        owner.detach()  # taken over: the next prepare keeps the job under this driver's id
        prepared = prepare(dataclasses.replace(prepared.cfg, restart=False))


def submit(cfg: JobConfig, *, address: str | None = None, on_progress: Callable[[Progress], None] | None = None, dashboard: bool = True,
           source: SourceInfo | None = None) -> dict[str, Any]:
    """Run ``cfg`` to completion (or resume it); returns a summary. ``source``: the input's probe,
    when the caller has made it.

    Raises:
        FarmError: bad input or options (before any work), or a failed/cancelled job.
    """
    prepared = prepare(cfg, source=source)
    owns_ray = not ray.is_initialized()
    try:
        url = start_ray(address, dashboard=dashboard) if owns_ray else None
        return drive(prepared, on_progress, url)
    finally:
        if prepared.owner is not None and prepared.owner.owned:  # Ray would not start: hand the job back
            prepared.owner.release()
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

    The entrypoint runs farm from the cluster's own environment (``python -m farm``, or the test
    entry point when this process installed the fakes: :func:`farm.enhance.factories.job_module`);
    input, output and jobs root must be paths the cluster sees (shared storage or object store URLs).

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
    entrypoint = shlex.join(["python", "-m", job_module(), "submit", *forwarded, "--address", "auto"])
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
        hint = "; the cluster wants its authentication token: pass --token-file, --token or set RAY_AUTH_TOKEN" if auth else ""
        raise ClusterError(f"cannot submit to the Ray cluster at {dashboard}: {first_line(exc)}{hint}") from None
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
