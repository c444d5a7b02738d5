"""Submitting to a remote cluster as a Ray Job: the driver runs on the cluster (it survives the
user's laptop disconnecting), the CLI follows its logs to the end, and the cluster's token
authentication is honoured."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from farm.testing.clips import make_test_clip
from farm.testing.cluster import SimCluster
from tests.helpers import decode_all, packet_pts, run_farm

pytestmark = pytest.mark.ray

TOKEN = "farm-test-token-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def secured_cluster():
    """A cluster with its dashboard on loopback and token authentication on."""
    from ray._raylet import Config

    from farm.session import use_token

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "PATH")}
    use_token(TOKEN)  # the cluster's nodes, and this process while it builds them, use the token
    # The job's entrypoint is `python -m farm`, resolved on the cluster's own PATH.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    try:
        with SimCluster(gpu_nodes=2, dashboard=True) as cluster:
            yield cluster
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Config.initialize("")


def laptop_env() -> dict:
    """The user's machine: no token in its environment."""
    env = dict(os.environ)
    env.pop("RAY_AUTH_MODE", None)  # a user who has not set anything up
    env.pop("RAY_AUTH_TOKEN", None)
    return env


@pytest.mark.slow
def test_ray_job_needs_the_token_and_then_runs_on_the_cluster(secured_cluster, tmp_path):
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=24, size=(32, 24), audio=True)
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    args = ["submit", clip, "-o", out, "--jobs-root", jobs, "--model", "fake:scale=2,ms=20", "--no-face",
            "--codec", "ffv1", "--shard-frames", "4", "--address", secured_cluster.dashboard_url]

    refused = run_farm(args, env=laptop_env())
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()] and "--token" in refused.stderr
    assert not os.path.exists(out)

    done = run_farm(args + ["--token", TOKEN], env=laptop_env())
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout and "frames (100%)" in done.stdout  # the driver's progress, followed
    assert packet_pts(out) == packet_pts(clip)
    _, frames = decode_all(out)
    assert len(frames) == 24 and frames[0].shape == (48, 64, 3)

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(secured_cluster.dashboard_url, headers={"Authorization": f"Bearer {TOKEN}"})
    (job,) = [j for j in client.list_jobs() if (j.metadata or {}).get("farm_output") == out]
    status = json.loads(run_farm(["status", "--jobs-root", jobs, "--json"]).stdout)
    assert job.metadata["farm_input"] == clip and job.metadata["farm_job_id"] == status["job_id"]
    assert job.submission_id.startswith(f"farm-{status['job_id']}")


def test_detach_returns_at_once_and_the_job_finishes(secured_cluster, tmp_path):
    """The laptop submits and disconnects; the job carries on without it."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=24, size=(32, 24), audio=False)
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    t0 = time.time()
    result = run_farm(["submit", clip, "-o", out, "--jobs-root", jobs, "--model", "fake:scale=2,ms=100", "--no-face",
                       "--codec", "ffv1", "--shard-frames", "4", "--address", secured_cluster.dashboard_url,
                       "--token", TOKEN, "--detach", "--json"], env=laptop_env())
    assert result.returncode == 0, result.stderr
    submitted = json.loads(result.stdout)
    assert submitted["state"] == "submitted" and not os.path.exists(out)
    deadline = t0 + 180
    while not os.path.exists(out) and time.time() < deadline:
        time.sleep(0.5)
    status = json.loads(run_farm(["status", "--jobs-root", jobs, "--json"]).stdout)
    assert status["state"] == "done" and status["frames_done"] == 24 and status["job_id"] == submitted["job_id"]
    assert packet_pts(out) == packet_pts(clip)
