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
import threading
import time
from collections import Counter

import pytest

from tests.hosts import Hosts, unavailable_reason
from tests.simcluster import ledger, receipts, wait_for_receipts

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FAST = "fake:scale=2,ms=40"
SLOW = "fake:scale=2,ms=200"
FRAMES = 48
SHARD_FRAMES = 4
SHARDS = FRAMES // SHARD_FRAMES
CPU_LESS_HEAD_MUX = ("the mux task asks for 1 CPU pinned to the driver's node, which is the 0-CPU head for a Ray Job "
                     "(TaskUnschedulableError after all the GPU work); fixed on branch ledger")


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
    from farm.testing import make_test_clip

    share = tmp_path_factory.mktemp("share")
    os.makedirs(share / "media")
    make_test_clip(str(share / "media" / "clip.mkv"), frames=FRAMES, size=(64, 48), vfr=True, audio=True)
    both = {"/mnt/jobs": "", "/srv/farm": ""}  # the cluster's machines have the share at both paths
    with Hosts(str(share), lifetime_s=900) as hosts:
        head = hosts.add("head", both)
        gpus = [hosts.add("gpu1", both), hosts.add("gpu2", both)]
        c1 = hosts.add("c1", {"/mnt/jobs": ""})
        c2 = hosts.add("c2", {"/srv/farm": ""})
        reference: dict = {}
        ref = threading.Thread(target=lambda: reference.update(result=c1.farm(
            job_args("/mnt/jobs/media/clip.mkv", "/mnt/jobs/reference.mkv", "/tmp/work/ref-jobs", FAST, "--workers", "2"))))
        ref.start()
        head.ray_head()
        join = [threading.Thread(target=g.ray_node, args=(head,), kwargs={"resources": {"farm-gpu-host": 1}}) for g in gpus]
        for t in join:
            t.start()
        for t in join:
            t.join()
        head.wait_for_nodes({head.ip, *(g.ip for g in gpus)})
        ref.join()
        assert reference["result"].returncode == 0, reference["result"].stderr
        hosts.share = str(share)
        hosts.reference = str(share / "reference.mkv")
        yield hosts


def on_share(net, path: str) -> str:
    """A host path under /mnt/jobs or /srv/farm, as this test process sees it."""
    for mount in ("/mnt/jobs", "/srv/farm"):
        if path.startswith(mount + "/"):
            return os.path.join(net.share, path[len(mount) + 1 :])
    raise ValueError(path)


def scenario(net, name: str) -> str:
    """A fresh directory on the share for one scenario's output and jobs root (its name)."""
    os.makedirs(os.path.join(net.share, name))
    return name


def same_bytes(a: str, b: str) -> None:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read(), f"{a} and {b} differ"


def rejoin(net, host) -> None:
    """Give a broken machine back to the cluster: reboot it (fresh /tmp, no processes) and rejoin."""
    head = net.hosts["head"]
    host.kill()
    host.boot()
    host.ray_node(head, resources={"farm-gpu-host": 1})
    head.wait_for_nodes({n.ip for n in net.hosts.values() if n.name in ("head", "gpu1", "gpu2")})


def gpu_node_ids(net) -> dict[str, str]:
    """Ray node id -> host name, for the GPU machines."""
    ips = {h.ip: h.name for h in net.hosts.values()}
    return {n["id"]: ips[n["ip"]] for n in net.hosts["head"].ray_nodes() if n["alive"] and "GPU" in n["resources"]}


@pytest.mark.xfail(reason=CPU_LESS_HEAD_MUX, strict=False)
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
