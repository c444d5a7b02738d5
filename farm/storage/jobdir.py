"""The job directory on shared storage: its whole layout (spec, ledger, receipts, the segment commit
protocol, logs, control and owner files) in one module; a job resumes from this directory alone.
Over 300 lines so that every file's reader and writer is here; the files' contents are core nouns."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from typing import IO, Any

from farm.config import CHUNK_SUFFIX, OutputConfig, check_job_id
from farm.errors import FarmError, InputError, StorageError
from farm.jobfiles import OutputRecord, SubmitRecord
from farm.ledger import Ledger
from farm.owner import OwnerRecord
from farm.receipt import PartRecord, Receipt
from farm.records import RetryPolicy
from farm.storage.fs import TMP_MARK, Storage, hash_stream_into, sha256_file
from farm.spec import JobSpec

SPEC = "job.json"
LEDGER = "ledger.json"
CONTROL = "control.json"
LIVE = "live.json"
SUBMIT = "submit.json"  # the last submit's output settings, for `farm resume JOB`
OUTPUTS = "outputs.json"  # every output this job wrote: path -> settings, size, mtime
SEGMENTS = "segments"
OWNER = "owner"
LOGS = "logs"
PARTS = "parts"  # parts/<shard>/<start>-<stop>.nut (+ .json): a shard's committed parts, until it is joined


class OwnerFiles:
    """The generations of an owner record under ``owner/`` (the rules are :mod:`farm.owner`'s;
    :mod:`farm.storage.ownership` keeps them): a job's driver, or a queue's runner."""

    storage: Storage

    def read_owner(self) -> OwnerRecord | None:
        """The newest generation of the job's owner record; None if the job never had one."""
        self.storage.invalidate_cache(OWNER)
        for name in reversed(_records(self.storage.list(OWNER))):
            try:
                return OwnerRecord.from_json(self.storage.read_json(f"{OWNER}/{name}"))
            except FileNotFoundError:
                continue  # pruned by a newer owner between the listing and the read
            except (StorageError, KeyError, TypeError, ValueError):
                continue  # torn by a backend without atomic writes: an older one decides
        return None

    def create_owner(self, record: OwnerRecord) -> bool:
        """Take generation ``record.generation``; False if another driver took it first."""
        return self.storage.create_exclusive(self._owner_rel(record.generation), json.dumps(record.to_json()).encode())

    def write_owner(self, record: OwnerRecord) -> None:
        """Renew (or release) our own generation; only its owner writes it."""
        self.storage.write_json(self._owner_rel(record.generation), record.to_json())

    def prune_owners(self, below: int) -> None:
        for name in _records(self.storage.list(OWNER)):
            if name[:-5].isdigit() and int(name[:-5]) < below:
                self.storage.remove(f"{OWNER}/{name}")

    @staticmethod
    def _owner_rel(generation: int) -> str:
        return f"{OWNER}/{generation:08d}.json"


class JobDir(OwnerFiles):
    """One job's directory."""

    def __init__(self, jobs_root: str, job_id: str) -> None:
        self.jobs_root = jobs_root
        self.job_id = check_job_id(job_id)  # a typed id must not reach outside the jobs root
        self.storage = Storage(jobs_root).sub(job_id)

    @property
    def location(self) -> str:
        return self.storage.location

    def exists(self) -> bool:
        return self.storage.exists(SPEC)

    @classmethod
    def existing(cls, jobs_root: str, job_id: str) -> JobDir:
        """The job directory of a job the user named.

        Raises:
            InputError: there is no such job under ``jobs_root``.
        """
        job = cls(jobs_root, job_id)
        if not job.exists():
            raise InputError(f"no job {job_id} under {jobs_root}; `farm ls --jobs-root {jobs_root}` lists the jobs")
        return job

    def read_spec(self) -> JobSpec:
        try:
            return JobSpec.from_json(self.storage.read_json(SPEC))
        except FileNotFoundError:
            raise StorageError(f"no job at {self.storage.url(SPEC)}; check --jobs-root and the job id") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"{self.storage.url(SPEC)} is damaged ({exc}); pass --restart to start over") from None

    def write_spec(self, spec: JobSpec) -> None:
        self.storage.makedirs(SEGMENTS)
        self.storage.makedirs(LOGS)
        self.storage.write_json(SPEC, spec.to_json())

    def read_ledger(self) -> dict | None:
        try:
            return self.storage.read_json(LEDGER)
        except FileNotFoundError:
            return None

    def load_ledger(self, policy: RetryPolicy | None = None, spec: JobSpec | None = None) -> Ledger:
        """The job's ledger as last written, or a fresh one of its plan (``spec``: the job's, when
        the caller has read it) when none was."""
        policy = policy or RetryPolicy()
        data = self.read_ledger()
        return Ledger.from_json(data, policy) if data else Ledger((spec or self.read_spec()).shards(), policy)

    def write_ledger(self, data: dict) -> None:
        self.storage.write_json(LEDGER, data)

    # -- outputs: what each submit wrote, so a resubmit never takes another file for its own ----

    def record_output(self, location: str, out: OutputConfig, size: int, mtime_ns: int) -> None:
        """Note that this job wrote ``location`` (normalized) with ``out``, ``size`` bytes, ``mtime_ns``."""
        records = self.outputs()
        records[location] = OutputRecord(out, size, mtime_ns, time.time())
        self.storage.write_json(OUTPUTS, {where: record.to_json() for where, record in records.items()})

    def outputs(self) -> dict[str, OutputRecord]:
        """Every output this job wrote (see :meth:`record_output`), by location; an entry that does
        not read (damaged, or a newer farm's) counts as not written by this job."""
        try:
            data = dict(self.storage.read_json(OUTPUTS))
        except (FileNotFoundError, StorageError):
            return {}
        out = {}
        for where, entry in data.items():
            try:
                out[where] = OutputRecord.from_json(entry)
            except (FarmError, KeyError, TypeError, ValueError):
                continue
        return out

    # -- the last submit: its output, encode settings and input, for `farm resume JOB` ------------

    def write_submit(self, record: SubmitRecord) -> None:
        self.storage.write_json(SUBMIT, record.to_json())

    def read_submit(self) -> SubmitRecord | None:
        """The job's last submit; None if none was recorded.

        Raises:
            StorageError: submit.json is there but does not read.
        """
        try:
            return SubmitRecord.from_json(self.storage.read_json(SUBMIT))
        except FileNotFoundError:
            return None
        except (FarmError, KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"{self.storage.url(SUBMIT)} is damaged ({exc}); run `farm submit` again") from None

    def write_live(self, data: dict) -> None:
        self.storage.write_json(LIVE, data)

    def read_live(self) -> dict | None:
        try:
            return self.storage.read_json(LIVE)
        except (FileNotFoundError, StorageError):
            return None

    # -- segments ---------------------------------------------------------------------------------

    @staticmethod
    def segment_name(index: int, token: str) -> str:
        return f"{index:06d}-{token}{CHUNK_SUFFIX}"

    @staticmethod
    def segment_rel(name: str) -> str:
        return f"{SEGMENTS}/{name}"

    @staticmethod
    def receipt_rel(segment: str) -> str:
        return f"{SEGMENTS}/{segment.rsplit('.', 1)[0]}.json"

    def write_receipt(self, segment: str, receipt: Receipt) -> None:
        self.storage.write_json(self.receipt_rel(segment), receipt.to_json())

    def read_receipt(self, segment: str) -> Receipt:
        """Segment ``segment``'s receipt, as any farm wrote it.

        Raises:
            FileNotFoundError: the segment has no receipt (it is not committed).
            StorageError: the receipt is there but does not read.
        """
        rel = self.receipt_rel(segment)
        try:
            return Receipt.from_json(self.storage.read_json(rel))
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"{self.storage.url(rel)} is damaged ({exc}); pass --restart to redo the job") from None

    # The commit protocol of a shard's segment: built in a scratch file, committed whole (a
    # rename, or an upload), then its receipt; a reader trusts a segment only with its receipt
    # and the size recorded there (receipts()), so a crash between the steps leaves no half.

    def scratch_segment(self, name: str) -> str:
        """A local path to build segment ``name`` in, before :meth:`commit_segment`."""
        return self.storage.scratch_file(self.segment_rel(name))

    def commit_segment(self, scratch: str, name: str) -> tuple[int, str]:
        """Move the finished ``scratch`` into place as segment ``name``; returns its size in bytes
        and sha256 (for the receipt, which the caller writes next with :meth:`write_receipt`).

        Raises:
            StorageError: naming the segment's location.
        """
        size = os.path.getsize(scratch)
        digest = sha256_file(scratch)
        self.storage.commit_file(scratch, self.segment_rel(name))
        return size, digest

    @staticmethod
    def discard_scratch(scratch: str) -> None:
        """Remove an uncommitted scratch segment (after a failed shard); gone already is fine."""
        try:
            os.unlink(scratch)
        except FileNotFoundError:
            pass

    def receipts(self, names: list[str] | None = None) -> list[Receipt]:
        """Every committed segment's receipt whose segment is present with the recorded size (one
        that does not read as a receipt vouches for nothing); ``names``: the segments directory's
        listing, when the caller has just made it."""
        names = self.storage.list(SEGMENTS) if names is None else names
        present = set(names)
        out = []
        for name in _records(names):
            try:
                receipt = Receipt.from_json(self.storage.read_json(f"{SEGMENTS}/{name}"))
            except (FileNotFoundError, StorageError, KeyError, TypeError, ValueError):
                continue
            if receipt.segment in present and self.storage.size(self.segment_rel(receipt.segment)) == receipt.bytes:
                out.append(receipt)
        return out

    def segment_ok(self, segment: str, size: int) -> bool:
        rel = self.segment_rel(segment)
        return self.storage.exists(rel) and self.storage.size(rel) == size

    # -- parts: a shard's planned sub-chunks, each committed when done (farm.plan.plan_parts) -----
    # Same protocol as a segment: the chunk whole first, then its record; a part counts only with
    # its record, at the recorded size. Two workers of one shard write the same bytes to the same
    # name (the encode is deterministic), so either's rename leaves a good part.

    @staticmethod
    def part_rel(shard: int, start: int, stop: int, suffix: str = CHUNK_SUFFIX) -> str:
        return f"{PARTS}/{shard:06d}/{start:08d}-{stop:08d}{suffix}"

    def scratch_part(self, shard: int, start: int, stop: int) -> str:
        """A local path to build part ``[start, stop)`` of ``shard`` in, before :meth:`commit_part`."""
        return self.storage.scratch_file(self.part_rel(shard, start, stop))

    def commit_part(self, scratch: str, shard: int, start: int, stop: int, output_frames: int, video: dict[str, Any]) -> PartRecord:
        """Move the finished ``scratch`` into place as a part of ``shard`` and record it.

        Raises:
            StorageError: naming the part's location.
        """
        record = PartRecord(shard, start, stop, output_frames, os.path.getsize(scratch), sha256_file(scratch), video)
        self.storage.commit_file(scratch, self.part_rel(shard, start, stop))
        self.storage.write_json(self.part_rel(shard, start, stop, ".json"), record.to_json())
        return record

    def parts(self, shard: int) -> list[PartRecord]:
        """The committed parts of ``shard`` (any range; the caller matches them to the plan) whose
        chunk is present at the recorded size and whose bytes hash to the recorded sha256."""
        folder = f"{PARTS}/{shard:06d}"
        self.storage.invalidate_cache(folder)
        out = []
        for name in _records(self.storage.list(folder)):
            try:
                record = PartRecord.from_json(self.storage.read_json(f"{folder}/{name}"))
                rel = self.part_rel(shard, record.start, record.stop)
                if record.shard != shard or self.storage.size(rel) != record.bytes:
                    continue
                with self.storage.open(rel) as f:  # a part can be a gigabyte (120 lossless 4K frames): hashed as it streams
                    intact = hash_stream_into(hashlib.sha256(), f).hexdigest() == record.sha256
            except (FileNotFoundError, OSError, StorageError, KeyError, TypeError, ValueError):
                continue
            if intact:
                out.append(record)
        return out

    def open_part(self, record: PartRecord) -> IO | str:
        """A path (local storage) or file object for PyAV to read a committed part."""
        rel = self.part_rel(record.shard, record.start, record.stop)
        if self.storage.is_local:
            return self.storage._path(rel)
        return self.storage.open(rel)

    def remove_parts(self, shard: int) -> None:
        """Remove ``shard``'s parts (its segment is committed: they are in it)."""
        self.storage.remove(f"{PARTS}/{shard:06d}", recursive=True)

    def open_segment(self, segment: str) -> IO | str:
        """A path (local storage) or file object for PyAV to read a segment."""
        rel = self.segment_rel(segment)
        if self.storage.is_local:
            return self.storage._path(rel)
        return self.storage.open(rel)

    def write_log(self, index: int, token: str, record: dict[str, Any]) -> None:
        self.storage.write_json(f"{LOGS}/{index:06d}-{token}.json", record)

    def logs(self, index: int) -> list[dict]:
        prefix = f"{index:06d}-"
        out = []
        for name in _records(self.storage.list(LOGS)):
            if name.startswith(prefix):
                try:
                    out.append(self.storage.read_json(f"{LOGS}/{name}"))
                except (FileNotFoundError, StorageError):
                    continue
        return sorted(out, key=lambda r: r.get("attempt", 0))

    def check_writable(self, who: str) -> None:
        """Write and remove a probe file; a StorageError names ``who`` and the path."""
        rel = f"{SEGMENTS}/.probe-{uuid.uuid4().hex[:8]}"
        try:
            self.storage.write_bytes(rel, b"ok")
            self.storage.remove(rel)
        except (StorageError, OSError) as exc:
            raise StorageError(f"{who} cannot write to the job directory {self.storage.url(SEGMENTS)}: {exc}") from None

    def clean_segments(self, keep: set[str]) -> None:
        """Remove segments (and receipts, and scratch files) not in ``keep``."""
        stems = {name.rsplit(".", 1)[0] for name in keep}
        for name in self.storage.list(SEGMENTS):
            if name.rsplit(".", 1)[0] in stems and TMP_MARK not in name:
                continue
            self.storage.remove(f"{SEGMENTS}/{name}")

    def clear(self) -> None:
        """Forget all progress (``--restart``): ledger, segments, logs; the spec is rewritten after."""
        for rel in (LEDGER, CONTROL):
            self.storage.remove(rel)
        for rel in (SEGMENTS, LOGS, PARTS):
            self.storage.remove(rel, recursive=True)

    # -- control ----------------------------------------------------------------------------------

    def request_cancel(self) -> None:
        self.storage.write_json(CONTROL, {"cancel": True, "at": time.time()})

    def cancel_requested(self) -> bool:
        try:
            return bool(self.storage.read_json(CONTROL).get("cancel"))
        except FileNotFoundError:
            return False

    def clear_control(self) -> None:
        self.storage.remove(CONTROL)


def _records(names: list[str]) -> list[str]:
    """The JSON records of a listing, in its order: not the temporary files of a write under way."""
    return [name for name in names if name.endswith(".json") and TMP_MARK not in name]
