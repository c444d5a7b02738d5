"""Following a job another driver runs (same job from a second submit, cluster or mount path), from
storage alone (no Ray), until it ends, or its owner hands it back or goes silent and this driver
takes it over; a follower never reports an output it did not write."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from farm.errors import JobFailed
from farm.ledger import summarize
from farm.progress import Progress, ProgressTracker
from farm.storage.jobdir import JobDir
from farm.storage.ownership import Ownership

log = logging.getLogger(__name__)

POLL_S = 1.0


def job_summary(job: JobDir) -> dict[str, Any]:
    """The job's state from its ledger on storage (``summarize``'s fields) and live figures."""
    info = summarize(job.job_id, job.load_ledger())
    info["workers"] = (job.read_live() or {}).get("workers", [])
    return info


def follow(owner: Ownership, job: JobDir, tracker: ProgressTracker, output_current: Callable[[], bool],
           on_progress: Callable[[Progress], None] | None = None, poll_s: float = POLL_S) -> bool:
    """Follow the job until this driver may take it over (returns False: run it now) or it
    finished with this submit's output written (returns True).

    Raises:
        JobFailed: the job failed or was cancelled while this driver followed it.
    """
    saw_it_run = False
    while True:
        info = job_summary(job) if job.exists() else {"state": "running"}
        tracker.update(info)
        state = info["state"]
        if state == "done" and output_current():
            return True
        if saw_it_run and state in ("failed", "cancelled"):
            raise JobFailed(f"job {job.job_id} {state}: {info.get('reason')}")
        saw_it_run = saw_it_run or state in ("running", "muxing")
        if owner.try_take():
            return False
        holder = owner.holder
        where = f"the driver on {holder.host} (pid {holder.pid})" if holder else "another driver"
        if on_progress is not None:
            on_progress(tracker.progress(message=f"following {where}"))
        log.info("job %s is run by %s; following it", job.job_id, where)
        time.sleep(poll_s)
