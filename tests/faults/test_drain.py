"""A spot node's notice on a real (embedded) Ray: SIGTERM to a worker actor's process mid-shard
makes it commit its finished parts and give the shard back; the job still ends byte-identical."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.storage.jobdir import JobDir
from farm.testing.clips import make_test_clip
from farm.testing.cluster import SimCluster, ledger
from tests.helpers import start_farm

pytestmark = [pytest.mark.ray]

MODEL = "fake:scale=2,ms=10"


def submit(clip: str, out: str, jobs: str, model: str) -> None:
    args = ["submit", clip, "-o", out, "--jobs-root", jobs, "--model", model, "--no-face", "--codec", "x264",
            "--shard-frames", "150", "--workers", "1", "--quiet"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def signal_when_written(pid_file: str, sent: list[int], timeout_s: float = 60) -> threading.Thread:
    """SIGTERM the process whose id appears in ``pid_file`` (the worker writes it mid-part)."""

    def run() -> None:
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(pid_file) and time.monotonic() < deadline:
            time.sleep(0.02)
        if os.path.exists(pid_file):
            with open(pid_file) as f:
                pid = int(f.read().split()[0])
            os.kill(pid, signal.SIGTERM)
            sent.append(pid)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigterm_to_a_worker_mid_shard_keeps_its_parts_and_the_output_is_a_solo_runs(local_ray, tmp_path):
    """The cloud gives a spot node notice (SIGTERM to its processes) while its worker is in the
    first of shard 0's two 75-frame parts (150-frame shards, parts of at most 120): the worker
    finishes that part, commits it and gives the shard back; the attempt is not counted and nothing is a failure; its replacement reuses
    the part (it redoes none), and the output file is byte-identical to a run without notice."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=300, size=(32, 24), vfr=True, gop=300)
    submit(clip, str(tmp_path / "solo.mkv"), str(tmp_path / "solo"), MODEL)

    pid_file = str(tmp_path / "worker.pid")
    sent: list[int] = []
    thread = signal_when_written(pid_file, sent)
    submit(clip, str(tmp_path / "drained.mkv"), str(tmp_path / "jobs"), f"{MODEL},pid_at=10,pid_file={pid_file}")
    thread.join(5)
    assert len(sent) == 1

    (job_id,) = os.listdir(tmp_path / "jobs")
    job = JobDir(str(tmp_path / "jobs"), job_id)
    spec = job.read_spec()
    first = spec.shards()[0]
    parts = spec.parts(first.start, first.stop)
    assert len(parts) == 2 and parts[0][0] == 0 and parts[0][1] > 10  # the signal came in the first part
    logs = job.logs(first.index)
    given = [r for r in logs if "given_back" in r]
    finished = [r for r in logs if "receipt" in r]
    assert [r["given_back"] for r in given] == [parts[0][1] - parts[0][0]]
    assert [(r["parts_reused"], r["attempt"]) for r in finished] == [(1, 1)]
    with open(os.path.join(job.location, "ledger.json")) as f:
        ledger = json.load(f)
    assert (ledger["state"], ledger["failures"], ledger["attempts"][str(first.index)]) == ("done", [], 1)
    with open(tmp_path / "solo.mkv", "rb") as a, open(tmp_path / "drained.mkv", "rb") as b:
        assert a.read() == b.read()


def drain_node(address: str, node_id: str, deadline_s: float = 60) -> None:
    """What the autoscaler does for a spot node given notice: GCS DrainNode, reason preemption
    (the call behind the hidden `ray drain-node`)."""
    from ray._raylet import GcsClient
    from ray.core.generated import autoscaler_pb2

    accepted, why = GcsClient(address=address).drain_node(
        node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"), "spot notice",
        int((time.time() + deadline_s) * 1000))
    assert accepted, why


@pytest.mark.slow
def test_ray_draining_a_node_makes_its_worker_give_its_shard_back(local_ray, tmp_path):
    """The autoscaler drains a preempted GPU node (Ray's DrainNode, the node still up until its
    deadline) while its worker is in the first part of shard 0: the driver sees the node in
    Ray's draining list, calls the worker's drain(), the worker commits that part and gives the
    shard back, and the worker on the other node finishes the shard from the kept part. No
    attempt is counted, nothing is a failure, and the output is a solo run's, byte for byte."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=260, size=(32, 24), gop=260)
    args = ["--no-face", "--codec", "x264", "--shard-frames", "130", "--quiet"]
    solo = CliRunner().invoke(main, ["submit", clip, "-o", str(tmp_path / "solo.mkv"), "--jobs-root", str(tmp_path / "solo"),
                                     "--model", "fake:scale=2", "--workers", "1", *args], catch_exceptions=False)
    assert solo.exit_code == 0, solo.output
    out, jobs, pid_file = str(tmp_path / "out.mkv"), str(tmp_path / "jobs"), str(tmp_path / "worker.pid")
    with SimCluster(gpu_nodes=2) as c:
        proc = start_farm(["submit", clip, "-o", out, "--jobs-root", jobs, "--address", c.address,
                           "--model", f"fake:scale=2,ms=70,pid_at=1,pid_file={pid_file}", *args], str(tmp_path / "driver.log"))
        deadline = time.monotonic() + 60
        while not os.path.exists(pid_file) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(pid_file) as f:
            _, node_id = f.read().split()
        drain_node(c.address, node_id)
        assert proc.wait(timeout=120) == 0, open(tmp_path / "driver.log").read()
    lg = ledger(jobs)
    assert (lg["state"], lg["failures"], lg["attempts"]["0"]) == ("done", [], 1)
    assert lg["done"]["0"]["node"] != node_id
    (job_id,) = os.listdir(jobs)
    logs = JobDir(jobs, job_id).logs(0)
    # both attempts are attempt 1: the given-back one was not counted
    got = sorted((r.get("given_back") or 0, r.get("parts_reused"), r["node"] == node_id, r["attempt"]) for r in logs)
    assert got == [(0, 1, False, 1), (65, 0, True, 1)]
    with open(tmp_path / "solo.mkv", "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read()
