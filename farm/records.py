"""The ledger's records (failures, leases) and its policy, and the index its rules read the
failures through (pure)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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
class Policy:
    max_attempts: int = 3
    node_failure_limit: int = 3  # shards of this job failed on one node before it gets no more
    lease_timeout_s: float = 600.0  # no progress for this long: the worker is hung
    max_losses: int = 10  # lost workers per shard before it is treated as the culprit
    start_failures: int = 3  # workers that failed to start, with none ready, before the job gives up
