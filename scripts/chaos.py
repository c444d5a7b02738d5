#!/usr/bin/env python
"""Chaos trials: each trial runs a job while killing GPU nodes, cutting their network links and
killing the driver (SIGKILL of its process group, then `farm resume` or the same `farm submit`),
and checks that the output is identical, frame for frame and timestamp for timestamp, to a run
without failures.

    .venv/bin/python scripts/chaos.py                  # 20 trials on a simulated cluster
    .venv/bin/python scripts/chaos.py --hosts netns    # 20 trials on namespace hosts (root)
    .venv/bin/python scripts/chaos.py --trials 5 --seed 7

``--hosts sim`` (the default): Ray's ``Cluster`` on 127.0.0.1; a node kill is SIGKILL of every
process of the node, then a replacement joins.
``--hosts netns``: real hosts in Linux namespaces (farm.testing.netns): a head with no CPU and no
GPU, three GPU machines (one logical GPU each) and a login machine in the cluster that runs the
driver, all sharing one directory. Faults: a machine crash (every process SIGKILLed; it reboots
and rejoins), a link cut (its veth down for 2-8 s: a partition; rebooted if Ray declared it dead)
and a driver kill.

Prints one line per trial and, at the end, ``N/N identical`` and how many shards were committed
twice, and of those how many had been done before a strike (redone beyond those in flight; 0 is
right). Exit status 1 if any trial differs. Everything stops by itself."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from farm.testing.rayenv import isolate_ray  # noqa: E402

isolate_ray("chaos")

from farm.testing.clips import make_test_clip  # noqa: E402
from farm.testing.cluster import SimCluster, receipt_paths, receipts  # noqa: E402
from farm.testing.media import decode_all, packet_pts  # noqa: E402
from farm.testing.netns import Hosts, start_cluster, unavailable_reason  # noqa: E402
from farm.testing.process import kill_group, run_farm, start_farm  # noqa: E402

MODEL = "fake:scale=2,ms=60"
#: Namespace hosts strike slower (a crashed machine reboots and rejoins): longer jobs let 1-3 land.
NETNS_MODEL = "fake:scale=2,ms=150"


def job_args(clip: str, out: str, jobs: str, model: str = MODEL) -> list[str]:
    return ["submit", clip, "-o", out, "--jobs-root", jobs, "--model", model, "--no-face", "--codec", "ffv1",
            "--shard-frames", "4", "--quiet"]


def identical(a: str, b: str) -> bool:
    if packet_pts(a) != packet_pts(b):
        return False
    ta, fa = decode_all(a)
    tb, fb = decode_all(b)
    return ta == tb and len(fa) == len(fb) and all((x == y).all() for x, y in zip(fa, fb))


def redone(jobs: str, snapshots: list[set[str]]) -> tuple[int, int]:
    """(shards committed more than once, shards done before a strike and committed again after
    it): the second should be 0; the first counts the shards in flight at the strikes."""
    found = {}
    for path in receipt_paths(jobs):
        with open(path) as f:
            found[os.path.basename(path)] = json.load(f)["shard"]
    twice = len(found) - len(set(found.values()))
    beyond = set()
    for names in snapshots:
        before = {found[n] for n in names if n in found}
        beyond |= {shard for name, shard in found.items() if name not in names and shard in before}
    return twice, len(beyond)


def _committed(jobs: str) -> set[str]:
    return {os.path.basename(path) for path in receipt_paths(jobs)}


def trial(n: int, rng: random.Random, cluster: SimCluster, clip: str, reference: str, work: str) -> tuple[bool, str]:
    out, jobs = os.path.join(work, f"out{n}.mkv"), os.path.join(work, f"jobs{n}")
    submit = job_args(clip, out, jobs) + ["--address", cluster.address]
    events: list[str] = []
    snapshots: list[set[str]] = []
    proc = start_farm(submit, os.path.join(work, f"driver{n}.log"))
    deadline = time.time() + 300
    for _ in range(rng.randint(1, 3)):
        # Wait until some more shards are done, then strike.
        target = len(receipts(jobs)) + rng.randint(1, 4)
        while len(receipts(jobs)) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
        snapshots.append(_committed(jobs))
        if rng.random() < 0.5 and len(cluster.gpu_nodes) > 1:
            cluster.kill(rng.choice(cluster.gpu_nodes))
            events.append("node killed")
            cluster.add_gpu_node()
        else:
            kill_group(proc)
            events.append("driver killed")
            if rng.random() < 0.5:
                job_id = json.loads(run_farm(["ls", "--jobs-root", jobs, "--json"]).stdout)[0]["job_id"]
                proc = start_farm(["resume", job_id, "--jobs-root", jobs, "--address", cluster.address, "--quiet"],
                                  os.path.join(work, f"driver{n}.log"))
                events[-1] += ", resumed"
            else:
                proc = start_farm(submit, os.path.join(work, f"driver{n}.log"))
                events[-1] += ", resubmitted"
    code = proc.wait(timeout=max(10, deadline - time.time()))
    if code != 0:
        return False, f"exit {code} after {'; '.join(events)}"
    same = identical(out, reference)
    twice, beyond = redone(jobs, snapshots)
    what = "; ".join(events) or "no strike landed"
    return same, f"{what}; {twice} shards committed twice, {beyond} of them done before a strike"


def netns_trial(n: int, rng: random.Random, net: Hosts, share: str, reference: str) -> tuple[bool, str, int, int]:
    """One trial on namespace hosts; the driver runs on the login machine."""
    head, login = net.hosts["head"], net.hosts["login"]
    gpus = [h for name, h in net.hosts.items() if name.startswith("gpu")]
    alive = {node["ip"] for node in head.ray_nodes() if node["alive"]}
    events: list[str] = []
    for host in gpus:  # a machine Ray declared dead after a cut reboots before the next trial
        if host.ip not in alive:
            host.rejoin()
            events.append(f"{host.name} (declared dead after its cut) rebooted")
    d = f"t{n}"
    os.makedirs(os.path.join(share, d))
    out, jobs, here = f"/mnt/jobs/{d}/out.mkv", f"/mnt/jobs/{d}/jobs", os.path.join(share, d, "jobs")
    submit = job_args("/mnt/jobs/media/clip.mkv", out, jobs, NETNS_MODEL) + ["--address", head.ray_address]
    log = os.path.join(share, d, "driver.log")
    snapshots: list[set[str]] = []
    rebooting: dict[str, threading.Thread] = {}
    proc = login.start_farm(submit, log, timeout_s=400)
    deadline = time.time() + 300
    for _ in range(rng.randint(1, 3)):
        target = len(receipts(here)) + rng.randint(1, 4)
        while len(receipts(here)) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
        snapshots.append(_committed(here))
        fault = rng.random()
        victim = rng.choice([h for h in gpus if h.name not in rebooting or not rebooting[h.name].is_alive()])
        if fault < 1 / 3:
            victim.kill()
            events.append(f"{victim.name} crashed")
            rebooting[victim.name] = threading.Thread(target=victim.rejoin)  # the job goes on meanwhile
            rebooting[victim.name].start()
        elif fault < 2 / 3:
            victim.cut()
            time.sleep(rng.uniform(2, 8))
            victim.heal()
            events.append(f"{victim.name} cut off")
        else:
            kill_group(proc)
            if rng.random() < 0.5:
                (job_id,) = os.listdir(here)
                resume = ["resume", job_id, "--jobs-root", jobs, "--address", head.ray_address, "--quiet"]
                proc = login.start_farm(resume, log, timeout_s=400)
                events.append("driver killed, resumed")
            else:
                proc = login.start_farm(submit, log, timeout_s=400)
                events.append("driver killed, resubmitted")
    try:
        code = proc.wait(timeout=max(10, deadline - time.time()))
    except subprocess.TimeoutExpired:
        kill_group(proc)
        code = -9
    for thread in rebooting.values():
        thread.join()
    twice, beyond = redone(here, snapshots)
    what = "; ".join(events) or "no strike landed"
    if code != 0:
        return False, f"exit {code} after {what} (log: {log})", twice, beyond
    same = identical(os.path.join(share, d, "out.mkv"), reference)
    return same, f"{what}; {twice} committed twice, {beyond} done before a strike", twice, beyond


def run_netns(args, rng: random.Random, work: str) -> int:
    reason = unavailable_reason()
    if reason:
        print(f"--hosts netns: {reason}")
        return 2
    share = os.path.join(work, "share")
    os.makedirs(os.path.join(share, "media"))
    clip = make_test_clip(os.path.join(share, "media", "clip.mkv"), frames=args.frames, size=(32, 24), vfr=True, audio=True)
    reference = os.path.join(work, "reference.mkv")
    result = run_farm(job_args(clip, reference, os.path.join(work, "ref-jobs"), NETNS_MODEL) + ["--workers", "2"])
    if result.returncode != 0:
        print(result.stderr)
        return 1
    good = twice_total = beyond_total = 0
    lines: list[str] = []
    with Hosts(share, lifetime_s=600 + 200 * args.trials) as net:
        head = net.add("head", {"/mnt/jobs": ""})
        gpus = [net.add(f"gpu{i}", {"/mnt/jobs": ""}) for i in (1, 2, 3)]
        login = net.add("login", {"/mnt/jobs": ""})
        start_cluster(head, gpus, others={login: {"gpus": 0, "cpus": 1}})
        for n in range(1, args.trials + 1):
            t0 = time.time()
            same, what, twice, beyond = netns_trial(n, rng, net, share, reference)
            good += same
            twice_total += twice
            beyond_total += beyond
            lines.append(what)
            print(f"trial {n:2d}: {'identical' if same else 'DIFFERENT'} ({what}; {time.time() - t0:.0f} s)", flush=True)
    told = " ".join(lines)
    print(f"{good}/{args.trials} identical; {told.count('crashed')} machine crashes, {told.count('cut off')} link cuts "
          f"({told.count('declared dead')} declared dead), {told.count('driver killed')} driver kills; "
          f"{twice_total} shards committed twice, {beyond_total} of them done before a strike (redone beyond those in flight)")
    return 0 if good == args.trials else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--hosts", choices=["sim", "netns"], default="sim", help="a simulated cluster, or namespace hosts (root)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="farm-chaos-")
    try:
        if args.hosts == "netns":
            return run_netns(args, rng, work)
        clip = make_test_clip(os.path.join(work, "clip.mkv"), frames=args.frames, size=(32, 24), vfr=True, audio=True)
        reference = os.path.join(work, "reference.mkv")
        result = run_farm(job_args(clip, reference, os.path.join(work, "ref-jobs")) + ["--workers", "2"])
        if result.returncode != 0:
            print(result.stderr)
            return 1
        good = 0
        with SimCluster(gpu_nodes=3) as cluster:
            for n in range(1, args.trials + 1):
                t0 = time.time()
                same, what = trial(n, rng, cluster, clip, reference, work)
                good += same
                print(f"trial {n:2d}: {'identical' if same else 'DIFFERENT'} ({what}; {time.time() - t0:.0f} s)", flush=True)
        print(f"{good}/{args.trials} identical")
        return 0 if good == args.trials else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
