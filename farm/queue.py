"""The jobs queue of a jobs root (pure): what each entry holds, and who gets the cluster's workers.
Strict priority between levels (a waiting job gains a level per ``AGING_S`` waited, so none starves),
fair share between submitters within a level, first come first served within a submitter."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from farm.config import JobConfig, check_job_id
from farm.jobfiles import read_version

#: The shape a queue entry is written in. 1: the first.
QUEUE_VERSION = 1
#: A job waiting this long gains one priority level (and another per period after).
AGING_S = 600.0

__all__ = ["AGING_S", "QUEUE_VERSION", "QueueEntry", "QueuedJob", "allocate", "effective_priority", "order"]


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One job waiting for (or holding) workers: the submit it runs, who asked, and its place."""

    job_id: str
    config: JobConfig
    submitter: str
    submitted: float  # wall clock when it was queued; ties and aging read it
    priority: int = 0  # higher runs first
    paused: bool = False  # kept in the queue, given no workers until resumed

    def __post_init__(self) -> None:
        check_job_id(self.job_id)
        if not self.submitter or not self.submitter.strip():
            raise ValueError("a queue entry names its submitter")

    def to_json(self) -> dict[str, Any]:
        return {"spec_version": QUEUE_VERSION, "job_id": self.job_id, "config": self.config.to_json(), "submitter": self.submitter,
                "submitted": self.submitted, "priority": self.priority, "paused": self.paused}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueueEntry:
        read_version(data, QUEUE_VERSION, f"queue entry {data.get('job_id')}")
        return cls(data["job_id"], JobConfig.from_json(data["config"]), data["submitter"], float(data["submitted"]),
                   int(data["priority"]), bool(data["paused"]))


def effective_priority(entry: QueueEntry, now: float) -> int:
    """The entry's priority plus one level per ``AGING_S`` it has waited."""
    return entry.priority + max(0, math.floor((now - entry.submitted) / AGING_S))


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """An entry as the runner sees it now: the workers it holds, and the most it can use."""

    entry: QueueEntry
    held: int = 0  # workers its run has now (0: not running)
    cap: int | None = None  # at most this many (its --workers, or its shards); None: no limit

    def __post_init__(self) -> None:
        if self.held < 0 or (self.cap is not None and self.cap < 1):
            raise ValueError(f"queued job {self.entry.job_id} with {self.held=}, {self.cap=}")


def allocate(jobs: Sequence[QueuedJob], slots: int, now: float) -> dict[str, int]:
    """How many workers each job should have: every job keeps what it holds (a running job is not
    shrunk), and each free slot goes, one at a time, to the job with the highest effective priority,
    then of the submitter holding the fewest workers, then queued first. Paused jobs get none.
    A job absent from the result gets nothing."""
    target = {j.entry.job_id: j.held for j in jobs if j.held}
    by_submitter: dict[str, int] = {}
    for j in jobs:
        by_submitter[j.entry.submitter] = by_submitter.get(j.entry.submitter, 0) + j.held
    free = slots - sum(target.values())
    while free > 0:
        open_jobs = [j for j in jobs if not j.entry.paused and (j.cap is None or target.get(j.entry.job_id, 0) < j.cap)]
        if not open_jobs:
            break
        best = min(open_jobs, key=lambda j: (-effective_priority(j.entry, now), by_submitter[j.entry.submitter], j.entry.submitted, j.entry.job_id))
        target[best.entry.job_id] = target.get(best.entry.job_id, 0) + 1
        by_submitter[best.entry.submitter] += 1
        free -= 1
    return target


def order(jobs: Sequence[QueuedJob], now: float) -> list[QueuedJob]:
    """The queue as ``farm ls`` shows it: running jobs, then waiting ones in the order they would
    get workers, paused ones last."""
    return sorted(jobs, key=lambda j: (j.held == 0, j.entry.paused, -effective_priority(j.entry, now), j.entry.submitted, j.entry.job_id))
