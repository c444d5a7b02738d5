#!/usr/bin/env python
"""Chaos trials on a simulated multi-node cluster: each trial runs a job while killing GPU nodes
(SIGKILL of every process of the node, then a replacement joins) and the driver (SIGKILL of its
process group, then `farm resume` or the same `farm submit`), and checks that the output is
identical, frame for frame and timestamp for timestamp, to a run without failures.

    .venv/bin/python scripts/chaos.py            # 20 trials
    .venv/bin/python scripts/chaos.py --trials 5 --seed 7

Prints one line per trial and, at the end, ``N/N identical``. Exit status 1 if any trial differs.
Everything runs on 127.0.0.1 in its own Ray temp dir, and stops by itself."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="farm-chaos-ray-"))
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from farm.testing import make_test_clip  # noqa: E402
from farm.testing.cluster import SimCluster, receipts  # noqa: E402
from farm.testing.media import decode_all, packet_pts  # noqa: E402
from farm.testing.process import kill_group, run_farm, start_farm  # noqa: E402

MODEL = "fake:scale=2,ms=60"


def job_args(clip: str, out: str, jobs: str) -> list[str]:
    return ["submit", clip, "-o", out, "--jobs-root", jobs, "--model", MODEL, "--no-face", "--codec", "ffv1",
            "--shard-frames", "4", "--quiet"]


def identical(a: str, b: str) -> bool:
    if packet_pts(a) != packet_pts(b):
        return False
    ta, fa = decode_all(a)
    tb, fb = decode_all(b)
    return ta == tb and len(fa) == len(fb) and all((x == y).all() for x, y in zip(fa, fb))


def trial(n: int, rng: random.Random, cluster: SimCluster, clip: str, reference: str, work: str) -> tuple[bool, str]:
    out, jobs = os.path.join(work, f"out{n}.mkv"), os.path.join(work, f"jobs{n}")
    submit = job_args(clip, out, jobs) + ["--address", cluster.address]
    events: list[str] = []
    proc = start_farm(submit, os.path.join(work, f"driver{n}.log"))
    deadline = time.time() + 300
    for _ in range(rng.randint(1, 3)):
        # Wait until some more shards are done, then strike.
        target = len(receipts(jobs)) + rng.randint(1, 4)
        while len(receipts(jobs)) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
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
    redone = len(receipts(jobs)) - len({r['shard'] for r in receipts(jobs)})
    return same, f"{'; '.join(events) or 'no strike landed'}; {redone} shards committed twice"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=96)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="farm-chaos-")
    try:
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
