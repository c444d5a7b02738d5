"""What the ledger hears (events, past tense) and what it says (instructions, imperative). Pure.
Every event's ``now`` is the driver's monotonic clock, never a wall clock (a new run starts a new
clock); wall times for the record are given to :meth:`farm.ledger.Ledger.handle` apart (``wall=``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from farm.receipt import Receipt

# ---- events (past tense) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A driver starts (or restarts) work on the job: a failed or cancelled job's attempts start
    over (history stays), a job whose mux did not finish or whose output is gone muxes again, and
    what belonged to an earlier run (workers, leases, blocked nodes, its clock) is forgotten."""

    now: float


@dataclass(frozen=True, slots=True)
class SegmentFound:
    """Storage holds a committed segment with this receipt (found when the coordinator loads)."""

    receipt: Receipt
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class SegmentMissing:
    """The segment of a done shard is gone from storage, or not of its recorded size."""

    shard: int
    segment: str
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkerJoined:
    """A worker is ready. ``shard``/``attempt``: it is already running that shard (a driver
    re-announcing its workers to a restarted coordinator), so its lease is rebuilt."""

    worker: str
    node: str
    now: float
    shard: int | None = None
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class WorkerStartFailed:
    """A worker could not start (its ready() raised); ``starting``: workers still starting."""

    worker: str
    now: float
    error: str
    starting: int = 0


@dataclass(frozen=True, slots=True)
class WorkerLost:
    worker: str
    now: float
    reason: str = "worker died"


@dataclass(frozen=True, slots=True, init=False)
class ShardDone:
    """``worker`` committed shard ``shard``: its :class:`~farm.receipt.Receipt`.

    ``ShardDone(shard, worker, now, receipt)``, or ``ShardDone(shard, worker, now, segment=...,
    frames=..., bytes=..., sha256=..., seconds=...)`` which builds the receipt from its fields."""

    shard: int
    worker: str
    now: float
    receipt: Receipt

    def __init__(self, shard: int, worker: str, now: float, receipt: Receipt | None = None, **fields: Any) -> None:
        if receipt is None:
            receipt = Receipt(shard=shard, **fields)
        elif fields:
            raise TypeError("ShardDone takes a receipt or its fields, not both")
        object.__setattr__(self, "shard", shard)
        object.__setattr__(self, "worker", worker)
        object.__setattr__(self, "now", now)
        object.__setattr__(self, "receipt", receipt)


@dataclass(frozen=True, slots=True)
class ShardFailed:
    shard: int
    worker: str
    now: float
    error: str
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class ShardReturned:
    """``worker`` gave shard ``shard`` back unfinished because it is leaving (its node is being
    drained or preempted), keeping ``frames_kept`` source frames in committed parts."""

    shard: int
    worker: str
    now: float
    frames_kept: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The worker made progress on its shard (or, idle, is alive)."""

    worker: str
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class MuxDone:
    now: float


@dataclass(frozen=True, slots=True)
class MuxFailed:
    now: float
    error: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    now: float


Event = (
    RunStarted | SegmentFound | SegmentMissing | WorkerJoined | WorkerStartFailed | WorkerLost | ShardDone | ShardFailed
    | ShardReturned | Heartbeat | Tick | MuxDone | MuxFailed | Cancelled
)
#: Facts about storage: they change what is done, but schedule nothing by themselves.
STORAGE_EVENTS = (SegmentFound, SegmentMissing)

# ---- instructions (imperative) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assign:
    shard: int
    worker: str
    attempt: int


@dataclass(frozen=True, slots=True)
class StopWorker:
    worker: str
    reason: str


@dataclass(frozen=True, slots=True)
class Mux:
    pass


@dataclass(frozen=True, slots=True)
class Abort:
    reason: str


@dataclass(frozen=True, slots=True)
class Finish:
    pass


@dataclass(frozen=True, slots=True)
class Resync:
    """The coordinator does not know this driver's run (Ray restarted it, losing its memory):
    announce every ready worker, with the shard each is running, then send the events again."""


@dataclass(frozen=True, slots=True)
class Superseded:
    """Another driver's run holds the job now (it took the job over on storage): stop."""


Instruction = Assign | StopWorker | Mux | Abort | Finish | Resync | Superseded
