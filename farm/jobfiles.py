"""What a job directory's small files hold, as nouns (pure): ``submit.json`` (the last submit) and
``outputs.json`` (each output the job wrote). Each file carries a ``spec_version``; one
``migrate_*`` per file brings an older shape to the current one at load, so readers see one shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from farm.config import OutputConfig

#: The shape ``submit.json`` is written in. 0: no ``spec_version`` (and, before farm recorded
#: them, no speed ``settings``); 1: the version stamped.
SUBMIT_VERSION = 1
#: The shape of one ``outputs.json`` entry. 0: no ``spec_version``; 1: the version stamped (the
#: entry's other keys are the same in both).
OUTPUT_VERSION = 1


def read_version(data: dict[str, Any], current: int, what: str) -> int:
    """The ``spec_version`` of a job file's ``data`` (0 when unstamped).

    Raises:
        ValueError: a version this farm does not know (a newer farm's file).
    """
    version = int(data.get("spec_version", 0))
    if not 0 <= version <= current:
        raise ValueError(f"{what} has spec_version {version}; this farm reads up to {current}: upgrade farm")
    return version


@dataclass(frozen=True, slots=True)
class SpeedSettings:
    """The speed settings a submit ran with (they change no pixel): what ``farm tune`` set, or the
    user. Kept for people and scripts; no rule reads them back."""

    workers: int | None
    gpus_per_worker: float
    batch_frames: int | None
    precision: str
    compile: bool
    tile: int
    tuned_from: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers <= 0:
            raise ValueError(f"speed settings with {self.workers=}; a submit runs at least one worker")
        if self.gpus_per_worker <= 0 or self.tile < 0:
            raise ValueError(f"speed settings with {self.gpus_per_worker=}, {self.tile=}")

    def to_json(self) -> dict[str, Any]:
        return {"workers": self.workers, "gpus_per_worker": self.gpus_per_worker, "batch_frames": self.batch_frames,
                "precision": self.precision, "compile": self.compile, "tile": self.tile, "tuned_from": self.tuned_from}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpeedSettings:
        return cls(data["workers"], float(data["gpus_per_worker"]), data["batch_frames"], data["precision"],
                   bool(data["compile"]), int(data["tile"]), data.get("tuned_from"))


@dataclass(frozen=True, slots=True)
class SubmitRecord:
    """A job's last submit, for ``farm resume JOB``: where it wrote, with what encode settings,
    from which input, and (a preview clip's job) which source frames ``[start, stop)``."""

    output: str  # normalized
    out: OutputConfig
    input: str
    settings: SpeedSettings | None = None  # None: submitted before farm recorded them
    frames: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.output or not self.input:
            raise ValueError(f"a submit record needs an input and an output, got {self.input=}, {self.output=}")
        if self.frames is not None and not 0 <= self.frames[0] < self.frames[1]:
            raise ValueError(f"a submit record's frames must be [start, stop) with 0 <= start < stop, got {self.frames}")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"spec_version": SUBMIT_VERSION, "output": self.output, "out": self.out.to_json(),
                                "input": self.input}
        if self.settings is not None:
            data["settings"] = self.settings.to_json()
        if self.frames is not None:
            data["frames"] = list(self.frames)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubmitRecord:
        """From ``submit.json`` as any farm wrote it.

        Raises:
            KeyError, TypeError, ValueError: not a submit record, or one of a newer farm.
        """
        data = migrate_submit(data)
        return cls(
            output=data["output"],
            out=OutputConfig.from_json(data["out"]),
            input=data["input"],
            settings=SpeedSettings.from_json(data["settings"]) if data["settings"] is not None else None,
            frames=tuple(data["frames"]) if data["frames"] else None,  # type: ignore[arg-type]
        )


def migrate_submit(data: dict[str, Any]) -> dict[str, Any]:
    """``submit.json`` of any version, in the current shape (optional parts present, None when absent)."""
    read_version(data, SUBMIT_VERSION, "submit.json")
    data = {"settings": None, "frames": None, **data}
    data["spec_version"] = SUBMIT_VERSION
    return data


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One output a job wrote: with which encode settings, and the file's size and mtime just
    after (so a later submit can tell the file is still the one written); ``at``: wall clock, for people."""

    out: OutputConfig
    bytes: int
    mtime_ns: int
    at: float

    def __post_init__(self) -> None:
        if self.bytes < 0:
            raise ValueError(f"an output of {self.bytes} bytes")

    def to_json(self) -> dict[str, Any]:
        return {"spec_version": OUTPUT_VERSION, "out": self.out.to_json(), "bytes": self.bytes, "mtime_ns": self.mtime_ns,
                "at": self.at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputRecord:
        """From an ``outputs.json`` entry as any farm wrote it.

        Raises:
            KeyError, TypeError, ValueError: not an output record, or one of a newer farm.
        """
        data = migrate_output(data)
        return cls(OutputConfig.from_json(data["out"]), int(data["bytes"]), int(data["mtime_ns"]), float(data["at"]))


def migrate_output(data: dict[str, Any]) -> dict[str, Any]:
    """An ``outputs.json`` entry of any version, in the current shape (version 0 differs only by
    the missing stamp)."""
    read_version(data, OUTPUT_VERSION, "an outputs.json entry")
    return {**data, "spec_version": OUTPUT_VERSION}
