"""The job spec, pure: written once when a job is created (``job.json``) and read by every actor
(the source, the model and output settings, the shard plan's inputs, the output geometry);
:func:`migrate` brings an older job.json (``spec_version``) to the current shape at load."""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field

from farm import __version__
from farm.config import ModelConfig, OutputConfig
from farm.errors import WeightsError
from farm.jobfiles import read_version
from farm.media import FrameIndex, SourceInfo, effective_mode, frames_per_source_frame, output_field_order, output_index
from farm.plan import EncoderSizing, Geometry, Shard, plan_geometry, plan_parts, plan_shards, snap_window

#: The shape job.json is written in. 0: no ``spec_version``; a job of an early farm may also lack
#: ``farm_version``, ``out`` (the encode settings were the defaults) and the geometry's
#: ``sample_aspect_ratio`` (square pixels). 1: the version stamped, those always present.
SPEC_VERSION = 1


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
    out: OutputConfig = field(default_factory=OutputConfig)  # the encode settings (they key the job)
    # Frame numbers of the scene cuts found near the planned boundaries when the job was created;
    # None for jobs created before scene-aware planning, which keep their plain plan.
    scene_cuts: tuple[int, ...] | None = None
    # The model's scale and the output geometry, computed once at submit from the weights the
    # driver checked; None for jobs created before they were recorded (workers compute them).
    model_scale: int | None = None
    geometry: Geometry | None = None
    # The encoder threads and preset chosen from the cluster's CPUs per GPU when the job first
    # started on GPUs (farm.plan.size_encoder); None: the frame-size rule (CPU jobs, older jobs).
    encoder: EncoderSizing | None = None
    # Frames per planned part of a shard (farm.plan.plan_parts): a shard's parts are committed as
    # they finish, so a drained worker gives its shard back keeping them. None: one part per
    # shard, as jobs created before parts ran (their segments stay as they were).
    part_frames: int | None = None

    def __post_init__(self) -> None:
        if self.part_frames is not None and self.part_frames < 1:
            raise ValueError(f"part_frames must be at least 1, got {self.part_frames}")

    def geometry_for(self, model_scale: int) -> Geometry:
        """The output geometry for a loaded model of ``model_scale``: the recorded one.

        Raises:
            WeightsError: the model loaded here has another scale than the job's (its weights file
                differs from the one the job was submitted with).
        """
        if self.geometry is None or self.model_scale is None:
            s, m = self.source, self.model
            return plan_geometry(s.width, s.height, model_scale, m.scale, m.target, s.sample_aspect_ratio, m.square_pixels)
        if model_scale != self.model_scale:
            raise WeightsError(
                f"the model loaded here is x{model_scale}, job {self.job_id}'s is x{self.model_scale}; "
                "this node has other weights than the job's: copy the submitted files to every node"
            )
        return self.geometry

    def parts(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The planned parts of shard ``[start, stop)`` (see :func:`farm.plan.plan_parts`)."""
        return plan_parts(start, stop, self.part_frames)

    def shards(self) -> list[Shard]:
        """The job's plan: a pure function of this spec (see :mod:`farm.plan`)."""
        n = self.source.num_frames
        if self.scene_cuts is None:
            return plan_shards(n, self.shard_frames)
        return plan_shards(
            n,
            self.shard_frames,
            scene_cuts=self.scene_cuts,
            keyframes=keyframe_frames(self.source),
            window=snap_window(self.shard_frames, frames_per_second(self.source)),
        )

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
        data = {
            "spec_version": SPEC_VERSION,
            "job_id": self.job_id,
            "source": self.source.to_json(),
            "model": self.model.to_json(),
            "shard_frames": self.shard_frames,
            "input_fingerprint": self.input_fingerprint,
            "created": self.created,
            "farm_version": self.farm_version,
            "out": self.out.to_json(),
        }
        if self.scene_cuts is not None:
            data["scene_cuts"] = list(self.scene_cuts)
        if self.geometry is not None:
            data["model_scale"] = self.model_scale
            data["geometry"] = dataclasses.asdict(self.geometry)
        if self.encoder is not None:
            data["encoder"] = self.encoder.to_json()
        if self.part_frames is not None:
            data["part_frames"] = self.part_frames
        return data

    @classmethod
    def from_json(cls, data: dict) -> JobSpec:
        """From job.json as any farm wrote it (see :func:`migrate`).

        Raises:
            KeyError, TypeError, ValueError: not a job spec, or one of a newer farm.
        """
        data = migrate(data)
        return cls(
            job_id=data["job_id"],
            source=SourceInfo.from_json(data["source"]),
            model=ModelConfig.from_json(data["model"]),
            shard_frames=int(data["shard_frames"]),
            input_fingerprint=data["input_fingerprint"],
            created=float(data["created"]),
            farm_version=data["farm_version"],
            out=OutputConfig.from_json(data["out"]),
            scene_cuts=tuple(int(c) for c in data["scene_cuts"]) if data["scene_cuts"] is not None else None,
            model_scale=data["model_scale"],
            geometry=_geometry(data["geometry"]) if data["geometry"] is not None else None,
            encoder=EncoderSizing.from_json(data["encoder"]) if data["encoder"] is not None else None,
            part_frames=int(data["part_frames"]) if data["part_frames"] is not None else None,
        )


def migrate(data: dict) -> dict:
    """job.json of any version, in the current shape: what an older job lacks filled in as that
    job ran it, and the parts a job may go without (scene cuts, geometry, encoder sizing, part
    length) present, None when absent. Those stay optional because their absence is itself a rule
    (a plain plan, the workers' own geometry, the frame-size encoder rule, one part per shard),
    not only an older shape.

    Raises:
        ValueError: a newer farm's job.json.
    """
    version = read_version(data, SPEC_VERSION, "job.json")
    data = {"scene_cuts": None, "model_scale": None, "geometry": None, "encoder": None, "part_frames": None, **data}
    if version == 0:
        data.setdefault("farm_version", "?")
        data.setdefault("out", OutputConfig().to_json())
        if data["geometry"]:
            data["geometry"] = {"sample_aspect_ratio": (1, 1), **data["geometry"]}
        else:
            data["geometry"] = None
    data["spec_version"] = SPEC_VERSION
    return data


def _geometry(data: dict) -> Geometry:
    return Geometry(float(data["outscale"]), tuple(data["picture"]), tuple(data["canvas"]),  # type: ignore[arg-type]
                    tuple(data["sample_aspect_ratio"]))  # type: ignore[arg-type]


def frames_per_second(source: SourceInfo) -> float:
    """The source's mean frame rate (:attr:`farm.media.FrameIndex.mean_rate`), as the snap
    window and the preview's scene search take it."""
    return float(source.index.mean_rate)


def keyframe_frames(source: SourceInfo) -> list[int]:
    """Frame numbers of the source's keyframes that are frames (not discard-only seek points)."""
    pts = source.index.pts
    out = []
    for k in source.index.keyframe_pts:
        i = bisect.bisect_left(pts, k)
        if i < len(pts) and pts[i] == k:
            out.append(i)
    return out
