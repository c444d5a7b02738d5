"""The ledger's records (failures, leases), its retry policy and the decisions it gives, and the
index its rules read the failures through (pure)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass(frozen=True, slots=True)
class FailureRecord:
    shard: int
    node: str
    worker: str
    error: str
    attempt: int
    at: float  # wall clock, for people; no rule reads it
    reported: bool = True  # the worker reported the error (False: worker lost, lease expired)
    blamed: bool = True  # counts toward blocking its node (False: a burst of expiries, a storage stall)


@dataclass(slots=True)
class FailureIndex:
    """Derived from the records, so that each event costs O(1), not O(failures)."""

    failed_on: dict[int, set[str]] = field(default_factory=dict)  # shard -> nodes it failed on
    node_failures: Counter = field(default_factory=Counter)
    same: dict[tuple[int, str], list[str]] = field(default_factory=dict)  # nodes per (shard, error)

    @classmethod
    def of(cls, records: list[FailureRecord]) -> FailureIndex:
        index = cls()
        for f in records:
            index.add(f)
        return index

    def add(self, f: FailureRecord) -> None:
        if not f.blamed:
            return
        self.failed_on.setdefault(f.shard, set()).add(f.node)
        if not f.reported:
            self.node_failures[f.node] += 1
            return
        nodes = self.same.setdefault((f.shard, f.error), [])
        nodes.append(f.node)
        if len(nodes) == 1:
            self.node_failures[f.node] += 1
        elif len(nodes) == 2:  # the shard failed the same way elsewhere: the error is the shard's
            self.node_failures[nodes[0]] -= 1


@dataclass(slots=True)
class Lease:
    worker: str
    node: str
    attempt: int
    since: float
    renewed: float
    graced: bool = False  # expired once in a burst and was given another lease timeout


@dataclass(frozen=True, slots=True)
class Retry:
    """Run the shard again (on a node where it has not failed, where there is one)."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Fail the job: the shard cannot succeed. ``why`` completes "shard [a, b) failed: ..."."""

    why: str


Decision = Retry | GiveUp


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a shard, a node and the workers may fail before the job gives up; each rule
    answers with a decision that the ledger carries out."""

    max_attempts: int = 3
    node_failure_limit: int = 3  # shards of this job failed on one node before it gets no more
    lease_timeout_s: float = 600.0  # no progress for this long: the worker is hung
    max_losses: int = 10  # lost workers per shard before it is treated as the culprit
    start_failures: int = 3  # workers that failed to start, with none ready, before the job gives up

    def decide(self, *, attempts: int, retryable: bool, same_error_nodes: Sequence[str], every_attempt_same: Callable[[], bool]) -> Decision:
        """After a failed attempt of a shard. The same error on two nodes, or on every attempt,
        is the input's (a damaged frame), and no node will do better.

        Args:
            attempts: the shard's attempts so far in this run, the failed one included.
            retryable: the worker's word on the error (False: no retry can fix it).
            same_error_nodes: the node of each attempt that failed with exactly this error.
            every_attempt_same: whether this run's attempts all failed with one reported error
                (asked only when it matters).
        """
        if not retryable:
            return GiveUp("the error cannot be fixed by a retry")
        same = same_error_nodes
        if len(set(same)) >= 2 or (len(same) >= 2 and attempts >= self.max_attempts and every_attempt_same()):
            return GiveUp(f"all {len(same)} attempts failed the same way")
        if attempts >= self.max_attempts:
            return GiveUp(f"all {self.max_attempts} attempts failed")
        return Retry()

    def after_loss(self, losses: int) -> Decision:
        """After a worker was lost while running a shard (``losses`` times so far)."""
        return GiveUp(f"{losses} workers were lost while running it") if losses >= self.max_losses else Retry()

    def blocks(self, node_failures: int, others_live: bool) -> bool:
        """Whether a node that has failed ``node_failures`` shards gets no more. The last node with
        workers is never blocked: its shards' own retries decide."""
        return node_failures >= self.node_failure_limit and others_live

    def stops_starting(self, failures: int, starting: int) -> bool:
        """Whether to give up after ``failures`` workers failed to start (with none ready and
        ``starting`` still starting): the error is the cluster's or the setup's."""
        return failures >= max(self.start_failures, 2 * starting)
