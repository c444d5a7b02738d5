"""Cluster mode on a real multi-node Ray cluster built on this machine (a head without GPUs and
nodes with logical GPUs, all on 127.0.0.1): spreading, node loss, driver loss, whole-cluster loss,
poison shards, hung workers, concurrent jobs."""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.plan import EncoderSizing
from farm.storage.jobdir import JobDir
from farm.testing.clips import make_test_clip
from farm.testing.cluster import SimCluster, ledger, receipts, wait_for_receipts
from tests.helpers import decode_all, kill_group, packet_pts, run_farm, start_farm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FAST = "fake:scale=2,ms=40"
SLOW = "fake:scale=2,ms=150"
#: Lossy chunks: a redone shard must give the same bytes on another node (pinned threads and SIMD).
X264 = ("--codec", "x264")


def job_args(clip: str, out: str, jobs: str, model: str = FAST, *extra: str) -> list[str]:
    return ["submit", clip, "-o", out, "--jobs-root", jobs, "--model", model, "--no-face", "--codec", "ffv1",
            "--shard-frames", "4", "--quiet", *extra]


def same_video(a: str, b: str) -> None:
    assert packet_pts(a) == packet_pts(b)
    ta, fa = decode_all(a)
    tb, fb = decode_all(b)
    assert ta == tb and len(fa) == len(fb) and all((x == y).all() for x, y in zip(fa, fb))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return make_test_clip(str(tmp_path_factory.mktemp("cl") / "clip.mkv"), frames=48, size=(32, 24), vfr=True, audio=True)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> str:
    return make_test_clip(str(tmp_path_factory.mktemp("cl") / "long.mkv"), frames=120, size=(32, 24), audio=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, clip, long_clip, local_ray) -> dict[str, str]:
    """The same jobs run on this machine alone, without any failure: in this process, on the
    session's embedded Ray (a process and a Ray of their own would each cost seconds and check
    nothing here)."""
    d = tmp_path_factory.mktemp("ref")
    out = {}
    for name, src, extra in (("clip", clip, ()), ("long", long_clip, ()), ("long-x264", long_clip, X264)):
        out[name] = str(d / f"{name}.mkv")
        result = CliRunner().invoke(main, job_args(src, out[name], str(d / "jobs"), FAST, "--workers", "2", *extra), catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return out


def same_bytes(a: str, b: str) -> None:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read(), f"{a} and {b} differ"


@pytest.fixture(scope="module")
def cluster():
    with SimCluster(gpu_nodes=2) as c:
        yield c


def test_shards_spread_over_both_gpu_nodes(cluster, clip, reference, tmp_path):
    """A job sent to a cluster with two GPU machines uses both, and its output is exactly the
    single-machine run's. The encoder sizing its nodes allow (2 CPUs per GPU: one thread) is in
    the job's spec before the first chunk, and every chunk was made with it."""
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    result = run_farm(job_args(clip, out, jobs, FAST, "--address", cluster.address))
    assert result.returncode == 0, result.stderr
    same_video(out, reference["clip"])
    nodes = Counter(d["node"] for d in ledger(jobs)["done"].values())
    assert len(nodes) == 2 and min(nodes.values()) >= 3, nodes
    (job_id,) = os.listdir(jobs)
    spec = JobDir(jobs, job_id).read_spec()
    assert spec.encoder == EncoderSizing(1, None, 2, None, "1 thread (2 CPUs per GPU less 2 for the rest)")
    assert {r["video"]["settings"]["threads"] for r in receipts(jobs)} == {1}


def test_driver_sigkill_then_resume_then_same_submit(cluster, long_clip, reference, tmp_path):
    """The machine running the driver dies twice mid-job: `farm resume JOB` continues after the
    first kill, the same `farm submit` after the second; no shard done before a kill is redone."""
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    submit = job_args(long_clip, out, jobs, SLOW, "--address", cluster.address)
    proc = start_farm(submit, str(tmp_path / "first.log"))
    wait_for_receipts(jobs, 3, proc)
    kill_group(proc)
    done_before = {r["shard"]: r["segment"] for r in receipts(jobs)}
    job_id = json.loads(run_farm(["ls", "--jobs-root", jobs, "--json"]).stdout)[0]["job_id"]

    proc = start_farm(["resume", job_id, "--jobs-root", jobs, "--address", cluster.address, "--quiet"], str(tmp_path / "resume.log"))
    wait_for_receipts(jobs, len(done_before) + 3, proc)
    kill_group(proc)
    for r in receipts(jobs):
        done_before.setdefault(r["shard"], r["segment"])
    assert len(done_before) < 30, "the kills must land mid-job"

    result = run_farm(submit)
    assert result.returncode == 0, result.stderr
    same_video(out, reference["long"])
    done = ledger(jobs)["done"]
    for shard, segment in done_before.items():
        assert done[str(shard)]["segment"] == segment, f"shard {shard} was redone"
    assert Counter(r["shard"] for r in receipts(jobs)) == Counter(range(30)), "each shard committed once"


def test_poison_shard_fails_the_job_with_a_report(cluster, clip, tmp_path):
    """A frame that crashes the model on every machine: retried on the other node, then the job
    fails naming the shard, its frames, the nodes and the error; status says failed."""
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    # The poison is in the last shard, behind 7 s of one worker's work, so that both nodes' workers
    # have joined when it first fails (a retry goes to the same node while it is the only one).
    result = run_farm(job_args(clip, out, jobs, "fake:scale=2,ms=150,fail_frames=45", "--address", cluster.address, "--max-attempts", "2"))
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    job_id = json.loads(run_farm(["ls", "--jobs-root", jobs, "--json"]).stdout)[0]["job_id"]
    poisoned = next(s for s in JobDir(jobs, job_id).read_spec().shards() if s.start <= 45 < s.stop)
    assert f"{poisoned} failed" in line and "all 2 attempts failed" in line and "frame 45" in line, line
    nodes_tried = line.split("nodes tried: ")[1].split(";")[0].split(", ")
    assert len(nodes_tried) == 2
    assert not os.path.exists(out)
    status = json.loads(run_farm(["status", "--jobs-root", jobs, "--json"]).stdout)
    assert status["state"] == "failed" and f"shard {poisoned.index}" in status["reason"]
    assert {f["shard"] for f in status["failures"]} == {poisoned.index}


def test_hung_worker_loses_its_lease(cluster, clip, reference, tmp_path):
    """A worker that stops making progress (a hung driver call, a wedged GPU) loses its shard after
    the lease timeout; the shard is redone elsewhere and the output is still exact."""
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    marker = str(tmp_path / "hung-once")
    model = f"fake:scale=2,ms=40,hang_frames=9,hang_once={marker}"
    t0 = time.time()
    result = run_farm(job_args(clip, out, jobs, model, "--address", cluster.address, "--lease-timeout", "4"))
    assert result.returncode == 0, result.stderr
    assert os.path.exists(marker), "the worker did hang"
    same_video(out, reference["clip"])
    failures = ledger(jobs)["failures"]
    assert [f["shard"] for f in failures] == [2] and "lease expired" in failures[0]["error"]
    assert time.time() - t0 < 120


def test_two_jobs_at_once_and_the_same_job_twice(cluster, clip, long_clip, reference, tmp_path):
    """Two users' jobs share the cluster without interfering; the same job submitted twice at once
    yields one coordinator, no double work, and one output."""
    jobs = str(tmp_path / "jobs")
    out_a, out_b = str(tmp_path / "a.mkv"), str(tmp_path / "b.mkv")
    procs = [
        start_farm(job_args(clip, out_a, jobs, FAST, "--address", cluster.address), str(tmp_path / "a1.log")),
        start_farm(job_args(clip, out_a, jobs, FAST, "--address", cluster.address), str(tmp_path / "a2.log")),
        start_farm(job_args(long_clip, out_b, jobs, FAST, "--address", cluster.address), str(tmp_path / "b.log")),
    ]
    for p, log in zip(procs, ("a1", "a2", "b")):
        assert p.wait(timeout=300) == 0, open(tmp_path / f"{log}.log").read()
    same_video(out_a, reference["clip"])
    same_video(out_b, reference["long"])
    listed = json.loads(run_farm(["ls", "--jobs-root", jobs, "--json"]).stdout)
    assert sorted(j["state"] for j in listed) == ["done", "done"]
    attempts = sorted(len(os.listdir(os.path.join(jobs, j["job_id"], "logs"))) for j in listed)
    assert attempts == [12, 30], "one attempt per shard: nothing was done twice"


def test_losing_a_gpu_node_mid_job_and_gaining_another(long_clip, reference, tmp_path):
    """A spot instance is reclaimed mid-job and a replacement joins: the job finishes with the
    exact output (x264 chunks, the file byte for byte), only the shards in flight on the lost node
    are redone, and the new node gets work."""
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    with SimCluster(gpu_nodes=2) as c:
        proc = start_farm(job_args(long_clip, out, jobs, SLOW, "--address", c.address, *X264), str(tmp_path / "driver.log"))
        wait_for_receipts(jobs, 2, proc)
        victim = c.gpu_nodes[0]
        done_before = {r["shard"]: r["segment"] for r in receipts(jobs)}
        c.kill(victim)
        fresh = c.add_gpu_node()
        assert proc.wait(timeout=300) == 0, open(tmp_path / "driver.log").read()
    same_bytes(out, reference["long-x264"])
    lg = ledger(jobs)
    for shard, segment in done_before.items():
        assert lg["done"][str(shard)]["segment"] == segment
    assert Counter(r["shard"] for r in receipts(jobs)) == Counter(range(30))
    redone = [f for f in lg["failures"] if f["error"].startswith("worker lost")]
    assert len(redone) <= 1, redone  # one worker per node: at most one shard was in flight there
    assert fresh.node_id in {d["node"] for d in lg["done"].values()}, "the replacement node got work"


def test_whole_cluster_lost_then_resumed_on_a_new_one(long_clip, reference, tmp_path):
    """The head node dies (taking the whole cluster and the driver with it); on a brand-new cluster
    `farm resume` finishes the job from what is on storage, with the exact output."""
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    with SimCluster(gpu_nodes=2) as c:
        proc = start_farm(job_args(long_clip, out, jobs, SLOW, "--address", c.address), str(tmp_path / "driver.log"))
        wait_for_receipts(jobs, 3, proc)
        kill_group(proc)
    done_before = {r["shard"]: r["segment"] for r in receipts(jobs)}
    job_id = json.loads(run_farm(["ls", "--jobs-root", jobs, "--json"]).stdout)[0]["job_id"]
    with SimCluster(gpu_nodes=2) as c:
        result = run_farm(["resume", job_id, "--jobs-root", jobs, "--address", c.address, "--quiet"])
        assert result.returncode == 0, result.stderr
    same_video(out, reference["long"])
    same_bytes(out, reference["long"])
    lg = ledger(jobs)
    assert all(lg["done"][str(s)]["segment"] == seg for s, seg in done_before.items())
