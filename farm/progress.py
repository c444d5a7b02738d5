"""What the live view shows of a running job (pure: the view imports it without Ray).
:class:`Progress` is one frame of the view; :class:`ProgressTracker` turns the coordinator's
snapshots (or the ledger's summary on storage, for a follower) into them, with this run's rate."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """What the terminal view shows; sent to ``on_progress`` about once a second."""

    job_id: str
    state: str
    frames_done: int
    frames_total: int
    shards_done: int
    shards_total: int
    fps: float
    eta_s: float | None
    workers: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    dashboard_url: str | None = None
    message: str | None = None
    disk: str | None = None  # the disk estimate made before work


@dataclass
class ProgressTracker:
    """This run's rate and the view's frames, from job snapshots (``summarize``'s fields)."""

    job_id: str
    dashboard_url: str | None = None
    disk: str | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    frames_at_start: int = 0
    shards_at_start: int = 0
    t0: float = field(default_factory=time.monotonic)

    def start(self, snapshot: dict[str, Any]) -> None:
        """The run starts from ``snapshot``: its rate counts frames done from here."""
        self.snapshot = snapshot
        self.frames_at_start = snapshot.get("frames_done", 0)
        self.shards_at_start = snapshot.get("shards_done", 0)
        self.t0 = time.monotonic()

    def update(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def rates(self, now: float | None = None) -> tuple[float, float | None]:
        """Frames per second of this run so far, and the seconds left at that rate."""
        snap = self.snapshot
        now = time.monotonic() if now is None else now
        fps = (snap.get("frames_done", 0) - self.frames_at_start) / max(1e-6, now - self.t0)
        remaining = snap.get("frames_total", 0) - snap.get("frames_done", 0)
        return fps, (remaining / fps if fps > 0 else None)

    def shards_run(self) -> int:
        return max(1, self.snapshot.get("shards_done", 0) - self.shards_at_start)

    def progress(self, message: str | None = None, state: str | None = None) -> Progress:
        snap = self.snapshot
        fps, eta = self.rates()
        return Progress(
            job_id=self.job_id,
            state=state or snap.get("state", "running"),
            frames_done=snap.get("frames_done", 0),
            frames_total=snap.get("frames_total", 0),
            shards_done=snap.get("shards_done", 0),
            shards_total=snap.get("shards_total", 0),
            fps=fps,
            eta_s=eta,
            workers=snap.get("workers", []),
            failures=snap.get("failures", []),
            dashboard_url=self.dashboard_url,
            message=message,
            disk=self.disk,
        )
