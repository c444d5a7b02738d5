"""submit: start or join Ray, open the job (or follow the driver that holds it), get its coordinator
and carry out the ledger's instructions until the output is written and verified. Holds no state
that matters: killed at any point, the same command (or ``farm resume``) continues."""

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
from farm.actors.connect import NAMESPACE
from farm.actors.coordinator import Coordinator
from farm.actors.mux_task import assemble, mux_placement
from farm.actors.pool import WorkerPool, cluster_encoder_sizing
from farm.actors.pool import ray_cause as _cause
from farm.config import JobConfig
from farm.enhance.factories import resolve_factories
from farm.enhance.weights import sr_flop_per_input_pixel
from farm.errors import ClusterError, FarmError, JobCancelled, JobFailed, StorageError
from farm.events import Abort, Assign, Cancelled, Finish, Mux, MuxDone, MuxFailed, Resync, StopWorker, Superseded, Tick
from farm.follow import follow
from farm.job import Following, Owned, open_job, output_current, record_output
from farm.progress import Progress, ProgressTracker
from farm.result import JobResult
from farm.session import start_ray
from farm.storage.fs import normalize

if TYPE_CHECKING:
    from farm.media import SourceInfo

log = logging.getLogger(__name__)

POLL_S = 0.5
PROGRESS_S = 1.0
MAINTAIN_S = 3.0
CONTROL_S = 2.0

__all__ = ["Run", "WorkerShare", "coordinator_handle", "drive", "submit"]


class WorkerShare:
    """The workers a queue's runner gives a job: it may raise ``workers`` while the job runs (its
    pool then grows at the next maintenance pass); a pool never shrinks."""

    def __init__(self, workers: int) -> None:
        self.workers = workers


# ----------------------------------------------------------------------------------------------
# The coordinator


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

    def __init__(self, owned: Owned, on_progress: Callable[[Progress], None] | None, dashboard_url: str | None,
                 share: WorkerShare | None = None) -> None:
        assert owned.owner.owned, "a run needs the job's ownership"
        self.p = owned
        self.cfg = owned.cfg
        self.owner = owned.owner
        self.on_progress = on_progress
        self.dashboard_url = dashboard_url
        self.share = share
        self.run_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.policy = {"max_attempts": self.cfg.max_attempts, "lease_timeout_s": self.cfg.lease_timeout_s}
        self.shards = owned.spec.shards()
        self.tracker = ProgressTracker(owned.job.job_id, dashboard_url, owned.disk_note or None)
        self.coord: Any = None
        self.bridge: RayBridge | None = None
        self.cancelling = False
        self.coordinator_s = 0.0  # time this driver waited on the coordinator (calls included)

    def execute(self) -> JobResult:
        self.coord = coordinator_handle(self.p.job.jobs_root, self.p.job.job_id, self.policy)
        finished = False
        try:
            if ray.get(self.coord.snapshot.remote())["state"] == "done" and output_current(self.p):
                finished = True
                return JobResult(self.p.job.job_id, self.cfg.output, already_done=True)
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

    def _loop(self, instructions: list) -> JobResult:
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
                if self.share is not None:
                    bridge.pool.grow(self.share.workers)
                events.extend(bridge.pool.maintain(set(self.tracker.snapshot.get("blocked_nodes", [])), now))
                last_maintain = now
            events.append(Tick(now))
            instructions = self._handle(events)

    def _carry_out(self, instructions: list) -> JobResult | None:
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
                return JobResult(self.p.job.job_id, self.cfg.output)
        if self.cancelling:
            raise JobCancelled(f"job {self.p.job.job_id} cancelled; what was done is kept (`farm resume {self.p.job.job_id}` continues it)")
        return None

    def _mux(self) -> JobResult:
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
        return JobResult.of_mux(self.p.job.job_id, result, round(1000 * self.coordinator_s / self.tracker.shards_run(), 3))

    def _refresh(self, message: str | None = None, state: str | None = None) -> None:
        self.tracker.update(ray.get(self.coord.snapshot.remote()))
        if self.on_progress is not None:
            self.on_progress(self.tracker.progress(message, state))


def drive(opened: Owned | Following, on_progress: Callable[[Progress], None] | None = None, dashboard_url: str | None = None,
          share: WorkerShare | None = None) -> JobResult:
    """Run the job if this driver holds it; otherwise follow the driver that does, and take the
    job over when it ends without this submit's output, hands the job back, or goes silent (a
    loop: each pass opens the job again, now as the owner, without ``--restart``)."""
    while True:
        owner = opened.owner
        # Held when opened, and still: the renewal may have found it taken over while Ray started.
        if isinstance(opened, Owned) and owner.owned:
            try:
                return Run(opened, on_progress, dashboard_url, share).execute()
            finally:
                owner.release()
        tracker = ProgressTracker(opened.job.job_id, dashboard_url, opened.disk_note or None)
        if follow(owner, opened.job, tracker, functools.partial(output_current, opened), on_progress):
            return JobResult(opened.job.job_id, opened.cfg.output, followed=True)
        owner.detach()  # taken over: the next open_job keeps the job under this driver's id
        opened = open_job(dataclasses.replace(opened.cfg, restart=False))


def submit(cfg: JobConfig, *, address: str | None = None, on_progress: Callable[[Progress], None] | None = None, dashboard: bool = True,
           source: SourceInfo | None = None) -> JobResult:
    """Run ``cfg`` to completion (or resume it); returns what it did. ``source``: the input's probe,
    when the caller has made it.

    Raises:
        FarmError: bad input or options (before any work), or a failed/cancelled job.
    """
    opened = open_job(cfg, source=source)
    owns_ray = not ray.is_initialized()
    try:
        url = start_ray(address, dashboard=dashboard) if owns_ray else None
        return drive(opened, on_progress, url)
    finally:
        if opened.owner.owned:  # Ray would not start: hand the job back
            opened.owner.release()
        # Inside the CLI's stdout redirection, so that Ray's last buffered warnings go to stderr.
        if owns_ray:
            ray.shutdown()
