"""Cluster mode on real hosts: five Linux namespace machines on one bridge, each with its own
address, processes, /tmp and /dev/shm, sharing one directory as NFS would, mounted at /mnt/jobs on
some and /srv/farm on others. The Ray cluster is started with `ray start` as the shipped configs
start it: a head with no CPU and no GPU, and two GPU machines (one logical GPU, one CPU each). The
user's machines c1 and c2 are not part of the cluster: they submit Ray Jobs to the head's dashboard
or drive the job through Ray Client. Each scenario's output is compared, byte for byte, with a
failure-free run of the same job on c1 alone.

The hosts are built once per module (about a minute of `ray start`); scenarios that break a
machine give it back (rebooted, rejoined) before the next one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from farm.storage.jobdir import JobDir
from farm.storage.queuedir import QueueDir
from farm.testing.cluster import job_segments, ledger, receipts, wait_for_receipts
from farm.testing.netns import Hosts, start_cluster, unavailable_reason

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FAST = "fake:scale=2,ms=40"
SLOW = "fake:scale=2,ms=200"
FRAMES = 48
SHARD_FRAMES = 4
SHARDS = FRAMES // SHARD_FRAMES


def job_args(src: str, out: str, jobs: str, model: str = FAST, *extra: str) -> list[str]:
    return ["submit", src, "-o", out, "--jobs-root", jobs, "--model", model, "--no-face", "--codec", "ffv1",
            "--shard-frames", str(SHARD_FRAMES), "--quiet", *extra]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """The five machines, the share (with the input clip in media/), the cluster, and the
    failure-free reference output (``net.reference``, a path in the share)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    from farm.testing.clips import make_test_clip

    share = tmp_path_factory.mktemp("share")
    os.makedirs(share / "media")
    make_test_clip(str(share / "media" / "clip.mkv"), frames=FRAMES, size=(64, 48), vfr=True, audio=True)
    both = {"/mnt/jobs": "", "/srv/farm": ""}  # the cluster's machines have the share at both paths
    with Hosts(str(share), lifetime_s=1500) as hosts:
        head = hosts.add("head", both)
        head.ray_head_cpus_dev = 1
        gpus = [hosts.add("gpu1", both), hosts.add("gpu2", both)]
        c1 = hosts.add("c1", {"/mnt/jobs": ""})
        hosts.add("c2", {"/srv/farm": ""})
        reference: dict = {}
        ref = threading.Thread(target=lambda: reference.update(result=c1.farm(
            job_args("/mnt/jobs/media/clip.mkv", "/mnt/jobs/reference.mkv", "/tmp/work/ref-jobs", FAST, "--workers", "2"))))
        ref.start()
        start_cluster(head, gpus)
        ref.join()
        assert reference["result"].returncode == 0, reference["result"].stderr
        hosts.reference = str(share / "reference.mkv")
        yield hosts


def on_share(net, path: str) -> str:
    """A host path under /mnt/jobs or /srv/farm, as this test process sees it."""
    for mount in ("/mnt/jobs", "/srv/farm"):
        if path.startswith(mount + "/"):
            return os.path.join(net.shared, path[len(mount) + 1 :])
    raise ValueError(path)


def scenario(net, name: str) -> str:
    """A fresh directory on the share for one scenario's output and jobs root (its name)."""
    os.makedirs(os.path.join(net.shared, name))
    return name


def same_bytes(a: str, b: str) -> None:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read(), f"{a} and {b} differ"


def gpu_node_ids(net) -> dict[str, str]:
    """Ray node id -> host name, for the GPU machines."""
    ips = {h.ip: h.name for h in net.hosts.values()}
    return {n["id"]: ips[n["ip"]] for n in net.hosts["head"].ray_nodes() if n["alive"] and "GPU" in n["resources"]}


def test_ray_job_from_off_the_cluster_onto_a_cpu_less_head(net):
    """A user on their own machine submits a Ray Job to a cluster whose head has no CPU and no GPU
    (as cluster/aws-gpu.yaml ships it): both GPU machines do shards, and the output is where the
    user asked for it (on the share), identical to a failure-free single-machine run."""
    c1, head = net.hosts["c1"], net.hosts["head"]
    d = scenario(net, "a")
    out, jobs = f"/mnt/jobs/{d}/out.mkv", f"/mnt/jobs/{d}/jobs"
    result = c1.farm(job_args("/mnt/jobs/media/clip.mkv", out, jobs) + ["--address", head.dashboard_url], timeout_s=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout
    same_bytes(on_share(net, out), net.reference)
    hosts = Counter(gpu_node_ids(net).get(d["node"], d["node"]) for d in ledger(on_share(net, jobs))["done"].values())
    assert set(hosts) == {"gpu1", "gpu2"} and sum(hosts.values()) == SHARDS, hosts


def start_job(net, host, args: list[str], name: str):
    """``farm submit`` on ``host`` in the background, its output in the share's ``name``.log."""
    return host.start_farm(args, os.path.join(net.shared, f"{name}.log"), timeout_s=400)


def log_of(net, name: str) -> str:
    with open(os.path.join(net.shared, f"{name}.log"), errors="replace") as f:
        return f.read()[-4000:]


def finish(net, proc, name: str, timeout_s: float = 240) -> int:
    """The exit status of a background submit; one that does not end in time is killed (and its
    Ray Job stopped) and counts as a hang."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
        raise AssertionError(f"{name}: the job did not finish within {timeout_s:.0f} s: {log_of(net, name)}") from None
    finally:
        stop_ray_jobs(net)


def stop_ray_jobs(net) -> None:
    """Stop every Ray Job still running on the cluster (a scenario that failed leaves none behind)."""
    code = ("import sys; from ray.job_submission import JobSubmissionClient; c = JobSubmissionClient(sys.argv[1]); "
            "[c.stop_job(j.submission_id) for j in c.list_jobs() if not j.status.is_terminal()]")
    head = net.hosts["head"]
    head.run([head.env()["PATH"].split(":")[0] + "/python", "-c", code, head.dashboard_url], timeout_s=60)


def kept(jobs_share: str, before: dict[int, str]) -> None:
    """Shards done before the fault were not redone: the ledger still names their segments."""
    done = ledger(jobs_share)["done"]
    assert {s: done[str(s)]["segment"] for s in before} == before


def strike_mid_job(net, d: str, strike, recover) -> str:
    """A slow job from c1 through the head's dashboard; once two shards are done, ``strike`` (a
    machine's fault), then ``recover`` whatever happens. The job must finish with the reference
    output and keep every shard done before the strike. Returns the jobs root, as seen here."""
    c1, head = net.hosts["c1"], net.hosts["head"]
    scenario(net, d)
    out, jobs = f"/mnt/jobs/{d}/out.mkv", f"/mnt/jobs/{d}/jobs"
    proc = start_job(net, c1, job_args("/mnt/jobs/media/clip.mkv", out, jobs, SLOW) + ["--address", head.dashboard_url], d)
    try:
        wait_for_receipts(on_share(net, jobs), 2, proc, timeout=180)
        before = {r["shard"]: r["segment"] for r in receipts(on_share(net, jobs))}
        strike()
        code = finish(net, proc, d)
    finally:
        recover()
    assert code == 0, log_of(net, d)
    same_bytes(on_share(net, out), net.reference)
    kept(on_share(net, jobs), before)
    return on_share(net, jobs)


def test_a_gpu_machine_partitioned_mid_job(net):
    """A GPU machine's network link goes down mid-job (a switch port fails; the machine and its
    worker run on, unreachable): Ray declares it dead, its shard in flight is redone on the other
    machine, and the output is identical to a failure-free run."""
    victim = net.hosts["gpu1"]
    strike_mid_job(net, "b", victim.cut, lambda: (victim.heal(), victim.rejoin()))


def test_a_gpu_machine_crashes_mid_job(net):
    """A GPU machine crashes mid-job (every process killed at once, /tmp gone): the job finishes
    on the other machine with the identical output, keeping every shard done before the crash."""
    victim = net.hosts["gpu2"]
    jobs = strike_mid_job(net, "c", victim.kill, victim.rejoin)
    redone = [f for f in ledger(jobs)["failures"] if "lost" in f["error"] or "gone" in f["error"]]
    assert len(redone) <= 1, redone  # one worker per machine: at most one shard was in flight there


def coordinators(head) -> set[str]:
    """PIDs (on the head) of coordinator actor processes."""
    return set(head.run(["pgrep", "-f", "^ray::(Coordinator|farm-coordinator)"]).stdout.split())


def test_the_coordinator_killed_mid_job(net):
    """The job's coordinator process on the head dies mid-job (Ray restarts the actor): the
    restarted coordinator learns the running workers again (no hang), and the job finishes in
    bounded time with the identical output, every shard done and none done before the kill redone."""
    c1, head = net.hosts["c1"], net.hosts["head"]
    d = scenario(net, "d")
    out, jobs = f"/mnt/jobs/{d}/out.mkv", f"/mnt/jobs/{d}/jobs"
    older = coordinators(head)  # of earlier scenarios' jobs, if any is left
    proc = start_job(net, c1, job_args("/mnt/jobs/media/clip.mkv", out, jobs, SLOW) + ["--address", head.dashboard_url], d)
    wait_for_receipts(on_share(net, jobs), 3, proc, timeout=180)
    before = {r["shard"]: r["segment"] for r in receipts(on_share(net, jobs))}
    (pid,) = coordinators(head) - older
    assert head.run(["kill", "-9", pid]).returncode == 0
    code = finish(net, proc, d, timeout_s=90)
    assert code == 0, log_of(net, d)
    same_bytes(on_share(net, out), net.reference)
    lg = ledger(on_share(net, jobs))
    assert lg["state"] == "done" and sorted(int(k) for k in lg["done"]) == list(range(SHARDS))
    kept(on_share(net, jobs), before)


def test_two_submitters_race_from_hosts_with_different_mount_paths(net):
    """Two users submit the same job at once from two machines that mount the share at different
    paths (/mnt/jobs on c1, /srv/farm on c2): one driver works and the other follows, every shard
    is done once, both succeed, and the one output is identical to a failure-free run."""
    c1, c2, head = net.hosts["c1"], net.hosts["c2"], net.hosts["head"]
    d = scenario(net, "e")
    procs = [start_job(net, host, job_args(f"{root}/media/clip.mkv", f"{root}/{d}/out.mkv", f"{root}/{d}/jobs")
                       + ["--address", head.dashboard_url], f"{d}-{host.name}")
             for host, root in ((c1, "/mnt/jobs"), (c2, "/srv/farm"))]
    codes = [finish(net, p, f"{d}-{h}") for p, h in zip(procs, ("c1", "c2"))]
    assert codes == [0, 0], log_of(net, f"{d}-c1") + log_of(net, f"{d}-c2")
    same_bytes(os.path.join(net.shared, d, "out.mkv"), net.reference)
    jobs = os.path.join(net.shared, d, "jobs")
    assert Counter(r["shard"] for r in receipts(jobs)) == Counter(range(SHARDS)), "each shard committed once"
    (job_id,) = os.listdir(jobs)
    assert len(os.listdir(os.path.join(jobs, job_id, "logs"))) == SHARDS, "one attempt per shard"


def test_local_output_path_with_the_driver_off_the_cluster(net):
    """A user's machine drives the job through Ray Client and names an output in its own /tmp,
    which no cluster machine can see: the output lands there, identical to a failure-free run, or
    the submit is refused in one line before any GPU work."""
    c1, head = net.hosts["c1"], net.hosts["head"]
    d = scenario(net, "f")
    jobs = f"/mnt/jobs/{d}/jobs"
    args = job_args("/mnt/jobs/media/clip.mkv", "/tmp/work/f.mkv", jobs) + ["--address", head.client_url]
    result = c1.farm(args, timeout_s=300)
    if result.returncode == 0:
        same_bytes(c1.file("/tmp/work/f.mkv"), net.reference)
    else:
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and "/tmp/work/f.mkv" in lines[0], result.stderr[-3000:]
        assert receipts(on_share(net, jobs)) == [], "refused before any GPU work"
    assert not os.path.exists(head.file("/tmp/work/f.mkv")) and not os.path.exists(net.hosts["gpu1"].file("/tmp/work/f.mkv"))


def queued_running(jobs_share: str) -> set[str]:
    """The queue's jobs running now, by input file name, as `farm ls` shows them from the share."""
    from click.testing import CliRunner

    from farm.cli.main import main

    result = CliRunner().invoke(main, ["ls", "--jobs-root", jobs_share, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {os.path.basename(r["input"]) for r in json.loads(result.stdout) if r.get("queue") and r["state"] == "running"}


def test_a_queue_of_three_jobs_from_two_submitters_on_two_gpu_machines(net):
    """Ann (on c1, share at /mnt/jobs) queues two episodes, the second urgent and capped at one
    worker; Bob (on c2, share at /srv/farm) queues a film; a runner on the head hands out the
    cluster's two GPUs: the urgent episode and Bob's film run side by side first (priority, then
    fair share: Ann does not get both), Ann's first episode only once a GPU is free; every output
    is identical to a failure-free solo run and the queue ends empty."""
    c1, c2, head = net.hosts["c1"], net.hosts["c2"], net.hosts["head"]
    d = scenario(net, "q")
    os.makedirs(os.path.join(net.shared, d, "in"))
    os.makedirs(os.path.join(net.shared, d, "out"))
    for name in ("ep1", "ep2", "film"):
        shutil.copy(os.path.join(net.shared, "media", "clip.mkv"), os.path.join(net.shared, d, "in", f"{name}.mkv"))
    model = ["--model", SLOW, "--no-face", "--codec", "ffv1", "--shard-frames", str(SHARD_FRAMES), "--queue-only"]
    for host, root, name, who, extra in ((c1, "/mnt/jobs", "ep1", "ann", []), (c1, "/mnt/jobs", "ep2", "ann", ["--priority", "1", "--workers", "1"]),
                                         (c2, "/srv/farm", "film", "bob", [])):
        result = host.farm(["submit", f"{root}/{d}/in/{name}.mkv", "-o", f"{root}/{d}/out/{{stem}}.mkv", "--jobs-root", f"{root}/{d}/jobs",
                            "--submitter", who, *model, *extra], timeout_s=120)
        assert result.returncode == 0, result.stderr[-3000:]
    jobs = os.path.join(net.shared, d, "jobs")
    runner = start_job(net, head, ["queue", "run", "--jobs-root", f"/mnt/jobs/{d}/jobs", "--address", head.ray_address, "--quiet"], f"{d}-runner")
    seen: list[set[str]] = []
    try:
        while runner.poll() is None:
            now = queued_running(jobs)
            if now and (not seen or seen[-1] != now):
                seen.append(now)
            time.sleep(0.3)
    finally:
        code = finish(net, runner, f"{d}-runner")
    assert code == 0, log_of(net, f"{d}-runner")
    started = [name for i, now in enumerate(seen) for name in sorted(now) if not any(name in s for s in seen[:i])]
    assert set(started[:2]) == {"ep2.mkv", "film.mkv"} and started[2:] == ["ep1.mkv"], seen
    assert all(len(s) <= 2 for s in seen), seen  # never more jobs than GPUs: ep1 waited for a free one
    assert QueueDir(jobs).entries() == []
    for name in ("ep1", "ep2", "film"):
        same_bytes(os.path.join(net.shared, d, "out", f"{name}.mkv"), net.reference)


def test_the_queue_runner_killed_mid_queue_and_a_standby_on_another_machine_goes_on(net):
    """Ann's season of two episodes runs from the queue's runner on the head; a standby `farm queue
    run` waits on a GPU machine. The head's runner is killed mid-episode (its driver, and with it
    the episode's workers, gone at once): once its ownership goes silent the standby takes the
    queue over, finishes the episode without redoing its committed shards, runs the other, and
    both outputs are a failure-free run's, byte for byte; the queue ends empty."""
    head, gpu2 = net.hosts["head"], net.hosts["gpu2"]
    d = scenario(net, "qkill")
    os.makedirs(os.path.join(net.shared, d, "in"))
    os.makedirs(os.path.join(net.shared, d, "out"))
    for name in ("ep1", "ep2"):
        shutil.copy(os.path.join(net.shared, "media", "clip.mkv"), os.path.join(net.shared, d, "in", f"{name}.mkv"))
    root = f"/mnt/jobs/{d}"
    jobs = on_share(net, f"{root}/jobs")
    runner = start_job(net, head, ["submit", f"{root}/in/ep1.mkv", f"{root}/in/ep2.mkv", "-o", f"{root}/out/{{stem}}.mkv",
                                   "--jobs-root", f"{root}/jobs", "--model", SLOW, "--no-face", "--codec", "ffv1",
                                   "--shard-frames", str(SHARD_FRAMES), "--workers", "1", "--address", head.ray_address, "--quiet"], f"{d}-runner")
    standby = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert runner.poll() is None, log_of(net, f"{d}-runner")
            done = {e.job_id: job_segments(jobs, e.job_id) for e in QueueDir(jobs).entries()}
            if any(len(r) >= 2 for r in done.values()):
                break
            time.sleep(0.2)
        standby = start_job(net, gpu2, ["queue", "run", "--jobs-root", f"{root}/jobs", "--address", head.ray_address, "--quiet"], f"{d}-standby")
        time.sleep(2)  # the standby finds the queue held and waits
        assert standby.poll() is None, log_of(net, f"{d}-standby")
        os.killpg(runner.pid, 9)
        runner.wait(timeout=30)
        before = {job_id: r for job_id, r in ((e.job_id, job_segments(jobs, e.job_id)) for e in QueueDir(jobs).entries()) if r}
        assert any(0 < len(r) < SHARDS for r in before.values()), before  # killed mid-episode
        code = finish(net, standby, f"{d}-standby", timeout_s=240)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, 9)
        stop_ray_jobs(net)
    assert code == 0, log_of(net, f"{d}-standby")
    assert QueueDir(jobs).entries() == []
    for job_id, segments in before.items():  # shards committed before the kill were not redone
        with open(os.path.join(jobs, job_id, "ledger.json")) as f:
            done = json.load(f)["done"]
        assert {s: done[str(s)]["segment"] for s in segments} == segments
    for name in ("ep1", "ep2"):
        same_bytes(os.path.join(net.shared, d, "out", f"{name}.mkv"), net.reference)


def test_a_spot_gpu_machine_given_notice_gives_its_shard_back(net):
    """A spot GPU machine gets its preemption notice mid-shard, and its notice hook asks Ray to
    drain it (`ray drain-node`, reason preemption, run on that machine): the driver on the head
    sees the node draining, its worker commits the part in progress to the share and gives the
    shard back; the other GPU machine's worker reuses that part from the share (mounted there as
    elsewhere), nothing counts as a failure, and the output is a solo run's, byte for byte."""
    from farm.testing.clips import make_test_clip

    c1, head = net.hosts["c1"], net.hosts["head"]
    d = scenario(net, "drain")
    make_test_clip(os.path.join(net.shared, d, "clip.mkv"), frames=260, size=(32, 24), gop=260, audio=True)
    src, pid_file = f"/mnt/jobs/{d}/clip.mkv", f"/mnt/jobs/{d}/worker.pid"
    args = ["--no-face", "--codec", "x264", "--shard-frames", "130", "--quiet"]  # two 65-frame parts per shard
    solo: dict = {}  # the reference, on c1 alone, run beside the cluster's job (the fake model mostly sleeps)
    ref = threading.Thread(target=lambda: solo.update(result=c1.farm(
        ["submit", src, "-o", f"/mnt/jobs/{d}/solo.mkv", "--jobs-root", "/tmp/work/drain-solo", "--model", "fake:scale=2",
         "--workers", "1", *args])))
    ref.start()
    out, jobs = f"/mnt/jobs/{d}/out.mkv", f"/mnt/jobs/{d}/jobs"
    proc = start_job(net, c1, ["submit", src, "-o", out, "--jobs-root", jobs, "--address", head.dashboard_url,
                               "--model", f"fake:scale=2,ms=70,pid_at=1,pid_file={pid_file}", *args], d)
    victim = None
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(on_share(net, pid_file)) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(on_share(net, pid_file)) as f:
            _, node_id = f.read().split()
        victim = net.hosts[gpu_node_ids(net)[node_id]]
        notice = victim.run([os.path.join(os.path.dirname(sys.executable), "ray"), "drain-node",
                             "--address", head.ray_address, "--node-id", node_id, "--reason", "DRAIN_NODE_REASON_PREEMPTION",
                             "--reason-message", "spot notice", "--deadline-remaining-seconds", "120"], timeout_s=60)
        assert notice.returncode == 0, notice.stderr
        code = finish(net, proc, d)
    finally:
        if victim is not None:  # a drained node takes no more work: the machine is replaced
            victim.kill()
            victim.rejoin()
    ref.join()
    assert code == 0, log_of(net, d)
    assert solo["result"].returncode == 0, solo["result"].stderr
    same_bytes(on_share(net, out), os.path.join(net.shared, d, "solo.mkv"))
    lg = ledger(on_share(net, jobs))
    assert (lg["state"], lg["failures"], lg["attempts"]["0"]) == ("done", [], 1)
    assert lg["done"]["0"]["node"] != node_id
    (job_id,) = os.listdir(on_share(net, jobs))
    logs = JobDir(on_share(net, jobs), job_id).logs(0)
    got = sorted((r.get("given_back") or 0, r.get("parts_reused"), r["node"] == node_id) for r in logs)
    assert got == [(0, 1, False), (65, 0, True)]  # the part kept on the share, reused by the other machine
