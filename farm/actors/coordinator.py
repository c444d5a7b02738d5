"""The coordinator: one per job, the only writer of the job's ledger; a plain class the driver runs as
a named, detached Ray actor. It feeds events to :class:`~farm.ledger.Ledger`, persists the ledger,
returns the instructions, and on (re)start rebuilds its state from storage."""

from __future__ import annotations

import logging
import time
from typing import Any

from farm.actors.metrics import JobMetrics
from farm.events import Assign, Event, Instruction, Resync, RunStarted, SegmentFound, SegmentMissing, Superseded, WorkerJoined, WorkerLost
from farm.ledger import DoneRecord, Ledger, summarize
from farm.records import RetryPolicy
from farm.storage.jobdir import JobDir

log = logging.getLogger(__name__)

#: Seconds between ledger snapshots while shards only complete; their receipts are already durable.
FLUSH_INTERVAL_S = 1.0
#: Seconds between writes of live figures (fps, workers) for `farm status`.
LIVE_INTERVAL_S = 2.0


class Coordinator:
    """Owns one job's ledger."""

    def __init__(self, jobs_root: str, job_id: str, policy: dict[str, Any] | None = None) -> None:
        self.job = JobDir(jobs_root, job_id)
        self.job_id = job_id
        self.jobs_root = jobs_root
        self.workers: dict[str, dict[str, Any]] = {}  # live worker stats reported by the driver
        self.driver: dict[str, Any] | None = None
        self.started = time.time()
        self.run: str | None = None  # the driver run whose workers the ledger knows (lost on restart)
        self._last_live = 0.0
        self.metrics = JobMetrics(job_id)
        self._load(RetryPolicy(**(policy or {})))

    def __repr__(self) -> str:  # Ray shows it, once, in the dashboard's actor list
        return f"Coordinator(job {self.job_id} in {self.jobs_root})"

    def _load(self, policy: RetryPolicy, flush: bool = True) -> None:
        """(Re)build all state from the job directory, the source of truth (written back unless
        ``flush`` is False: the caller writes it)."""
        self.spec = self.job.read_spec()
        plan = self.spec.shards()
        self.ledger = self.job.load_ledger(policy, self.spec)
        if [(s.start, s.stop) for s in self.ledger.shards] != [(s.start, s.stop) for s in plan]:
            self.ledger = Ledger(plan, policy)  # a --restart re-planned the job
        self._last_flush = 0.0
        self._dirty = False
        self.ledger.handle(*self._storage_facts(), wall=time.time())
        if flush:
            self.flush(force=True)

    def start_run(self, run: str, now: float, policy: dict[str, Any] | None = None, jobs_root: str | None = None,
                  driver: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Instruction]]:
        """The driver of ``run`` (which holds the job on storage) starts or restarts work: reload
        from storage (through ``jobs_root``, the path that driver uses), clear any old cancel
        request, and tell the ledger (:class:`~farm.ledger.RunStarted`); returns the snapshot and
        the ledger's first instructions. An earlier run's calls get ``[Superseded()]`` from now."""
        if jobs_root is not None and jobs_root != self.jobs_root:
            self.jobs_root, self.job = jobs_root, JobDir(jobs_root, self.job_id)
        self.run = run
        self.driver = dict(driver) if driver else None
        self.workers.clear()
        self._load(RetryPolicy(**(policy or {})), flush=False)
        self.job.clear_control()
        instructions = self.ledger.handle(RunStarted(now), wall=time.time())
        self.flush(force=True)
        return self.snapshot(), instructions

    # -- events -----------------------------------------------------------------------------------

    def handle(self, events: list[Event], run: str | None = None) -> list[Instruction]:
        """Apply ``events`` of the driver run ``run``. A run this coordinator does not know (it
        was restarted since the run began) gets ``[Resync()]``, and nothing is applied."""
        if run is not None and run != self.run:
            if self.run is not None:
                return [Superseded()]
            log.warning("coordinator of job %s does not know run %s (restarted?); asking the driver to resync", self.job_id, run)
            return [Resync()]
        before = (self.ledger.state, len(self.ledger.failures), len(self.ledger.done))
        instructions = self.ledger.handle(*events, wall=time.time())
        after = (self.ledger.state, len(self.ledger.failures), len(self.ledger.done))
        self._count(instructions, after[2] - before[2], after[1] - before[1])
        if after != before:
            self._dirty = True
            # State changes and failures are written at once; completions are also in receipts.
            self.flush(force=after[:2] != before[:2])
        for event in events:
            if isinstance(event, WorkerLost):
                self.workers.pop(event.worker, None)
            elif isinstance(event, WorkerJoined):
                self.workers.setdefault(event.worker, {"worker": event.worker, "node": event.node})
        return instructions

    def resync(self, run: str, events: list[Event]) -> list[Instruction]:
        """The driver of ``run`` re-announces its workers (WorkerJoined with the shard each runs)
        to this restarted coordinator; the ledger was reloaded from storage at restart."""
        if self.run is not None and self.run != run:
            return [Superseded()]
        self.run = run
        return self.handle(events, run)

    def _count(self, instructions: list[Instruction], newly_done: int, newly_failed: int) -> None:
        """Metrics from what the ledger decided: failed attempts include lost workers and expired
        leases, and exclude late reports the ledger ignored."""
        m = self.metrics
        if newly_done:
            m.done.inc(newly_done)
            m.progress.set(self.ledger.frames_done)
        if newly_failed:
            m.failed.inc(newly_failed)
        retried = sum(isinstance(i, Assign) and i.attempt > 1 for i in instructions)
        if retried:
            m.retried.inc(retried)
        m.workers.set(len(self.ledger.workers))

    def report(self, stats: list[dict[str, Any]], live: dict[str, Any] | None = None) -> None:
        """Live figures from the driver: per worker, and the job's fps/ETA. They are written to
        ``live.json`` (every few seconds) so `farm status` shows them from any machine."""
        known = {s["worker"] for s in stats}
        for worker in list(self.workers):
            if worker not in known:
                del self.workers[worker]
        for s in stats:
            self.workers.setdefault(s["worker"], {}).update(s)
        now = time.time()
        if now - self._last_live >= LIVE_INTERVAL_S:
            self._last_live = now
            self.job.write_live({"updated": now, "workers": list(self.workers.values()), "driver": self.driver, **(live or {})})

    def flush(self, force: bool = False) -> None:
        now = time.time()
        if force or (self._dirty and now - self._last_flush >= FLUSH_INTERVAL_S):
            self.job.write_ledger(self.ledger.to_json())
            self._last_flush = now
            self._dirty = False

    # -- queries ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        self.flush()
        summary = summarize(self.job_id, self.ledger)
        summary["workers"] = sorted(self.workers.values(), key=lambda w: w.get("worker", ""))
        summary["driver"] = dict(self.driver) if self.driver else None
        summary["blocked_nodes"] = sorted(self.ledger.blocked_nodes)
        return summary

    def done_records(self) -> dict[int, DoneRecord]:
        return dict(self.ledger.done)

    def ping(self) -> tuple[str, str]:
        return self.job_id, self.jobs_root

    # -- recovery ---------------------------------------------------------------------------------

    def _storage_facts(self) -> list[Event]:
        """What storage holds, as events: done segments that are gone or damaged, and receipts
        newer than the ledger snapshot. An object store's listing cache is dropped first."""
        self.job.storage.invalidate_cache("segments")
        listing = self.job.storage.list("segments")
        present = set(listing)
        facts: list[Event] = []
        missing = set()
        for shard, record in self.ledger.done.items():
            if record.segment not in present or not self.job.segment_ok(record.segment, record.bytes):
                log.warning("segment %s of shard %d is missing or damaged; the shard will be redone", record.segment, shard)
                facts.append(SegmentMissing(shard, record.segment))
                missing.add(shard)
        for receipt in self.job.receipts(listing):
            if receipt.shard not in self.ledger.done or receipt.shard in missing:
                facts.append(SegmentFound(receipt))
        return facts
