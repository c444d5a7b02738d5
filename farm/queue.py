"""The jobs queue of a jobs root (pure): what each entry holds, and who gets the cluster's workers.
Strict priority between levels (a waiting job gains a level per ``AGING_S`` waited, so none starves),
fair share between submitters within a level, first come first served within a submitter."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from farm.config import JobConfig, check_job_id
from farm.jobfiles import read_version

#: The shape a queue entry is written in. 1: the first.
QUEUE_VERSION = 1
#: A job waiting this long gains one priority level (and another per period after).
AGING_S = 600.0

__all__ = ["AGING_S", "QUEUE_VERSION", "QueueEntry", "QueuedJob", "allocate", "effective_priority", "finish_times", "order", "summary", "tally"]


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One job waiting for (or holding) workers: the submit it runs, who asked, and its place."""

    job_id: str
    config: JobConfig
    submitter: str
    submitted: float  # wall clock when it was queued; ties and aging read it
    priority: int = 0  # higher runs first
    paused: bool = False  # kept in the queue, given no workers until resumed
    frames: int | None = None  # the job's source frames, from the submit's probe (None: an older entry)

    def __post_init__(self) -> None:
        check_job_id(self.job_id)
        if not self.submitter or not self.submitter.strip():
            raise ValueError("a queue entry names its submitter")
        if self.frames is not None and self.frames < 0:
            raise ValueError(f"queue entry {self.job_id} with {self.frames} frames")

    def to_json(self) -> dict[str, Any]:
        data = {"spec_version": QUEUE_VERSION, "job_id": self.job_id, "config": self.config.to_json(), "submitter": self.submitter,
                "submitted": self.submitted, "priority": self.priority, "paused": self.paused}
        return data if self.frames is None else {**data, "frames": self.frames}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueueEntry:
        read_version(data, QUEUE_VERSION, f"queue entry {data.get('job_id')}")
        frames = data.get("frames")
        return cls(data["job_id"], JobConfig.from_json(data["config"]), data["submitter"], float(data["submitted"]),
                   int(data["priority"]), bool(data["paused"]), None if frames is None else int(frames))


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


def finish_times(jobs: Sequence[QueuedJob], remaining: Mapping[str, int | None], slots: int, worker_fps: float, now: float) -> dict[str, float]:
    """Seconds from ``now`` until each job is done, if every worker does ``worker_fps`` frames a
    second and the queue hands out workers as :func:`allocate` does: a job keeps its workers to its
    end, and those it frees go to the jobs waiting then (so a waiting job's time counts the jobs
    ahead of it, its priority and its submitter's share). ``remaining``: frames left per job.

    A job whose frames are not known (None or absent), a paused job, and every job when
    ``worker_fps`` is not positive, gets no time. A running job of unknown length holds its
    workers throughout (the jobs behind it are timed as if it never ended: late rather than
    early); a waiting one is left out, as are paused ones."""
    if worker_fps <= 0 or slots <= 0:
        return {}
    left = {j.entry.job_id: float(n) for j in jobs if (n := remaining.get(j.entry.job_id)) is not None}
    live = [j for j in jobs if not j.entry.paused and (j.entry.job_id in left or j.held)]
    out: dict[str, float] = {}
    t = 0.0
    while live:
        held = allocate(live, slots, now + t)
        rates = {job_id: n * worker_fps for job_id, n in held.items() if n and job_id in left}
        if not rates:
            break
        ends = {job_id: left[job_id] / rate for job_id, rate in rates.items()}
        step = min(ends.values())
        t += step
        done = {job_id for job_id, end in ends.items() if end <= step}
        for job_id, rate in rates.items():
            left[job_id] -= rate * step
        for job_id in done:
            out[job_id] = t
        live = [dataclasses.replace(j, held=held.get(j.entry.job_id, 0)) for j in live if j.entry.job_id not in done]
    return out


def tally(jobs: Sequence[QueuedJob]) -> dict[str, int]:
    """How many of ``jobs`` are running (hold workers), waiting, and paused."""
    return {"running": sum(1 for j in jobs if j.held), "waiting": sum(1 for j in jobs if not j.held and not j.entry.paused),
            "paused": sum(1 for j in jobs if not j.held and j.entry.paused)}


def summary(jobs: Sequence[QueuedJob], slots: int, finished: int, failed: int) -> str:
    """The queue in one line, as the runner's terminal and the Ray dashboard show it: the running
    jobs with their workers, how many wait (the next one named) and are paused."""
    n = tally(jobs)
    running = ", ".join(f"{j.entry.job_id} x{j.held}" for j in jobs if j.held) or "-"
    following = next((f" (next {j.entry.job_id})" for j in jobs if not j.held and not j.entry.paused), "")
    return (f"queue: {n['running']} running ({running}), {n['waiting']} waiting{following}, {n['paused']} paused, "
            f"{finished} finished, {failed} failed; {slots} workers")
