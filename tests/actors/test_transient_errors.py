"""A worker that cannot read the source for a moment (an automount gap, a network share that
went away) reports a retryable storage error, so the shard is retried, not the job aborted."""

from __future__ import annotations

import os

import pytest

from farm.actors.worker import EnhanceWorker
from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.errors import StorageError
from farm.job import open_job
from farm.testing.clips import make_test_clip


def test_source_gone_for_a_moment_is_retryable(tmp_path):
    """The source's share is unmounted while a shard runs (it was readable when the job was
    prepared and when the worker started): the shard fails with a retryable StorageError naming
    the shard; back in place, the same worker finishes the shard."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=8, size=(32, 24))
    p = open_job(JobConfig(input=clip, output=str(tmp_path / "out.mkv"), model=ModelConfig(model="fake:scale=2", face=False),
                          out=OutputConfig(codec="ffv1"), jobs_root=str(tmp_path / "jobs"), shard_frames=4))
    p.owner.release()
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu")
    worker.ready()
    os.rename(clip, clip + ".away")
    with pytest.raises(StorageError, match=r"^shard 0 \[0, 4\): input .* does not exist") as caught:
        worker.run_shard(0, 0, 4, attempt=1)
    assert caught.value.retryable
    os.rename(clip + ".away", clip)
    assert worker.run_shard(0, 0, 4, attempt=2).frames == 4
