"""The job's state machine: events in, instructions out. No Ray, no files, no clocks of its own.

The coordinator actor feeds it events (a worker joined, a shard finished or failed, a worker was
lost, time passed), persists what it returns by :meth:`Ledger.to_json`, and hands the returned
instructions to the driver. Every scheduling rule (leases, retries on another node, node
blocklists, giving up) lives here and is tested with plain lists of events.

Failures name their cause: a shard that fails with the same error on two nodes, or on every
attempt, is the input's fault (a damaged frame), so the job fails at once with that error. Only
failures that differ by node count toward blocking a node (a failure its shard repeats elsewhere
does not), and the last node with workers is never blocked: its shards' own retries decide."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Literal, Union

from farm.plan import Shard

State = Literal["running", "muxing", "done", "failed", "cancelled"]

# ---- events (past tense) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerJoined:
    """A worker is ready. ``shard``/``attempt``: it is already running that shard (a driver
    re-announcing its workers to a restarted coordinator), so its lease is rebuilt."""

    worker: str
    node: str
    now: float
    shard: int | None = None
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class WorkerLost:
    worker: str
    now: float
    reason: str = "worker died"


@dataclass(frozen=True, slots=True)
class ShardDone:
    shard: int
    worker: str
    now: float
    segment: str  # file name under segments/
    frames: int
    bytes: int
    sha256: str
    seconds: float
    faces: int = 0


@dataclass(frozen=True, slots=True)
class ShardFailed:
    shard: int
    worker: str
    now: float
    error: str
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The worker made progress on its shard (or, idle, is alive)."""

    worker: str
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class MuxDone:
    now: float


@dataclass(frozen=True, slots=True)
class MuxFailed:
    now: float
    error: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    now: float


Event = Union[WorkerJoined, WorkerLost, ShardDone, ShardFailed, Heartbeat, Tick, MuxDone, MuxFailed, Cancelled]

# ---- instructions (imperative) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assign:
    shard: int
    worker: str
    attempt: int


@dataclass(frozen=True, slots=True)
class StopWorker:
    worker: str
    reason: str


@dataclass(frozen=True, slots=True)
class Mux:
    pass


@dataclass(frozen=True, slots=True)
class Abort:
    reason: str


@dataclass(frozen=True, slots=True)
class Finish:
    pass


@dataclass(frozen=True, slots=True)
class Resync:
    """The coordinator does not know this driver's run (Ray restarted it, losing its memory):
    announce the run and every ready worker, with the shard each is running, then send again."""


Instruction = Union[Assign, StopWorker, Mux, Abort, Finish, Resync]

# ---- state ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoneRecord:
    segment: str
    frames: int
    bytes: int
    sha256: str
    node: str
    worker: str
    seconds: float
    attempt: int
    faces: int = 0


@dataclass(frozen=True, slots=True)
class FailureRecord:
    shard: int
    node: str
    worker: str
    error: str
    attempt: int
    at: float
    reported: bool = True  # the worker reported the error (False: worker lost, lease expired)


@dataclass(slots=True)
class Lease:
    worker: str
    node: str
    attempt: int
    since: float
    renewed: float


@dataclass(frozen=True, slots=True)
class Policy:
    max_attempts: int = 3
    node_failure_limit: int = 3  # shards of this job failed on one node before it gets no more
    lease_timeout_s: float = 600.0  # no progress for this long: the worker is hung
    max_losses: int = 10  # lost workers per shard before it is treated as the culprit


@dataclass
class Ledger:
    """Which shards are done, leased or pending, and what to do next."""

    shards: list[Shard]
    policy: Policy = field(default_factory=Policy)
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
    # Derived indexes, so that each event costs O(log n) at 10,000 shards, not O(n).
    _queue: list[int] | None = field(default=None, repr=False, compare=False)  # heap; may hold stale entries
    _failed_on: dict[int, set[str]] | None = field(default=None, repr=False, compare=False)
    _node_failures: Counter | None = field(default=None, repr=False, compare=False)
    _same: dict[tuple[int, str], list[str]] | None = field(default=None, repr=False, compare=False)  # nodes per (shard, error)

    # -- queries ----------------------------------------------------------------------------------

    @property
    def frames_total(self) -> int:
        return self.shards[-1].stop if self.shards else 0

    @property
    def frames_done(self) -> int:
        return sum(r.frames for r in self.done.values())

    def pending(self) -> list[int]:
        return [s.index for s in self.shards if s.index not in self.done and s.index not in self.leases]

    def failed_nodes(self, shard: int) -> set[str]:
        self._build_failure_index()
        assert self._failed_on is not None
        return self._failed_on.get(shard, set())

    def node_failure_counts(self) -> Counter:
        self._build_failure_index()
        assert self._node_failures is not None
        return self._node_failures

    def _build_failure_index(self) -> None:
        if self._failed_on is None or self._node_failures is None or self._same is None:
            self._failed_on, self._node_failures, self._same = {}, Counter(), {}
            for f in self.failures:
                self._index_failure(f)

    def _index_failure(self, f: FailureRecord) -> None:
        """Count ``f`` toward its node unless its shard failed the same way before (and then the
        earlier failure stops counting too: the error is the shard's, not the node's)."""
        assert self._failed_on is not None and self._node_failures is not None and self._same is not None
        self._failed_on.setdefault(f.shard, set()).add(f.node)
        if not f.reported:
            self._node_failures[f.node] += 1
            return
        nodes = self._same.setdefault((f.shard, f.error), [])
        nodes.append(f.node)
        if len(nodes) == 1:
            self._node_failures[f.node] += 1
        elif len(nodes) == 2:
            self._node_failures[nodes[0]] -= 1

    def same_failures(self, shard: int, error: str) -> list[str]:
        """The nodes (one per attempt) on which ``shard`` failed with exactly ``error``."""
        self._build_failure_index()
        assert self._same is not None
        return self._same.get((shard, error), [])

    def _add_failure(self, record: FailureRecord) -> None:
        self._build_failure_index()
        self.failures.append(record)
        self._index_failure(record)

    def _requeue(self, shard: int) -> None:
        if self._queue is not None:
            heapq.heappush(self._queue, shard)

    # -- the transition function -------------------------------------------------------------------

    def handle(self, *events: Event) -> list[Instruction]:
        """Apply ``events`` in order; return what the driver must do now."""
        out: list[Instruction] = []
        for event in events:
            self.now = max(self.now, event.now)
            out.extend(self._apply(event))
        if self.state == "running":
            out.extend(self._schedule())
        return out

    def _apply(self, event: Event) -> list[Instruction]:
        if isinstance(event, WorkerJoined):
            self.workers[event.worker] = event.node
            if event.node in self.blocked_nodes:
                return [StopWorker(event.worker, f"node {event.node} is blocked")]
            if event.shard is not None and event.shard not in self.done and event.shard not in self.leases:
                self.attempts[event.shard] = max(self.attempts[event.shard], event.attempt)
                self.leases[event.shard] = Lease(event.worker, event.node, event.attempt, since=event.now, renewed=event.now)
                self.busy[event.worker] = event.shard
            return []
        if isinstance(event, WorkerLost):
            return self._worker_lost(event)
        if isinstance(event, ShardDone):
            return self._shard_done(event)
        if isinstance(event, ShardFailed):
            return self._shard_failed(event)
        if isinstance(event, Heartbeat):
            shard = self.busy.get(event.worker)
            if shard is not None and shard in self.leases:
                self.leases[shard].renewed = event.now
            return []
        if isinstance(event, Tick):
            return self._expire_leases(event.now)
        if isinstance(event, MuxDone):
            self.state = "done"
            return [Finish()]
        if isinstance(event, MuxFailed):
            return self._abort(f"the final mux failed: {event.error}")
        if isinstance(event, Cancelled):
            self.state = "cancelled"
            self.reason = "cancelled by the user"
            stops: list[Instruction] = [StopWorker(w, "job cancelled") for w in self.workers]
            self.leases.clear()
            self.busy.clear()
            return stops
        raise TypeError(f"not an event: {event!r}")

    def _release(self, worker: str) -> int | None:
        shard = self.busy.pop(worker, None)
        if shard is not None:
            lease = self.leases.get(shard)
            if lease is not None and lease.worker == worker:
                del self.leases[shard]
        return shard

    def _worker_lost(self, event: WorkerLost) -> list[Instruction]:
        node = self.workers.pop(event.worker, None)
        shard = self._release(event.worker)
        if shard is None or shard in self.done or self.state != "running":
            return []
        self.losses[shard] += 1
        self._add_failure(
            FailureRecord(shard, node or "?", event.worker, f"worker lost: {event.reason}", self.attempts[shard], event.now, reported=False)
        )
        self._requeue(shard)
        if self.losses[shard] >= self.policy.max_losses:
            return self._abort(self._report(shard, f"{self.losses[shard]} workers were lost while running it"))
        return []

    def _shard_done(self, event: ShardDone) -> list[Instruction]:
        node = self.workers.get(event.worker, "?")
        lease = self.leases.get(event.shard)
        attempt = lease.attempt if lease is not None and lease.worker == event.worker else self.attempts[event.shard]
        self._release(event.worker)
        if event.shard not in self.done:  # a late duplicate (after a lease expired) changes nothing
            self.done[event.shard] = DoneRecord(
                event.segment, event.frames, event.bytes, event.sha256, node, event.worker, event.seconds, attempt, event.faces
            )
        return []

    def _shard_failed(self, event: ShardFailed, reported: bool = True) -> list[Instruction]:
        node = self.workers.get(event.worker, "?")
        self._release(event.worker)
        if event.shard in self.done or self.state != "running":
            return []
        self._add_failure(FailureRecord(event.shard, node, event.worker, event.error, self.attempts[event.shard], event.now, reported))
        self._requeue(event.shard)
        out: list[Instruction] = []
        others_live = any(n != node and n not in self.blocked_nodes for n in self.workers.values())
        if self.node_failure_counts()[node] >= self.policy.node_failure_limit and node not in self.blocked_nodes and others_live:
            self.blocked_nodes.add(node)
            out += [StopWorker(w, f"node {node} failed {self.policy.node_failure_limit} shards") for w, n in self.workers.items() if n == node]
        same = self.same_failures(event.shard, event.error) if reported else []
        if not event.retryable:
            return out + self._abort(self._report(event.shard, "the error cannot be fixed by a retry"))
        if len(set(same)) >= 2 or (len(same) >= 2 and self.attempts[event.shard] >= self.policy.max_attempts and self._all_same(event.shard)):
            return out + self._abort(self._report(event.shard, f"all {len(same)} attempts failed the same way"))
        if self.attempts[event.shard] >= self.policy.max_attempts:
            return out + self._abort(self._report(event.shard, f"all {self.policy.max_attempts} attempts failed"))
        return out

    def _all_same(self, shard: int) -> bool:
        """This run's attempts of ``shard`` all failed with one reported error."""
        recent = [f for f in self.failures if f.shard == shard][-self.attempts[shard] :]
        return all(f.reported for f in recent) and len({f.error for f in recent}) == 1

    def _expire_leases(self, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        for shard, lease in list(self.leases.items()):
            if now - lease.renewed > self.policy.lease_timeout_s:
                idle = now - lease.renewed
                out.append(StopWorker(lease.worker, f"no progress on shard {shard} for {idle:.0f} s"))
                out += self._shard_failed(
                    ShardFailed(shard, lease.worker, now, f"lease expired: no progress for {idle:.0f} s", retryable=True), reported=False
                )
                self.workers.pop(lease.worker, None)
        return out

    def _report(self, shard: int, why: str) -> str:
        s = self.shards[shard]
        tries = [f for f in self.failures if f.shard == shard]
        nodes = ", ".join(sorted({f.node for f in tries})) or "none"
        last = tries[-1].error if tries else "none"
        return f"{s} failed: {why}; nodes tried: {nodes}; last error: {last}"

    def _abort(self, reason: str) -> list[Instruction]:
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
                return self._abort(f"every node with workers is blocked after repeated failures: {', '.join(sorted(self.blocked_nodes))}{last}")
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
        """A new run: attempts of a failed or cancelled job start over (history stays), and a job
        whose mux did not finish, or whose output is gone, muxes again."""
        if self.state in ("failed", "cancelled"):
            self.state = "running"
            self.reason = None
            self.attempts.clear()
            self.losses.clear()
        if self.state in ("muxing", "done"):
            self.state = "running"  # the output is missing or stale: the mux runs again

    def to_json(self) -> dict:
        return {
            "state": self.state,
            "reason": self.reason,
            "shards": [[s.start, s.stop] for s in self.shards],
            "done": {str(k): asdict(v) for k, v in sorted(self.done.items())},
            "attempts": {str(k): v for k, v in sorted(self.attempts.items())},
            "losses": {str(k): v for k, v in sorted(self.losses.items())},
            "failures": [asdict(f) for f in self.failures],
        }

    @classmethod
    def from_json(cls, data: dict, policy: Policy) -> Ledger:
        shards = [Shard(i, a, b) for i, (a, b) in enumerate(data["shards"])]
        return cls(
            shards=shards,
            policy=policy,
            state=data["state"],
            reason=data.get("reason"),
            done={int(k): DoneRecord(**v) for k, v in data["done"].items()},
            attempts=Counter({int(k): v for k, v in data.get("attempts", {}).items()}),
            losses=Counter({int(k): v for k, v in data.get("losses", {}).items()}),
            failures=[FailureRecord(**f) for f in data.get("failures", [])],
        )
