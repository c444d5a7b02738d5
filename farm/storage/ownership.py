"""Keeping a job's ownership on storage (:mod:`farm.owner`'s rules): take it or learn who holds it,
renew it in a background thread while the driver works (through the mux too), hand it back at the
end. No Ray: ownership is taken before Ray starts and before anything in the job directory changes."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from farm.errors import ClusterError, FarmError
from farm.owner import OWNER_TTL_S, RENEW_S, Decision, OwnerRecord, OwnerWatch, decide, still_mine
from farm.storage.jobdir import JobDir

log = logging.getLogger(__name__)

#: This process's driver id: every job it drives is held under it.
DRIVER_ID = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ownership:
    """One driver's hold on one job."""

    def __init__(self, job: JobDir, output: str | None = None, ttl_s: float = OWNER_TTL_S, renew_s: float = RENEW_S,
                 me: str | None = None, host: str | None = None) -> None:
        self.job = job
        self.output = output
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.me, self.host, self.pid = me or DRIVER_ID, host or socket.gethostname(), os.getpid()
        self.record: OwnerRecord | None = None  # ours, while we hold the job
        self.holder: OwnerRecord | None = None  # the other driver's, while we follow
        self.watch = OwnerWatch()
        self.lost: str | None = None  # why we no longer hold the job
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def owned(self) -> bool:
        return self.record is not None and self.lost is None

    def try_take(self) -> bool:
        """Take the job if nobody holds it, its holder released it or is gone; True if we hold
        it now. Otherwise :attr:`holder` names who does."""
        if self.owned:
            return True
        current = self.job.read_owner()
        alive = current is None or current.host != self.host or pid_alive(current.pid)
        d: Decision = decide(current, self.me, self.host, self.pid, self.watch, time.monotonic(), alive, self.output, self.ttl_s)
        if d.action == "follow":
            self.holder = d.record
            return False
        assert d.record is not None
        if d.action == "take":
            if not self.job.create_owner(d.record):
                self.holder = self.job.read_owner()
                return False
            log.info("took job %s (owner generation %d: %s)", self.job.job_id, d.record.generation, d.why)
            self.job.prune_owners(below=d.record.generation)
        self.record, self.holder, self.lost = d.record, None, None
        self._start()
        return True

    def check(self) -> None:
        """Raise if another driver took the job over (this driver was stalled past the TTL)."""
        if self.lost:
            raise ClusterError(self.lost)

    def renew(self) -> None:
        """One renewal: bump our beat, unless a newer generation exists (then we lost the job)."""
        if self.record is None or self.lost:
            return
        current = self.job.read_owner()
        if not still_mine(current, self.record):
            if current is None:
                self.lost = f"job {self.job.job_id}'s owner record is gone (its folder was removed?); this driver stops"
            else:
                self.lost = f"another driver (on {current.host}, pid {current.pid}) took job {self.job.job_id} over; this one stops"
            log.warning("%s", self.lost)
            return
        self.record = self.record.renewed()
        self.job.write_owner(self.record)

    def release(self) -> None:
        """Hand the job back (a follower takes it at once); the record stays as a tombstone."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.record is not None and not self.lost:
            try:
                if still_mine(self.job.read_owner(), self.record):
                    self.job.write_owner(self.record.release())
            except FarmError as exc:
                log.warning("could not release job %s: %s", self.job.job_id, exc)
        self.record = None

    def detach(self) -> None:
        """Stop renewing without releasing: another :class:`Ownership` of this process (the
        next :func:`~farm.job.open_job`) keeps the job from here (it finds the record ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.record = None

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"farm-owner-{self.job.job_id}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew()
            except (FarmError, OSError) as exc:  # a storage hiccup, or the job's folder removed under it:
                # the next renewal tries again (the TTL allows several); a thread never dies of it
                log.warning("could not renew the ownership of job %s: %s", self.job.job_id, exc)
            if self.lost:
                return
