"""What a `farm submit` did (pure): the job, its output and how it got there, as the CLI prints it
and `--json` writes it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

#: done: the output is written and verified; submitted: handed to the cluster as a detached Ray Job.
ResultState = Literal["done", "submitted"]


@dataclass(frozen=True, slots=True)
class JobResult:
    job_id: str | None  # None only for a Ray Job whose input this machine cannot read
    output: str
    state: ResultState = "done"
    already_done: bool = False  # the output was current: nothing ran
    followed: bool = False  # another driver ran the job; this one watched it finish
    frames: int | None = None  # the mux's: frames in the output
    bytes: int | None = None  # the output's size
    shift: int | None = None  # the mux's timestamp shift (ticks of the output's time base)
    coordinator_ms_per_shard: float | None = None  # the driver's wait on the coordinator, per shard
    submission_id: str | None = None  # a Ray Job's
    dashboard: str | None = None  # where a Ray Job was sent

    def __post_init__(self) -> None:
        if self.state not in ("done", "submitted"):
            raise ValueError(f"unknown result state {self.state!r}; known: done, submitted")
        if self.state == "submitted" and self.submission_id is None:
            raise ValueError("a submitted result names its Ray Job (submission_id)")

    @classmethod
    def of_mux(cls, job_id: str, mux: dict[str, Any], coordinator_ms_per_shard: float) -> JobResult:
        """A run that ended in the mux: ``mux`` is what it reported (output, frames, bytes, shift)."""
        return cls(job_id, mux["output"], frames=mux["frames"], bytes=mux["bytes"], shift=mux["shift"],
                   coordinator_ms_per_shard=coordinator_ms_per_shard)

    def to_json(self) -> dict[str, Any]:
        """The fields that say something: flags only when set, figures only when known."""
        out: dict[str, Any] = {"job_id": self.job_id, "output": self.output, "state": self.state}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in out and value is not None and value is not False:
                out[f.name] = value
        return out
