"""The queue's folder under a jobs root: one file per entry (so two submitters never rewrite each
other's), the runner's outcome per job it could not finish, and the runner's owner record."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from farm.errors import StorageError
from farm.queue import QueueEntry
from farm.storage.fs import TMP_MARK, Storage
from farm.storage.jobdir import OwnerFiles

log = logging.getLogger(__name__)

QUEUE = "queue"  # <jobs-root>/queue/: entries/<job>.json, outcomes/<job>.json, runner.json, owner/
ENTRIES = "entries"
OUTCOMES = "outcomes"
RUNNER = "runner.json"  # the last runner's workers, for the waiting jobs' times in `farm ls`


@dataclass(frozen=True, slots=True)
class Outcome:
    """Why the runner stopped running a job that is still in the queue."""

    state: str  # "failed": the job gave up or could not start
    error: str

    def __post_init__(self) -> None:
        if self.state != "failed" or not self.error:
            raise ValueError(f"an outcome is a failure with its error line, got {self.state!r}, {self.error!r}")


class QueueDir(OwnerFiles):
    """The queue of one jobs root."""

    job_id = QUEUE  # how the runner's ownership names what it holds

    def __init__(self, jobs_root: str) -> None:
        self.jobs_root = jobs_root
        self.storage = Storage(jobs_root).sub(QUEUE)

    def entries(self) -> list[QueueEntry]:
        """Every entry, in no order; a torn or unreadable one is left out (and logged)."""
        self.storage.invalidate_cache(ENTRIES)
        out = []
        for name in self.storage.list(ENTRIES):
            if not name.endswith(".json") or TMP_MARK in name:
                continue
            try:
                out.append(QueueEntry.from_json(self.storage.read_json(f"{ENTRIES}/{name}")))
            except FileNotFoundError:
                continue  # removed (done) between the listing and the read
            except (StorageError, KeyError, TypeError, ValueError) as exc:
                log.warning("queue entry %s is unreadable, left out: %s", name, exc)
        return out

    def get(self, job_id: str) -> QueueEntry | None:
        try:
            return QueueEntry.from_json(self.storage.read_json(f"{ENTRIES}/{job_id}.json"))
        except FileNotFoundError:
            return None

    def put(self, entry: QueueEntry) -> None:
        self.storage.write_json(f"{ENTRIES}/{entry.job_id}.json", entry.to_json())

    def remove(self, job_id: str) -> None:
        """The job left the queue (done, or cancelled): its entry and outcome go."""
        for rel in (f"{ENTRIES}/{job_id}.json", f"{OUTCOMES}/{job_id}.json"):
            self.storage.remove(rel)

    def outcome(self, job_id: str) -> Outcome | None:
        try:
            data = self.storage.read_json(f"{OUTCOMES}/{job_id}.json")
        except FileNotFoundError:
            return None
        return Outcome(data["state"], data["error"])

    def outcomes(self) -> dict[str, Outcome]:
        """Every job's outcome, from one listing (the runner reads them on each pass)."""
        self.storage.invalidate_cache(OUTCOMES)
        out = {}
        for name in self.storage.list(OUTCOMES):
            if name.endswith(".json") and TMP_MARK not in name:
                outcome = self.outcome(name[: -len(".json")])
                if outcome is not None:
                    out[name[: -len(".json")]] = outcome
        return out

    def write_outcome(self, job_id: str, outcome: Outcome) -> None:
        self.storage.write_json(f"{OUTCOMES}/{job_id}.json", {"state": outcome.state, "error": outcome.error})

    def clear_outcome(self, job_id: str) -> None:
        self.storage.remove(f"{OUTCOMES}/{job_id}.json")

    def write_slots(self, slots: int) -> None:
        """The workers the runner hands out (the cluster's, or its --workers)."""
        self.storage.write_json(RUNNER, {"slots": slots})

    def slots(self) -> int | None:
        """The last runner's workers; None when no runner has run this queue (or its file is torn)."""
        try:
            return int(self.storage.read_json(RUNNER)["slots"])
        except FileNotFoundError:
            return None
        except (StorageError, KeyError, TypeError, ValueError) as exc:
            log.warning("the queue's %s is unreadable: %s", RUNNER, exc)
            return None
