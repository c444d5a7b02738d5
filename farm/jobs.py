"""The job directory on shared storage, and the job spec every actor reads from it.

    <jobs-root>/<job-id>/
      job.json                  spec: input, probe + frame index, model settings, shard plan
      ledger.json               done shards, attempts, failures (the coordinator's snapshot)
      segments/000042-<t>.mkv   one lossless segment per finished shard attempt
      segments/000042-<t>.json  its receipt, written after the segment; no receipt, not done
      logs/000042-<t>.json      each shard attempt's log (timings, faces, error)
      control.json              requests from `farm cancel`
      live.json                 live figures of the running driver (workers, fps, ETA)

Nothing that matters lives only in actor memory: a job resumes from this directory alone."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import IO, Any

from farm import __version__
from farm.config import ModelConfig
from farm.errors import StorageError
from farm.plan import Shard, plan_shards
from farm.storage import TMP_MARK, Storage
from farm.video.deinterlace import effective_mode, frames_per_source_frame, output_field_order, output_index
from farm.video.index import FrameIndex
from farm.video.probe import SourceInfo

SPEC = "job.json"
LEDGER = "ledger.json"
CONTROL = "control.json"
LIVE = "live.json"
SUBMIT = "submit.json"  # the last submit's output settings, for `farm resume JOB`
SEGMENTS = "segments"
LOGS = "logs"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Written once when the job is created; read by every actor."""

    job_id: str
    source: SourceInfo
    model: ModelConfig
    shard_frames: int
    input_fingerprint: str
    created: float
    farm_version: str = __version__

    def shards(self) -> list[Shard]:
        return plan_shards(self.source.num_frames, self.shard_frames)

    @property
    def deinterlace(self) -> str:
        """The effective deinterlace mode: off, on or double (``auto`` resolved for the source)."""
        return effective_mode(self.model.deinterlace, self.source.field_order)

    @property
    def frames_per_source_frame(self) -> int:
        """k: source shard ``[start, stop)`` is output frames ``[k start, k stop)``."""
        return frames_per_source_frame(self.deinterlace)

    @property
    def output_index(self) -> FrameIndex:
        """The output's frames and their times (the source's, or two per frame for double)."""
        return output_index(self.source.index, self.deinterlace)

    @property
    def output_field_order(self) -> str:
        return output_field_order(self.deinterlace, self.source.field_order)

    def to_json(self) -> dict:
        return {
            "job_id": self.job_id,
            "source": self.source.to_json(),
            "model": self.model.to_json(),
            "shard_frames": self.shard_frames,
            "input_fingerprint": self.input_fingerprint,
            "created": self.created,
            "farm_version": self.farm_version,
        }

    @classmethod
    def from_json(cls, data: dict) -> JobSpec:
        return cls(
            job_id=data["job_id"],
            source=SourceInfo.from_json(data["source"]),
            model=ModelConfig.from_json(data["model"]),
            shard_frames=int(data["shard_frames"]),
            input_fingerprint=data["input_fingerprint"],
            created=float(data["created"]),
            farm_version=data.get("farm_version", "?"),
        )


class JobDir:
    """One job's directory."""

    def __init__(self, jobs_root: str, job_id: str) -> None:
        self.jobs_root = jobs_root
        self.job_id = job_id
        self.storage = Storage(jobs_root).sub(job_id)

    @property
    def location(self) -> str:
        return self.storage.location

    def exists(self) -> bool:
        return self.storage.exists(SPEC)

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

    def write_ledger(self, data: dict) -> None:
        self.storage.write_json(LEDGER, data)

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
        return f"{index:06d}-{token}.mkv"

    @staticmethod
    def segment_rel(name: str) -> str:
        return f"{SEGMENTS}/{name}"

    @staticmethod
    def receipt_rel(segment: str) -> str:
        return f"{SEGMENTS}/{segment.rsplit('.', 1)[0]}.json"

    def write_receipt(self, segment: str, receipt: dict) -> None:
        self.storage.write_json(self.receipt_rel(segment), receipt)

    def receipts(self) -> list[dict]:
        """Every committed segment's receipt whose segment is present with the recorded size."""
        names = self.storage.list(SEGMENTS)
        present = set(names)
        out = []
        for name in names:
            if not name.endswith(".json") or TMP_MARK in name:
                continue
            try:
                receipt = self.storage.read_json(f"{SEGMENTS}/{name}")
            except (FileNotFoundError, StorageError):
                continue
            if receipt.get("segment") in present and self.storage.size(self.segment_rel(receipt["segment"])) == receipt.get("bytes"):
                out.append(receipt)
        return out

    def segment_ok(self, segment: str, size: int) -> bool:
        rel = self.segment_rel(segment)
        return self.storage.exists(rel) and self.storage.size(rel) == size

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
        for name in self.storage.list(LOGS):
            if name.startswith(prefix) and name.endswith(".json") and TMP_MARK not in name:
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
        for name in self.storage.list(SEGMENTS):
            stem = name.rsplit(".", 1)[0]
            if f"{stem}.mkv" in keep and TMP_MARK not in name:
                continue
            self.storage.remove(f"{SEGMENTS}/{name}")

    def clear(self) -> None:
        """Forget all progress (``--restart``): ledger, segments, logs; the spec is rewritten after."""
        for rel in (LEDGER, CONTROL):
            self.storage.remove(rel)
        for rel in (SEGMENTS, LOGS):
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
