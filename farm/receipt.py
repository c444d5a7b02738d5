"""A shard's receipt: the one record of a committed segment, from the worker's return value to
``segments/<name>.json``, the :class:`~farm.ledger.ShardDone` event and the ledger's done record.
Pure (no I/O): ``to_json`` keeps receipt.json's keys; ``record_json`` is the ledger's short form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

#: The keys of a done record in ledger.json (the ledger's short form of a receipt).
RECORD_KEYS = ("segment", "frames", "bytes", "sha256", "node", "worker", "seconds", "attempt", "faces")


@dataclass(frozen=True, slots=True, eq=False)
class Receipt:
    """Shard ``shard`` (source frames ``[start, stop)``) is committed as ``segment``."""

    shard: int
    segment: str  # file name under segments/
    frames: int  # source frames, as the shard plan counts them
    bytes: int
    sha256: str
    seconds: float = 0.0
    faces: int = 0
    start: int = 0
    stop: int = 0
    output_frames: int = 0
    worker: str = "?"
    node: str = "?"
    host: str = "?"
    attempt: int = 0
    video: dict[str, Any] | None = None  # what the tail needs: codec parameters, delay, settings
    timings: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.frames < 0 or self.bytes < 0:
            raise ValueError(f"receipt of shard {self.shard}: negative frames or bytes")

    def matches(self, start: int, stop: int) -> bool:
        """It is a receipt of the planned shard ``[start, stop)`` (a --restart re-plans)."""
        return (self.start, self.stop, self.frames) == (start, stop, stop - start)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Receipt):
            return self.to_json() == other.to_json()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # -- forms ------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """receipt.json's content (absent optional parts are left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Receipt:
        """From receipt.json (any farm's) or a worker's return value.

        Raises:
            KeyError, TypeError, ValueError: not a receipt.
        """
        known = {k: data[k] for k in _NAMES if k in data}
        return cls(**known)

    def record_json(self) -> dict[str, Any]:
        """The ledger's done record (ledger.json), the keys it always had."""
        return {k: getattr(self, k) for k in RECORD_KEYS}

    @classmethod
    def from_record(cls, shard: int, data: dict[str, Any], start: int = 0, stop: int = 0) -> Receipt:
        return cls(shard=shard, start=start, stop=stop, **{k: data[k] for k in RECORD_KEYS if k in data})


_NAMES = frozenset(f.name for f in fields(Receipt))


@dataclass(frozen=True, slots=True)
class PartRecord:
    """Part ``[start, stop)`` (source frames) of shard ``shard`` is committed: an encoded chunk of
    its ``output_frames`` frames, ``bytes`` long with ``sha256``; ``video`` as a receipt's. A worker
    that takes the shard up again reuses it when its range is planned and its bytes check out."""

    shard: int
    start: int
    stop: int
    output_frames: int
    bytes: int
    sha256: str
    video: dict[str, Any]

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop or self.bytes < 0 or self.output_frames < 1:
            raise ValueError(f"part of shard {self.shard}: bad range [{self.start}, {self.stop}), bytes or frames")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartRecord:
        """From a part's record file.

        Raises:
            KeyError, TypeError, ValueError: not a part record.
        """
        return cls(int(data["shard"]), int(data["start"]), int(data["stop"]), int(data["output_frames"]), int(data["bytes"]),
                   str(data["sha256"]), dict(data["video"]))
