"""The job's state machine: events in, instructions out; no Ray, no files, no clocks of its own.
Every scheduling rule (leases, retries on another node, node blocklists, giving up) lives here.
Over 300 lines: one set of rules, read together (recovery and records have modules of their own)."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

from farm import recovery

from farm.events import (
    STORAGE_EVENTS,
    Abort,
    Assign,
    Cancelled,
    Event,
    Finish,
    Heartbeat,
    Instruction,
    Mux,
    MuxDone,
    MuxFailed,
    Resync,
    RunStarted,
    SegmentFound,
    SegmentMissing,
    ShardDone,
    ShardFailed,
    ShardReturned,
    StopWorker,
    Superseded,
    Tick,
    WorkerJoined,
    WorkerLost,
    WorkerStartFailed,
)
from farm.plan import Shard
from farm.receipt import Receipt
from farm.records import Decision, FailureIndex, FailureRecord, GiveUp, Lease, RetryPolicy

__all__ = ["DoneRecord", "Ledger", "State", "summarize"]

State = Literal["running", "muxing", "done", "failed", "cancelled"]

# ---- state ----------------------------------------------------------------------------------------


#: A done shard's record is its receipt (the ledger keeps the short form, see :meth:`Ledger.record`).
DoneRecord = Receipt


@dataclass
class Ledger:
    """Which shards are done, leased or pending, and what to do next."""

    shards: list[Shard]
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    state: State = "running"
    done: dict[int, DoneRecord] = field(default_factory=dict)
    attempts: Counter = field(default_factory=Counter)
    losses: Counter = field(default_factory=Counter)
    failures: list[FailureRecord] = field(default_factory=list)
    reason: str | None = None
    now: float = 0.0  # the latest time any event carried
    # Transient: rebuilt by the running driver, never persisted.
    leases: dict[int, Lease] = field(default_factory=dict)
    workers: dict[str, str] = field(default_factory=dict)  # worker -> node
    busy: dict[str, int] = field(default_factory=dict)  # worker -> shard
    blocked_nodes: set[str] = field(default_factory=set)
    start_failures: list[str] = field(default_factory=list)  # this run's workers that could not start
    wall: float = 0.0  # the wall clock of the latest batch, for failure records only
    # Derived indexes, so that each event costs O(log n) at 10,000 shards, not O(n).
    _queue: list[int] | None = field(default=None, repr=False, compare=False)  # heap; may hold stale entries
    _failures: FailureIndex | None = field(default=None, repr=False, compare=False)

    # -- queries ----------------------------------------------------------------------------------

    @property
    def frames_total(self) -> int:
        return self.shards[-1].stop if self.shards else 0

    @property
    def frames_done(self) -> int:
        return sum(r.frames for r in self.done.values())

    def pending(self) -> list[int]:
        return [s.index for s in self.shards if s.index not in self.done and s.index not in self.leases]

    def _index(self) -> FailureIndex:
        if self._failures is None:
            self._failures = FailureIndex.of(self.failures)
        return self._failures

    def failed_nodes(self, shard: int) -> set[str]:
        return self._index().failed_on.get(shard, set())

    def node_failure_counts(self) -> Counter:
        return self._index().node_failures

    def same_failures(self, shard: int, error: str) -> list[str]:
        """The nodes (one per attempt) on which ``shard`` failed with exactly ``error``."""
        return self._index().same.get((shard, error), [])

    def add_failure(self, record: FailureRecord) -> None:
        """Keep ``record`` in the history that the rules read."""
        self._index().add(record)
        self.failures.append(record)

    def forget_run(self) -> None:
        """Forget what the last run knew (workers, leases, blocked nodes, start failures, the
        queue); what storage holds stays."""
        self.leases.clear()
        self.workers.clear()
        self.busy.clear()
        self.blocked_nodes.clear()
        self.start_failures.clear()
        self._queue = None

    def requeue(self, shard: int) -> None:
        """Make ``shard`` pending again (it is no longer done or leased)."""
        if self._queue is not None:
            heapq.heappush(self._queue, shard)

    # -- the transition function -------------------------------------------------------------------

    def handle(self, *events: Event, wall: float | None = None) -> list[Instruction]:
        """Apply ``events`` in order; return what the driver must do now. ``wall``: the wall
        clock, stamped on failure records (never used to decide anything)."""
        out: list[Instruction] = []
        schedule = False
        for event in events:
            self.wall = wall if wall is not None else event.now
            if isinstance(event, RunStarted):
                self.now = event.now  # a new driver: a new monotonic clock
            else:
                self.now = max(self.now, event.now)
            out.extend(self._apply(event))
            schedule = schedule or not isinstance(event, STORAGE_EVENTS)
        if self.state == "running" and schedule:
            out.extend(self._schedule())
        return out

    def _apply(self, event: Event) -> list[Instruction]:
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"not an event: {event!r}")
        return handler(self, event)

    def _heartbeat(self, event: Heartbeat) -> list[Instruction]:
        shard = self.busy.get(event.worker)
        if shard is not None and shard in self.leases:
            self.leases[shard].renewed, self.leases[shard].graced = event.now, False
        return []

    def _mux_done(self, event: MuxDone) -> list[Instruction]:
        self.state = "done"
        return [Finish()]

    def _cancelled(self, event: Cancelled) -> list[Instruction]:
        self.state, self.reason = "cancelled", "cancelled by the user"
        stops: list[Instruction] = [StopWorker(w, "job cancelled") for w in self.workers]
        self.leases.clear()
        self.busy.clear()
        return stops

    def _worker_joined(self, event: WorkerJoined) -> list[Instruction]:
        self.workers[event.worker] = event.node
        if event.node in self.blocked_nodes:
            return [StopWorker(event.worker, f"node {event.node} is blocked")]
        if event.shard is not None and event.shard not in self.done and event.shard not in self.leases and self.state == "running":
            self.attempts[event.shard] = max(self.attempts[event.shard], event.attempt)
            self.leases[event.shard] = Lease(event.worker, event.node, event.attempt, since=event.now, renewed=event.now)
            self.busy[event.worker] = event.shard
        return []

    def record(self, receipt: Receipt, **run: str | int) -> Receipt:
        """The done record of ``receipt`` (its short form, as ledger.json keeps it), with the run's
        ``worker``, ``node`` and ``attempt`` where given."""
        s = self.shards[receipt.shard]
        return Receipt.from_record(receipt.shard, {**receipt.record_json(), **run}, s.start, s.stop)

    def release(self, worker: str) -> int | None:
        """Free ``worker``: its lease ends; returns the shard it held, if any."""
        shard = self.busy.pop(worker, None)
        if shard is not None:
            lease = self.leases.get(shard)
            if lease is not None and lease.worker == worker:
                del self.leases[shard]
        return shard

    def _worker_lost(self, event: WorkerLost) -> list[Instruction]:
        node = self.workers.pop(event.worker, None)
        shard = self.release(event.worker)
        if shard is None or shard in self.done or self.state != "running":
            return []
        self.losses[shard] += 1
        self.add_failure(
            FailureRecord(shard, node or "?", event.worker, f"worker lost: {event.reason}", self.attempts[shard], self.wall, reported=False)
        )
        self.requeue(shard)
        return self._carry_out(shard, self.policy.after_loss(self.losses[shard]))

    def _shard_done(self, event: ShardDone) -> list[Instruction]:
        node = self.workers.get(event.worker, "?")
        lease = self.leases.get(event.shard)
        attempt = lease.attempt if lease is not None and lease.worker == event.worker else self.attempts[event.shard]
        self.release(event.worker)
        if event.shard not in self.done and 0 <= event.shard < len(self.shards):  # a late duplicate changes nothing
            self.done[event.shard] = self.record(event.receipt, worker=event.worker, node=node, attempt=attempt)
        return []

    def fail_shard(self, event: ShardFailed, reported: bool = True) -> list[Instruction]:
        node = self.workers.get(event.worker, "?")
        self.release(event.worker)
        if event.shard in self.done or self.state != "running":
            return []
        self.add_failure(FailureRecord(event.shard, node, event.worker, event.error, self.attempts[event.shard], self.wall, reported))
        self.requeue(event.shard)
        out: list[Instruction] = []
        others_live = any(n != node and n not in self.blocked_nodes for n in self.workers.values())
        if node not in self.blocked_nodes and self.policy.blocks(self.node_failure_counts()[node], others_live):
            self.blocked_nodes.add(node)
            out += [StopWorker(w, f"node {node} failed {self.policy.node_failure_limit} shards") for w, n in self.workers.items() if n == node]
        decision = self.policy.decide(
            attempts=self.attempts[event.shard],
            retryable=event.retryable,
            same_error_nodes=self.same_failures(event.shard, event.error) if reported else [],
            every_attempt_same=lambda: self._all_same(event.shard),
        )
        return out + self._carry_out(event.shard, decision)

    def _shard_returned(self, event: ShardReturned) -> list[Instruction]:
        """A leaving worker gave its shard back: not a failure (no attempt counted, no node
        blamed); the shard is pending again and the worker gets no more work."""
        self.workers.pop(event.worker, None)
        lease = self.leases.get(event.shard)
        self.release(event.worker)
        if event.shard not in self.done and self.state == "running" and 0 <= event.shard < len(self.shards):
            if lease is not None and lease.worker == event.worker and self.attempts[event.shard] > 0:
                self.attempts[event.shard] -= 1
            self.requeue(event.shard)
        return [StopWorker(event.worker, f"it gave shard {event.shard} back ({event.frames_kept} frames kept): its node is leaving")]

    def _carry_out(self, shard: int, decision: Decision) -> list[Instruction]:
        """A failed shard is queued again already; giving up fails the job with its report."""
        return self.abort(self._report(shard, decision.why)) if isinstance(decision, GiveUp) else []

    def _all_same(self, shard: int) -> bool:
        """This run's attempts of ``shard`` all failed with one reported error."""
        recent = [f for f in self.failures if f.shard == shard][-self.attempts[shard] :]
        return all(f.reported for f in recent) and len({f.error for f in recent}) == 1

    def _report(self, shard: int, why: str) -> str:
        s = self.shards[shard]
        tries = [f for f in self.failures if f.shard == shard]
        nodes = ", ".join(sorted({f.node for f in tries})) or "none"
        last = tries[-1].error if tries else "none"
        return f"{s} failed: {why}; nodes tried: {nodes}; last error: {last}"

    def abort(self, reason: str) -> list[Instruction]:
        """Fail the job for ``reason`` (unless it has ended already)."""
        if self.state in ("failed", "cancelled", "done"):
            return []
        self.state = "failed"
        self.reason = reason
        self.leases.clear()
        self.busy.clear()
        return [Abort(reason)]

    def _schedule(self) -> list[Instruction]:
        if len(self.done) == len(self.shards):
            self.state = "muxing"
            return [Mux()]
        out: list[Instruction] = []
        idle = [w for w in self.workers if w not in self.busy and self.workers[w] not in self.blocked_nodes]
        if not idle:
            if self.workers and not any(n not in self.blocked_nodes for n in self.workers.values()) and self.pending():
                last = f"; last error: {self.failures[-1].error}" if self.failures else ""
                return self.abort(f"every node with workers is blocked after repeated failures: {', '.join(sorted(self.blocked_nodes))}{last}")
            return out
        live_nodes = {n for n in self.workers.values() if n not in self.blocked_nodes}
        for worker in idle:
            choice = self._take(self.workers[worker], live_nodes)
            if choice is None:
                continue
            self.attempts[choice] += 1
            self.leases[choice] = Lease(worker, self.workers[worker], self.attempts[choice], since=self.now, renewed=self.now)
            self.busy[worker] = choice
            out.append(Assign(choice, worker, self.attempts[choice]))
        return out

    def _take(self, node: str, live_nodes: set[str]) -> int | None:
        """The lowest pending shard for a worker on ``node``: one that has not failed there, or,
        if only such shards are left, one that failed on every live node (nobody else can)."""
        if self._queue is None:
            self._queue = self.pending()
            heapq.heapify(self._queue)
        skipped: list[int] = []
        choice = None
        seen: set[int] = set()
        while self._queue:
            shard = heapq.heappop(self._queue)
            if shard in self.done or shard in self.leases or shard in seen:
                continue  # stale entry
            seen.add(shard)
            failed = self.failed_nodes(shard)
            if node not in failed or live_nodes <= failed:
                choice = shard
                break
            skipped.append(shard)
        for shard in skipped:
            heapq.heappush(self._queue, shard)
        return choice

    # -- persistence ------------------------------------------------------------------------------

    def resume(self) -> None:
        """Shorthand for ``handle(RunStarted(now))``: the one way a run starts."""
        self.handle(RunStarted(self.now))

    def to_json(self) -> dict:
        return {
            "state": self.state,
            "reason": self.reason,
            "shards": [[s.start, s.stop] for s in self.shards],
            "done": {str(k): v.record_json() for k, v in sorted(self.done.items())},
            "attempts": {str(k): v for k, v in sorted(self.attempts.items())},
            "losses": {str(k): v for k, v in sorted(self.losses.items())},
            "failures": [asdict(f) for f in self.failures],
        }

    @classmethod
    def from_json(cls, data: dict, policy: RetryPolicy) -> Ledger:
        shards = [Shard(i, a, b) for i, (a, b) in enumerate(data["shards"])]
        return cls(
            shards=shards,
            policy=policy,
            state=data["state"],
            reason=data.get("reason"),
            done={int(k): Receipt.from_record(int(k), v, shards[int(k)].start, shards[int(k)].stop) for k, v in data["done"].items() if int(k) < len(shards)},
            attempts=Counter({int(k): v for k, v in data.get("attempts", {}).items()}),
            losses=Counter({int(k): v for k, v in data.get("losses", {}).items()}),
            failures=[FailureRecord(**f) for f in data.get("failures", [])],
        )


def summarize(job_id: str, ledger: Ledger) -> dict[str, Any]:
    """The status fields ``farm status --json`` promises, from a ledger alone."""
    return {
        "job_id": job_id,
        "state": ledger.state,
        "reason": ledger.reason,
        "shards_total": len(ledger.shards),
        "shards_done": len(ledger.done),
        "frames_total": ledger.frames_total,
        "frames_done": ledger.frames_done,
        "retries": sum(max(0, a - 1) for a in ledger.attempts.values()),
        "failures": [{k: getattr(f, k) for k in ("shard", "node", "worker", "error", "attempt", "at")} for f in ledger.failures[-20:]],
        "faces": sum(r.faces for r in ledger.done.values()),
        "bytes": sum(r.bytes for r in ledger.done.values()),
    }


_HANDLERS: dict[type, Callable[[Ledger, Any], list[Instruction]]] = {
    RunStarted: recovery.run_started, SegmentFound: recovery.segment_found, SegmentMissing: recovery.segment_missing,
    WorkerJoined: Ledger._worker_joined, WorkerStartFailed: recovery.start_failed, WorkerLost: Ledger._worker_lost,
    ShardDone: Ledger._shard_done, ShardFailed: Ledger.fail_shard, ShardReturned: Ledger._shard_returned, Heartbeat: Ledger._heartbeat, Tick: recovery.expire_leases,
    MuxDone: Ledger._mux_done, MuxFailed: lambda lg, e: lg.abort(f"the final mux failed: {e.error}"), Cancelled: Ledger._cancelled,
}
