"""Running a jobs root's queue: hold the runner's ownership on storage, hand the cluster's workers
to the queued jobs (:func:`farm.queue.allocate`), drive each started job in a thread of this process,
and take jobs off the queue as they finish. Killed at any point, the next runner goes on from the
queue's files and each job's ledger."""

from __future__ import annotations

import dataclasses
import logging
import queue as threadq
import threading
import time
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field

import ray

from farm.actors.queue_board import start_board
from farm.driver import WorkerShare, drive
from farm.errors import FarmError, JobCancelled
from farm.job import open_job
from farm.plan import default_cpu_workers
from farm.queue import QueuedJob, QueueEntry, allocate, order, summary, tally
from farm.session import start_ray
from farm.storage.ownership import Ownership
from farm.storage.queuedir import Outcome, QueueDir

log = logging.getLogger(__name__)

POLL_S = 1.0

__all__ = ["QueueReport", "QueueView", "Runner", "cluster_slots"]


@dataclass(frozen=True, slots=True)
class QueueView:
    """What the runner's terminal view shows: the queue in its order, and the workers each job holds."""

    jobs: tuple[QueuedJob, ...]
    slots: int
    finished: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]

    @property
    def line(self) -> str:
        return summary(self.jobs, self.slots, len(self.finished), len(self.failed))


@dataclass(frozen=True, slots=True)
class QueueReport:
    """What a runner did: the jobs it finished and those it gave up on, with their error lines;
    ``holder``: the runner that holds the queue, when this one did not get it."""

    finished: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    holder: str | None = None


@dataclass
class _Running:
    entry: QueueEntry
    share: WorkerShare
    thread: threading.Thread


def _show(board, view: QueueView, before: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """Tell the queue's board (farm.actors.queue_board) the view, in a call named with its line;
    jobs named before and gone now are shown with no workers. Returns the call, and the jobs
    named (their submitters)."""
    held = {j.entry.job_id: (j.entry.submitter, j.held) for j in view.jobs}
    gone = {job_id: (submitter, 0) for job_id, submitter in before.items() if job_id not in held}
    states = {**tally(view.jobs), "finished": len(view.finished), "failed": len(view.failed)}
    ref = board.show.options(name=view.line).remote(view.line, states, held | gone)
    return ref, {job_id: submitter for job_id, (submitter, _) in held.items()}


def cluster_slots() -> int:
    """The workers the queue hands out: one per GPU of the cluster, or on a CPU cluster the worker
    count one job would get (:func:`farm.plan.default_cpu_workers`)."""
    gpus = int(ray.cluster_resources().get("GPU", 0) + 1e-9)
    return gpus if gpus else default_cpu_workers(int(ray.cluster_resources().get("CPU", 1)))


@dataclass
class Runner:
    """One runner of the queue under ``jobs_root``. ``slots``: the workers to hand out (default:
    :func:`cluster_slots`); ``wait``: when another runner holds the queue, wait to take it over (it
    ends, or goes silent for the ownership's TTL) instead of returning at once."""

    jobs_root: str
    slots: int | None = None
    on_update: Callable[[QueueView], None] | None = None
    poll_s: float = POLL_S
    wait: bool = False
    address: str | None = None
    _running: dict[str, _Running] = field(default_factory=dict)
    _ended: threadq.Queue = field(default_factory=threadq.Queue)
    _wake: threading.Event = field(default_factory=threading.Event)
    _finished: list[str] = field(default_factory=list)
    _failed: list[tuple[str, str]] = field(default_factory=list)
    _board: Any = None  # the queue's board in the dashboard (kept while the runner is: Ray ends it with its last handle)

    def run(self) -> QueueReport:
        """Run the queue until it holds nothing this runner can start (paused and failed jobs stay)."""
        qd = QueueDir(self.jobs_root)
        lease = Ownership(qd)  # type: ignore[arg-type]  # the queue's owner files, as a job's
        while not lease.try_take():
            if not self.wait:
                holder = lease.holder
                return QueueReport(holder=f"{holder.host}, pid {holder.pid}" if holder else "another runner")
            time.sleep(min(self.poll_s * 2, 4.0))
        owns_ray = not ray.is_initialized()
        try:
            url = start_ray(self.address) if owns_ray else None
            slots = self.slots or cluster_slots()
            log.info("running the queue of %s with %d workers", self.jobs_root, slots)
            qd.write_slots(slots)
            self._loop(qd, lease, slots, url)
        finally:
            for r in self._running.values():  # only on an error of the runner itself: its jobs stop too
                r.thread.join(timeout=1)
            lease.release()
            if owns_ray:
                ray.shutdown()
        return QueueReport(tuple(self._finished), tuple(self._failed))

    def _loop(self, qd: QueueDir, lease: Ownership, slots: int, dashboard_url: str | None) -> None:
        board = self._board = start_board(self.jobs_root)
        shown: tuple[str, dict[str, str]] = ("", {})  # the board's last line, and the jobs it named
        told: list = []  # the board's calls not yet known done
        while True:
            lease.check()
            self._reap(qd)
            entries = {e.job_id: e for e in qd.entries()}
            failed = qd.outcomes()
            jobs = [QueuedJob(e, self._held(e.job_id), e.config.workers) for e in entries.values()
                    if e.job_id in self._running or e.job_id not in failed]
            for job_id, n in allocate(jobs, slots, time.time()).items():
                if job_id not in self._running:
                    self._start(entries[job_id], n, dashboard_url)
                elif n > self._running[job_id].share.workers:
                    self._running[job_id].share.workers = n
            jobs = [dataclasses.replace(j, held=self._held(j.entry.job_id)) for j in jobs]
            view = QueueView(tuple(order(jobs, time.time())), slots, tuple(self._finished), tuple(self._failed))
            if view.line != shown[0]:
                ref, named = _show(board, view, shown[1])
                shown, told = (view.line, named), [*told, ref]
                _, told = ray.wait(told, num_returns=len(told), timeout=0)
            if self.on_update is not None:
                self.on_update(view)
            if not self._running and not any(not j.entry.paused for j in jobs):
                ray.wait(told, num_returns=len(told), timeout=5)  # the last line reaches the board before this runner goes
                return
            self._wake.wait(self.poll_s)  # set early by a job that ended
            self._wake.clear()

    def _held(self, job_id: str) -> int:
        r = self._running.get(job_id)
        return r.share.workers if r else 0

    def _start(self, entry: QueueEntry, workers: int, dashboard_url: str | None) -> None:
        share = WorkerShare(workers)
        thread = threading.Thread(target=self._drive, args=(entry, share, dashboard_url), name=f"farm-queue-{entry.job_id}", daemon=True)
        self._running[entry.job_id] = _Running(entry, share, thread)
        log.info("starting job %s with %d workers", entry.job_id, workers)
        thread.start()

    def _drive(self, entry: QueueEntry, share: WorkerShare, dashboard_url: str | None) -> None:
        """One job, to its end: ``(job_id, None)`` when its output is written, ``"cancelled"`` when
        it was paused or cancelled, else its error line."""
        outcome: str | None
        try:
            cfg = dataclasses.replace(entry.config, workers=share.workers, jobs_root=self.jobs_root, restart=False)
            drive(open_job(cfg), None, dashboard_url, share=share)
            outcome = None
        except JobCancelled:
            outcome = "cancelled"
        except FarmError as exc:
            outcome = str(exc)
        except Exception as exc:  # a bug in one job must not stop the others: it is that job's failure
            log.exception("job %s failed", entry.job_id)
            outcome = f"{type(exc).__name__}: {exc}"
        self._ended.put((entry.job_id, outcome))
        self._wake.set()

    def _reap(self, qd: QueueDir) -> None:
        while True:
            try:
                job_id, outcome = self._ended.get_nowait()
            except threadq.Empty:
                return
            self._running.pop(job_id).thread.join()
            if outcome is None:
                qd.remove(job_id)
                self._finished.append(job_id)
            elif outcome != "cancelled":  # paused or cancelled: the entry says which (or is gone)
                qd.write_outcome(job_id, Outcome("failed", outcome))
                self._failed.append((job_id, outcome))
