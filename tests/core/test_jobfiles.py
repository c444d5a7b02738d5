"""The job directory's nouns and their versions: job.json (JobSpec), submit.json (SubmitRecord) and
an outputs.json entry (OutputRecord) round-trip, and each file as an older farm wrote it (no
``spec_version``) loads to the same values through its one migration."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from farm.config import ModelConfig, OutputConfig
from farm.jobfiles import OUTPUT_VERSION, SUBMIT_VERSION, OutputRecord, SpeedSettings, SubmitRecord
from farm.media import FrameIndex, SourceInfo
from farm.plan import EncoderSizing, Geometry
from farm.spec import SPEC_VERSION, JobSpec


def source() -> SourceInfo:
    index = FrameIndex(Fraction(1, 25), tuple(range(40)), (0, 20))
    return SourceInfo(location="/videos/a.mp4", size_bytes=1000, format_name="mp4", video_stream=0, codec="h264", width=64,
                      height=48, pix_fmt="yuv420p", bits_per_sample=8, rotation=0, index=index, sample_aspect_ratio=(4, 3))


def full_spec() -> JobSpec:
    return JobSpec("j1", source(), ModelConfig(model="fake:scale=2", face=False), 10, "fp", 1.5e9, farm_version="0.9",
                   out=OutputConfig(codec="x265", crf=20), scene_cuts=(19,), model_scale=2,
                   geometry=Geometry(2.0, (128, 96), (128, 96), (4, 3)), encoder=EncoderSizing(6, "fast", 8, 30.0, "8 CPUs per GPU"))


def unstamped(data: dict) -> dict:
    """What the writer before spec_version wrote: today's writer output without the stamp."""
    data = json.loads(json.dumps(data))
    data.pop("spec_version", None)
    return data


def test_a_job_written_before_spec_version_loads_to_the_same_spec():
    """A job directory from a farm without spec_version is resumed by this one: its job.json (the
    same keys, no stamp) reads as the spec that farm wrote, and is stamped when written again."""
    spec = full_spec()
    assert spec.to_json()["spec_version"] == SPEC_VERSION
    assert JobSpec.from_json(unstamped(spec.to_json())) == spec
    plain = JobSpec("j2", source(), ModelConfig(), 10, "fp", 1.5e9)
    assert JobSpec.from_json(unstamped(plain.to_json())) == plain
    assert plain.shards() == JobSpec.from_json(unstamped(plain.to_json())).shards()


def test_an_early_job_spec_gets_the_defaults_it_ran_with():
    """A job from before farm recorded the encode settings, its version or the output's pixel
    aspect: it ran with the default encode settings and square output pixels, and says so."""
    data = unstamped(full_spec().to_json())
    for key in ("out", "farm_version", "scene_cuts", "encoder"):
        del data[key]
    del data["geometry"]["sample_aspect_ratio"]
    spec = JobSpec.from_json(data)
    assert (spec.out, spec.farm_version, spec.scene_cuts, spec.encoder) == (OutputConfig(), "?", None, None)
    assert spec.geometry == Geometry(2.0, (128, 96), (128, 96), (1, 1))


def test_a_newer_farms_files_are_refused_not_misread():
    """A job directory a newer farm wrote names a version this farm does not know: reading it
    fails with a ValueError (the job directory reports it damaged) instead of guessing."""
    with pytest.raises(ValueError, match="upgrade farm"):
        JobSpec.from_json({**full_spec().to_json(), "spec_version": SPEC_VERSION + 1})
    with pytest.raises(ValueError, match="upgrade farm"):
        SubmitRecord.from_json({"spec_version": SUBMIT_VERSION + 1, "output": "/o.mkv", "out": {}, "input": "/i.mp4"})
    with pytest.raises(ValueError, match="upgrade farm"):
        OutputRecord.from_json({"spec_version": OUTPUT_VERSION + 1, "out": {}, "bytes": 1, "mtime_ns": 1, "at": 1.0})


def test_a_submit_record_round_trips_and_reads_the_older_shapes():
    """`farm resume JOB` reads the last submit: this farm's (stamped, with speed settings and a
    clip's frames), the one before the stamp, and the first farm's (output, out and input only)."""
    settings = SpeedSettings(2, 0.5, 8, "fp16", False, 0, "cuda/1080p")
    record = SubmitRecord("/out/a.mkv", OutputConfig(codec="x265"), "/videos/a.mp4", settings, (10, 20))
    data = record.to_json()
    assert data == {"spec_version": SUBMIT_VERSION, "output": "/out/a.mkv", "out": OutputConfig(codec="x265").to_json(), "input": "/videos/a.mp4",
                    "settings": {"workers": 2, "gpus_per_worker": 0.5, "batch_frames": 8, "precision": "fp16", "compile": False,
                                 "tile": 0, "tuned_from": "cuda/1080p"}, "frames": [10, 20]}
    assert SubmitRecord.from_json(json.loads(json.dumps(data))) == record
    assert SubmitRecord.from_json(unstamped(data)) == record
    first = {"output": "/out/a.mkv", "out": {"codec": "x264", "crf": 18, "preset": None, "pix_fmt": None}, "input": "/videos/a.mp4"}
    assert SubmitRecord.from_json(first) == SubmitRecord("/out/a.mkv", OutputConfig(), "/videos/a.mp4")
    with pytest.raises(ValueError):
        SubmitRecord("/out/a.mkv", OutputConfig(), "/videos/a.mp4", frames=(5, 5))


def test_an_output_record_round_trips_and_reads_the_unstamped_shape():
    """outputs.json's entries before the stamp had the same keys: they read as the same record."""
    record = OutputRecord(OutputConfig(crf=20), 1234, 1_700_000_000_123_456_789, 1.7e9)
    data = record.to_json()
    assert data == {"spec_version": OUTPUT_VERSION, "out": OutputConfig(crf=20).to_json(), "bytes": 1234, "mtime_ns": 1_700_000_000_123_456_789, "at": 1.7e9}
    assert OutputRecord.from_json(json.loads(json.dumps(data))) == record
    assert OutputRecord.from_json(unstamped(data)) == record
    with pytest.raises(ValueError):
        OutputRecord(OutputConfig(), -1, 0, 0.0)
