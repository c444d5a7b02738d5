"""The enhance worker as a plain class (no Ray): a shard becomes one committed segment with a
receipt; a failing frame commits nothing and names the shard and the frame."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from farm.actors.worker import EnhanceWorker
from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.errors import EnhanceError, WeightsError
from farm.job import open_job
from farm.spec import JobSpec
from farm.testing.clips import make_test_clip
from farm.testing.fakes import fake_output
from tests.helpers import decode_all


def job(tmp_path, model: str, frames: int = 20):
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=frames, size=(32, 24), vfr=True)
    cfg = JobConfig(input=clip, output=str(tmp_path / "out.mkv"), model=ModelConfig(model=model, face=False),
                    out=OutputConfig(codec="ffv1"), jobs_root=str(tmp_path / "jobs"), shard_frames=7)
    return clip, open_job(cfg)


def test_run_shard_commits_segment_and_receipt(tmp_path):
    """Frames [7, 14) of a VFR clip, enhanced by the fake model, are exactly the segment's frames."""
    clip, p = job(tmp_path, "fake:scale=2")
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu")
    info = worker.ready()
    assert info["device"] == "cpu" and info["worker"] == "w1"
    receipt = worker.run_shard(1, 7, 14, attempt=1)
    assert (receipt.shard, receipt.frames, receipt.start, receipt.stop) == (1, 7, 7, 14)
    seg_dir = os.path.join(p.job.location, "segments")
    segment = os.path.join(seg_dir, receipt.segment)
    assert os.path.getsize(segment) == receipt.bytes
    with open(os.path.join(seg_dir, receipt.segment.rsplit(".", 1)[0] + ".json")) as f:
        assert json.load(f) == receipt.to_json()
    _, src = decode_all(clip)
    _, got = decode_all(segment)
    assert len(got) == 7
    for frame, out in zip(src[7:14], got):
        assert np.array_equal(out, fake_output(frame, 2, None))
    progress = worker.progress()
    assert progress["shards_done"] == 1 and progress["frames_done"] == 7 and progress["shard"] is None


def test_failing_frame_commits_nothing(tmp_path):
    _, p = job(tmp_path, "fake:scale=2,fail_frames=10")
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu")
    worker.ready()
    with pytest.raises(EnhanceError, match=r"shard 1 \[7, 14\): frame 10: the model failed"):
        worker.run_shard(1, 7, 14, attempt=1)
    seg_dir = os.path.join(p.job.location, "segments")
    assert [n for n in os.listdir(seg_dir) if not n.startswith(".")] == []
    logs = os.listdir(os.path.join(p.job.location, "logs"))
    assert len(logs) == 1
    with open(os.path.join(p.job.location, "logs", logs[0])) as f:
        assert "frame 10" in json.load(f)["error"]
    # The worker is still usable for the next shard.
    assert worker.run_shard(0, 0, 7, attempt=1).frames == 7


def test_worker_that_cannot_read_the_input_says_where(tmp_path):
    """The input is on a disk only the submitting machine has: the worker refuses to start,
    naming itself, its host and the input."""
    import socket

    from farm.errors import StorageError

    clip, p = job(tmp_path, "fake:scale=2")
    os.rename(clip, clip + ".moved")
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w7", "cpu")
    with pytest.raises(StorageError, match=f"worker w7 on {socket.gethostname()} cannot read the input.*clip.mkv"):
        worker.ready()


def test_geometry_is_computed_once_at_submit_and_used_by_every_worker(tmp_path):
    """A 1080p-target job: the driver works the geometry out once, from the weights it checked, and
    records it in the job spec; a worker uses the recorded geometry (no recomputation of its own),
    and a worker whose model has another scale than the job's is refused, naming both."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=8, size=(32, 24))
    cfg = JobConfig(input=clip, output=str(tmp_path / "out.mkv"), model=ModelConfig(model="fake:scale=2", face=False, target=(96, 54)),
                    out=OutputConfig(codec="ffv1"), jobs_root=str(tmp_path / "jobs"), shard_frames=4)
    p = open_job(cfg)
    spec = p.job.read_spec()
    assert (spec.model_scale, spec.geometry) == (2, p.geometry) and spec.geometry.canvas == (96, 54)
    assert JobSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu")
    worker.ready()
    assert worker.enhancer.geometry == p.geometry
    with pytest.raises(WeightsError, match=r"the model loaded here is x4, job .*'s is x2"):
        spec.geometry_for(4)
    older = dataclasses.replace(spec, model_scale=None, geometry=None)  # a job created before the record
    assert older.geometry_for(2) == p.geometry
