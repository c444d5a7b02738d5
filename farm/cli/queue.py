"""The jobs queue from the command line: a submit of several inputs (or ``--queue``) puts one job
per input on the jobs root's queue, then runs the queue here unless a runner already does;
``farm queue run``, ``farm priority``, ``farm pause``; the runner's view and ``farm ls``'s rows."""

from __future__ import annotations

import dataclasses
import getpass
import os
import socket
import sys
import time
from typing import Any

import click

from farm.cli.base import jobs_root_default, main
from farm.errors import UsageError

#: The states a queued job is shown in, besides its job directory's own.
QUEUE_STATES = ("queued", "paused", "failed")


def submitter_default() -> str:
    return os.environ.get("FARM_SUBMITTER") or f"{getpass.getuser()}@{socket.gethostname()}"


def queue_root(jobs_root: str | None) -> str:
    """The jobs root a queue lives in: ``--jobs-root``, else $FARM_JOBS_ROOT, else ./.farm-jobs (as
    ``farm ls`` reads it), so that every submit from one place shares one queue."""
    from farm.storage.fs import normalize

    return normalize(jobs_root or jobs_root_default())


def enqueue(configs: list, priority: int | None, submitter: str, jobs_root: str, echo=click.echo) -> list[str]:
    """Check every submit (``(JobConfig, probe or None)`` pairs) first, then put each on the queue:
    a bad input leaves nothing queued. A job already queued keeps its place (and its priority, unless
    ``priority`` is given). Returns the job ids in the order given."""
    from farm.job import check_job
    from farm.queue import QueueEntry
    from farm.storage.queuedir import QueueDir

    checked = [check_job(dataclasses.replace(cfg, jobs_root=jobs_root), source=source) for cfg, source in configs]
    seen: dict[str, str] = {}
    for c in checked:
        if c.job.job_id in seen:
            raise UsageError(f"{seen[c.job.job_id]} and {c.cfg.input} are one job (the same video and settings); give each once")
        seen[c.job.job_id] = c.cfg.input
    qd = QueueDir(jobs_root)
    now = time.time()
    for c in checked:
        old = qd.get(c.job.job_id)
        if old is not None:
            entry = dataclasses.replace(old, config=c.cfg, priority=old.priority if priority is None else priority, frames=c.source.num_frames)
            qd.clear_outcome(entry.job_id)
            echo(f"already queued: {entry.job_id} (priority {entry.priority}{', paused' if entry.paused else ''}) {c.cfg.input}", err=True)
        else:
            entry = QueueEntry(c.job.job_id, c.cfg, submitter, now, priority or 0, frames=c.source.num_frames)
            echo(f"queued {entry.job_id} (priority {entry.priority}): {c.cfg.input} -> {c.cfg.output}", err=True)
        qd.put(entry)
    return list(seen)


def run_queue(jobs_root: str, address: str | None, slots: int | None, quiet: bool, wait: bool) -> None:
    """Run the queue here; exits 1 when a job failed. When another runner holds the queue (and not
    ``wait``), says so and returns: that runner runs what was queued."""
    from farm.runner import Runner
    from farm.storage.fs import normalize

    with _QueueView(quiet) as view:
        report = Runner(normalize(jobs_root), slots, view.update, wait=wait, address=address).run()
    if report.holder is not None:
        click.echo(f"the queue of {jobs_root} is run by {report.holder}; it runs these jobs (watch with `farm ls --jobs-root {jobs_root}`)")
        return
    for job_id, error in report.failed:
        click.echo(f"failed: {job_id}: {error}", err=True)
    click.echo(f"queue of {jobs_root} done: {len(report.finished)} job(s) finished, {len(report.failed)} failed")
    if report.failed:
        sys.exit(1)


class _QueueView:
    """The runner's terminal view: the queue table, redrawn; without a terminal, a line per change."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.live: Any = None
        self._printed = ""

    def __enter__(self) -> _QueueView:
        if not self.quiet and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=2)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, view) -> None:
        if self.quiet:
            return
        line = view.line
        if self.live is not None:
            self.live.update(line)
        elif line != self._printed:
            self.console.print(line, highlight=False, soft_wrap=True)
            self._printed = line


# ----------------------------------------------------------------------------------------------
# farm ls


def queue_rows(jobs_root: str, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``farm ls``'s rows: the queue's jobs first, in queue order (running, then waiting by
    priority and age, paused last), each with its ``queue`` fields; then the other jobs as listed.

    A waiting job's ``eta_s`` is when it would be done (farm.queue.finish_times): the running jobs'
    frames per second per worker, the frames left of each job, and the last runner's workers (or,
    before any runner wrote them, the running jobs' workers). None while nothing runs to measure."""
    from farm.queue import QueuedJob, effective_priority, finish_times, order
    from farm.storage.queuedir import QueueDir

    qd = QueueDir(jobs_root)
    by_id = {j["job_id"]: j for j in jobs}
    now = time.time()
    entries, failed = qd.entries(), qd.outcomes()
    live = {e.job_id: by_id[e.job_id] for e in entries
            if e.job_id in by_id and by_id[e.job_id]["state"] in ("running", "muxing") and by_id[e.job_id].get("driver")}
    running = {job_id: len(j.get("workers", [])) or 1 for job_id, j in live.items()}
    queued = [QueuedJob(e, running.get(e.job_id, 0), e.config.workers) for e in entries]
    measured = [j for j in live.values() if j.get("fps")]
    worker_fps = sum(j["fps"] for j in measured) / max(1, sum(running[j["job_id"]] for j in measured))
    left = {e.job_id: _frames_left(by_id.get(e.job_id), e.frames) for e in entries}
    times = finish_times([q for q in queued if q.entry.job_id not in failed], left, qd.slots() or sum(running.values()), worker_fps, now)
    rows = []
    for position, q in enumerate(order(queued, now), start=1):
        e = q.entry
        row = dict(by_id.pop(e.job_id, {}) or {"job_id": e.job_id, "frames_done": 0, "frames_total": e.frames, "eta_s": None, "input": e.config.input})
        outcome = failed.get(e.job_id)
        if e.paused:
            row["state"] = "paused"
        elif outcome is not None:
            row["state"], row["reason"] = "failed", outcome.error
        elif e.job_id not in running:
            row["state"] = "queued"
            row["eta_s"] = round(times[e.job_id], 1) if e.job_id in times else None
        row["queue"] = {"position": position, "priority": e.priority, "effective_priority": effective_priority(e, now),
                        "submitter": e.submitter, "submitted": e.submitted, "output": e.config.output}
        rows.append(row)
    return rows + list(by_id.values())


def _frames_left(job: dict[str, Any] | None, queued_frames: int | None) -> int | None:
    """A queued job's frames still to do: its job folder's count when it has one, else the submit's."""
    if job is not None and job.get("frames_total") is not None:
        return max(0, job["frames_total"] - job.get("frames_done", 0))
    return queued_frames


def ls_line(j: dict[str, Any]) -> str:
    q = j.get("queue") or {}
    eta = f"{j['eta_s'] / 60:.1f}m" if j.get("eta_s") is not None else "-"
    total = "?" if j.get("frames_total") is None else j["frames_total"]
    pri = f"p{q['priority']}" if q else ""
    return f"{j['job_id']:<40} {j['state']:<9} {pri:<4} {q.get('submitter', ''):<16} {j['frames_done']:>7}/{total:<7} {eta:>7} {j['input']}"


# ----------------------------------------------------------------------------------------------
# commands


@main.group()
def queue() -> None:
    """The queue of a jobs root: jobs from many submits, run in priority order with a fair share
    of the cluster's workers for each submitter."""


@queue.command(name="run")
@click.option("--jobs-root", default=jobs_root_default, show_default="./.farm-jobs or $FARM_JOBS_ROOT")
@click.option("--address", envvar="RAY_ADDRESS", help="Ray cluster to run on (default: start one on this machine).")
@click.option("--workers", type=click.IntRange(min=1), help="Workers to hand out (default: one per GPU of the cluster; on CPU what one job would get).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="When another runner holds the queue, wait to take over if it ends or goes silent.")
@click.option("--quiet", is_flag=True)
def queue_run(jobs_root: str, address: str | None, workers: int | None, wait: bool, quiet: bool) -> None:
    """Run the queue until no job is left to start (paused and failed jobs stay queued).

    \b
    Examples:
      farm queue run --jobs-root /mnt/nfs/farm-jobs --address auto
      farm queue run --no-wait
    """
    run_queue(queue_root(jobs_root), address, workers, quiet, wait)


def _entry(jobs_root: str, job_id: str):
    from farm.storage.queuedir import QueueDir

    qd = QueueDir(queue_root(jobs_root))
    entry = qd.get(job_id)
    if entry is None:
        raise UsageError(f"job {job_id} is not in the queue of {queue_root(jobs_root)}; `farm ls` lists it, and --jobs-root picks another")
    return qd, entry


@main.command()
@click.argument("job_id")
@click.argument("priority", type=int)
@click.option("--jobs-root", default=jobs_root_default, show_default="./.farm-jobs or $FARM_JOBS_ROOT")
def priority(job_id: str, priority: int, jobs_root: str) -> None:
    """Set a queued job's PRIORITY (higher runs first; the default is 0, negatives allowed).

    \b
    Example:
      farm priority holiday-3f9a2c1b7d0e 10
    """
    qd, entry = _entry(jobs_root, job_id)
    qd.put(dataclasses.replace(entry, priority=priority))
    click.echo(f"{job_id}: priority {priority} (was {entry.priority})")


@main.command()
@click.argument("job_id")
@click.option("--jobs-root", default=jobs_root_default, show_default="./.farm-jobs or $FARM_JOBS_ROOT")
def pause(job_id: str, jobs_root: str) -> None:
    """Keep a queued job from getting workers; a running one stops within seconds, keeping what is
    done. `farm resume JOB` puts it back in line.

    \b
    Example:
      farm pause holiday-3f9a2c1b7d0e
    """
    from farm.storage.jobdir import JobDir

    qd, entry = _entry(jobs_root, job_id)
    qd.put(dataclasses.replace(entry, paused=True))
    job = JobDir(queue_root(jobs_root), job_id)
    if job.exists():
        job.request_cancel()
    click.echo(f"{job_id}: paused; `farm resume {job_id}` puts it back in the queue")


def unpause(jobs_root: str, job_id: str) -> bool:
    """``farm resume`` of a queued job: back in line (its failure, if any, forgotten). False when
    the job is not in the queue."""
    from farm.storage.queuedir import QueueDir

    qd = QueueDir(queue_root(jobs_root))
    entry = qd.get(job_id)
    if entry is None:
        return False
    qd.clear_outcome(job_id)
    qd.put(dataclasses.replace(entry, paused=False))
    return True
