"""The job commands users run while a job is going: status (from the job directory alone), ls,
cancel, resume, and a shard's attempt logs."""

from __future__ import annotations

import json
import os
import time

import pytest

from farm.storage.jobdir import JobDir
from farm.testing import make_test_clip
from farm.testing.cluster import ledger, receipts, wait_for_receipts
from tests.helpers import packet_pts, run_farm, start_farm

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_status_cancel_resume(tmp_path):
    """Watch a job, cancel it (workers stop, work is kept), then resume it to the end."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=80, size=(32, 24), audio=True)
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    proc = start_farm(["submit", clip, "-o", out, "--jobs-root", jobs, "--model", "fake:scale=2,ms=150", "--no-face",
                       "--codec", "ffv1", "--shard-frames", "4", "--workers", "2"], str(tmp_path / "driver.log"))
    wait_for_receipts(jobs, 2, proc)
    deadline = time.time() + 60
    while True:  # the coordinator writes its live figures every few seconds
        before = ledger(jobs)
        status = json.loads(run_farm(["status", "--jobs-root", jobs, "--json"]).stdout)
        after = ledger(jobs)
        if (status["fps"] > 0 and len(status["workers"]) == 2) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert status["state"] == "running" and status["shards_total"] == 20 and status["frames_total"] == 80
    # status reads the same ledger snapshot the coordinator wrote just before or just after it
    assert (status["shards_done"], status["frames_done"]) in {
        (len(s["done"]), sum(d["frames"] for d in s["done"].values())) for s in (before, after)
    }
    assert status["fps"] > 0 and len(status["workers"]) == 2
    text = run_farm(["status", "--jobs-root", jobs]).stdout
    assert status["job_id"] in text and "worker   w" in text

    job_id = status["job_id"]
    cancel = run_farm(["cancel", job_id, "--jobs-root", jobs])
    assert cancel.returncode == 0 and "cancel requested" in cancel.stdout
    assert proc.wait(timeout=60) == 1
    assert "cancelled" in open(tmp_path / "driver.log").read()
    status = json.loads(run_farm(["status", job_id, "--jobs-root", jobs, "--json"]).stdout)
    assert status["state"] == "cancelled" and 0 < status["shards_done"] < 20
    kept = {r["shard"]: r["segment"] for r in receipts(jobs)}

    listed = json.loads(run_farm(["ls", "--jobs-root", jobs, "--json"]).stdout)
    assert [(j["job_id"], j["state"]) for j in listed] == [(job_id, "cancelled")]

    resumed = run_farm(["resume", job_id, "--jobs-root", jobs, "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    assert packet_pts(out) == packet_pts(clip)
    final = ledger(jobs)
    assert final["state"] == "done"
    assert all(final["done"][str(s)]["segment"] == seg for s, seg in kept.items())

    logs = json.loads(run_farm(["status", job_id, "--jobs-root", jobs, "--shard", "3"]).stdout)
    shard3 = JobDir(jobs, job_id).read_spec().shards()[3]  # boundaries may sit on the source's keyframes
    assert len(logs) == 1 and logs[0]["shard"] == 3 and logs[0]["frames"] == [shard3.start, shard3.stop]
    assert set(logs[0]["timings"]) == {"decode_s", "enhance_s", "encode_s"}


def test_status_of_unknown_job_is_one_line(tmp_path):
    result = run_farm(["status", "nope-123", "--jobs-root", str(tmp_path)])
    assert result.returncode == 1 and result.stderr.strip() == f"error: no job nope-123 under {tmp_path}; `farm ls --jobs-root {tmp_path}` lists the jobs"
    assert not os.listdir(tmp_path)
