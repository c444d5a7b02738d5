"""What `farm submit --json` prints: the same keys as before the result was typed, flags only
when set and figures only when known."""

from __future__ import annotations

import pytest

from farm.result import JobResult


def test_a_finished_run_prints_its_mux_figures():
    """A script reading `farm submit --json` after a full run gets the job, the output, its
    frames, bytes, the mux's shift and the driver's coordinator cost; no flags."""
    result = JobResult.of_mux("abc", {"output": "/out/a.mkv", "frames": 48, "bytes": 1234, "shift": 0}, 1.5)
    assert result.to_json() == {"job_id": "abc", "output": "/out/a.mkv", "state": "done", "frames": 48, "bytes": 1234, "shift": 0,
                                "coordinator_ms_per_shard": 1.5}


def test_flags_and_ray_jobs():
    """A resubmit of a finished job says already_done; a follower says followed; a detached Ray
    Job names its submission and the dashboard, even when its job id is not known here."""
    assert JobResult("abc", "a.mkv", already_done=True).to_json() == {"job_id": "abc", "output": "a.mkv", "state": "done", "already_done": True}
    assert JobResult("abc", "a.mkv", followed=True).to_json() == {"job_id": "abc", "output": "a.mkv", "state": "done", "followed": True}
    detached = JobResult(None, "s3://b/a.mkv", state="submitted", submission_id="farm-x-1", dashboard="http://h:8265")
    assert detached.to_json() == {"job_id": None, "output": "s3://b/a.mkv", "state": "submitted", "submission_id": "farm-x-1",
                                  "dashboard": "http://h:8265"}
    with pytest.raises(ValueError, match="names its Ray Job"):
        JobResult("abc", "a.mkv", state="submitted")
    with pytest.raises(ValueError, match="unknown result state 'failed'"):
        JobResult("abc", "a.mkv", state="failed")  # type: ignore[arg-type]
