"""Who drives a job: the owner record (``owner/<generation>.json`` on the job's storage) and the pure
rules for taking, keeping and following it. Generation ``n + 1`` can be created only once, and expiry
is judged on the observer's own monotonic clock, never on another machine's wall clock."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

#: Seconds without a renewal after which an owner counts as gone.
OWNER_TTL_S = 20.0
#: Seconds between renewals (several per TTL, so that one slow write does not hand the job over).
RENEW_S = 4.0


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """Generation ``generation`` of the job's ownership, held by driver ``owner``."""

    generation: int
    owner: str  # the driver's id: host, pid and a random part
    host: str
    pid: int
    beat: int = 0  # renewals so far; a change tells observers the owner is alive
    ttl_s: float = OWNER_TTL_S
    released: bool = False  # the owner finished (or gave up) and handed the job back
    output: str | None = None  # the output this owner writes (for the follower's message)

    def __post_init__(self) -> None:
        if self.generation < 1:
            raise ValueError(f"owner generation must be at least 1, got {self.generation}")

    def renewed(self) -> OwnerRecord:
        return replace(self, beat=self.beat + 1)

    def release(self) -> OwnerRecord:
        return replace(self, beat=self.beat + 1, released=True)

    def successor(self, owner: str, host: str, pid: int, output: str | None = None, ttl_s: float = OWNER_TTL_S) -> OwnerRecord:
        return OwnerRecord(self.generation + 1, owner, host, pid, ttl_s=ttl_s, output=output)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OwnerRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(slots=True)
class OwnerWatch:
    """What one observer has seen of a job's owner record, timed on the observer's clock."""

    seen: tuple[int, str, int] | None = None  # (generation, owner, beat) last seen
    since: float = 0.0  # when it was first seen unchanged

    def observe(self, record: OwnerRecord, now: float) -> float:
        """Note ``record`` at monotonic time ``now``; returns seconds it has been unchanged."""
        key = (record.generation, record.owner, record.beat)
        if key != self.seen:
            self.seen, self.since = key, now
        return now - self.since


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["take", "keep", "follow"]
    record: OwnerRecord | None  # take: the record to create; keep: ours; follow: the holder's
    why: str = ""


def decide(current: OwnerRecord | None, me: str, host: str, pid: int, watch: OwnerWatch, now: float,
           holder_alive: bool = True, output: str | None = None, ttl_s: float = OWNER_TTL_S) -> Decision:
    """What driver ``me`` (on ``host``, process ``pid``) does about the job's ownership, given the
    newest record on storage. ``holder_alive``: False when the holder ran on this host and its
    process is gone (it is taken over at once)."""
    if current is None:
        return Decision("take", OwnerRecord(1, me, host, pid, ttl_s=ttl_s, output=output), "no owner")
    if current.owner == me and not current.released:
        return Decision("keep", current)
    successor = current.successor(me, host, pid, output, ttl_s)
    if current.released:
        return Decision("take", successor, "released")
    if not holder_alive:
        return Decision("take", successor, f"its driver (pid {current.pid} on {current.host}) is gone")
    unchanged = watch.observe(current, now)
    if unchanged >= current.ttl_s:
        return Decision("take", successor, f"its driver on {current.host} has not renewed it for {unchanged:.0f} s")
    return Decision("follow", current)


def still_mine(current: OwnerRecord | None, mine: OwnerRecord) -> bool:
    """The newest record on storage is still the generation ``mine`` took (nobody took over)."""
    return current is not None and current.generation == mine.generation and current.owner == mine.owner
