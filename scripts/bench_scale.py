#!/usr/bin/env python
"""How close N workers get to N times one worker, and what the coordinator costs per shard.

Part 1 runs the same kind of job on a simulated multi-node cluster (``ray.cluster_utils``: a head
and 4 nodes of logical GPUs, all on 127.0.0.1) with 1, 8, 32 and 64 GPU workers and a fixed-cost
fake model (``--ms`` milliseconds per frame, so the model's share is known exactly). Each job has
``--shards-per-worker`` shards per worker (weak scaling). From the shard logs it measures the
steady state: from the moment the last worker started its first shard to the moment the first
worker found the queue empty, the model time spent in that window (each shard counted for the part
of it inside the window) divided by (workers x the window). Idle time between shards, waiting on
the driver or the coordinator, counts against it. It also prints the same figure with the tail
included (to the end of the last shard): while the queue drains, workers finish their last shards
at different moments, which costs about half a shard per worker once per job, whatever the number
of workers, so it shrinks as jobs grow longer. Worker start-up (importing farm and PyAV, dozens of
processes on a small machine) is reported separately and not counted: it happens once per job,
while shards run for hours. Every simulated GPU shares this host's CPUs: the host's CPU use during
each job is printed, and when it nears 100 % the host, not the farm, is the limit.

Part 2 drives the coordinator (the plain class, with its ledger written to a local job directory)
through a 10,000-shard job with 64 workers, and the same through a Ray actor call per event.

    .venv/bin/python scripts/bench_scale.py
    .venv/bin/python scripts/bench_scale.py --sizes 1 8 --ms 100

Goals: efficiency >= 90 % at 64 workers; coordinator < 1 ms per shard."""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from fractions import Fraction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from farm.testing.rayenv import isolate_ray  # noqa: E402

isolate_ray("scale", auth=False)

NODES = 4
FRAMES_PER_SHARD = 8


def run_job(address: str, workers: int, ms: float, shards_per_worker: int, work: str) -> dict:
    from farm.testing.clips import make_test_clip
    from farm.testing.process import run_farm

    frames = workers * shards_per_worker * FRAMES_PER_SHARD
    clip = make_test_clip(os.path.join(work, f"clip{workers}.mkv"), frames=frames, size=(16, 16), audio=False, gop=FRAMES_PER_SHARD)
    jobs = os.path.join(work, f"jobs{workers}")
    t0 = time.time()
    cpu0 = _cpu_times()
    result = run_farm(["submit", clip, "-o", os.path.join(work, f"out{workers}.mkv"), "--jobs-root", jobs,
                       "--model", f"fake:scale=1,ms={ms}", "--no-face", "--codec", "ffv1",
                       "--shard-frames", str(FRAMES_PER_SHARD), "--workers", str(workers),
                       "--address", address, "--json", "--lease-timeout", "3600"], timeout=3600)
    wall = time.time() - t0
    if result.returncode != 0:
        raise SystemExit(f"job with {workers} workers failed: {result.stderr}")
    summary = next((json.loads(line) for line in reversed(result.stdout.splitlines()) if line.startswith("{")), None)
    if summary is None:
        raise SystemExit(f"unexpected output of the {workers}-worker job:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}") from None
    logs = [json.load(open(p)) for p in glob.glob(os.path.join(jobs, "*", "logs", "*.json"))]
    first_start: dict[str, float] = {}
    last_finish: dict[str, float] = {}
    for log in logs:
        first_start[log["worker"]] = min(first_start.get(log["worker"], log["started"]), log["started"])
        last_finish[log["worker"]] = max(last_finish.get(log["worker"], log["finished"]), log["finished"])
    all_up = max(first_start.values())
    drained = min(last_finish.values())  # the first worker to find the queue empty
    end = max(last_finish.values())

    def busy(lo: float, hi: float) -> tuple[float, float]:
        """Frames worked on inside [lo, hi] (each shard counted for its share inside), and the
        efficiency there: model time / (workers x window)."""
        frames_in = 0.0
        for log in logs:
            run = log["finished"] - log["started"]
            inside = min(log["finished"], hi) - max(log["started"], lo)
            if run > 0 and inside > 0:
                frames_in += (log["frames"][1] - log["frames"][0]) * inside / run
        span = hi - lo
        return frames_in, (frames_in * ms / 1000 / (len(first_start) * span) if span > 0 else 0.0)

    steady_frames, steady = busy(all_up, drained)
    _, with_tail = busy(all_up, end)
    return {
        "workers": len(first_start),
        "frames": frames,
        "wall_s": wall,
        "startup_s": all_up - min(first_start.values()),
        "span_s": drained - all_up,
        "tail_s": end - drained,
        "efficiency": steady,
        "efficiency_with_tail": with_tail,
        "throughput": steady_frames / (drained - all_up) if drained > all_up else 0.0,
        "coordinator_ms": summary["coordinator_ms_per_shard"],
        "cpu_busy": _cpu_busy(cpu0),
    }


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of this host, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _cpu_busy(before: tuple[int, int]) -> float:
    busy, total = _cpu_times()
    return (busy - before[0]) / max(1, total - before[1])


def coordinator_cost(work: str, shards: int = 10_000, workers: int = 64) -> tuple[float, float]:
    """Milliseconds per shard: the coordinator in this process, and through a Ray actor."""
    from farm.actors.coordinator import Coordinator
    from farm.config import ModelConfig
    from farm.events import Assign, ShardDone, WorkerJoined
    from farm.storage.jobdir import JobDir
    from farm.spec import JobSpec
    from farm.media import FrameIndex, SourceInfo

    frames = shards * FRAMES_PER_SHARD
    index = FrameIndex(Fraction(1, 1000), tuple(range(0, frames * 40, 40)), (0,))
    source = SourceInfo(location="/nonexistent/clip.mkv", size_bytes=0, format_name="matroska", video_stream=0, codec="h264",
                        width=16, height=16, pix_fmt="yuv420p", bits_per_sample=8, rotation=0, index=index)
    spec = JobSpec("bench", source, ModelConfig(model="fake"), FRAMES_PER_SHARD, "x", time.time())

    def drive(handle) -> float:
        t0 = time.perf_counter()
        out = handle([WorkerJoined(f"w{i}", f"n{i % NODES}", 0.0) for i in range(workers)])
        busy = {a.worker: a.shard for a in out if isinstance(a, Assign)}
        done = 0
        while busy:
            worker, shard = busy.popitem()
            out = handle([ShardDone(shard, worker, time.monotonic(), segment=f"{shard:06d}-x.mkv", frames=FRAMES_PER_SHARD, bytes=1000, sha256="ab", seconds=1.0)])
            busy.update({a.worker: a.shard for a in out if isinstance(a, Assign)})
            done += 1
        assert done == shards
        return (time.perf_counter() - t0) / shards * 1000

    root = os.path.join(work, "coord")
    JobDir(root, "bench").write_spec(spec)
    plain = Coordinator(root, "bench")
    in_process = drive(plain.handle)
    plain.flush(force=True)

    import ray

    JobDir(root, "bench2").write_spec(JobSpec("bench2", source, ModelConfig(model="fake"), FRAMES_PER_SHARD, "x", time.time()))
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        actor = ray.remote(Coordinator).options(num_cpus=0).remote(root, "bench2")
        via_actor = drive(lambda events: ray.get(actor.handle.remote(events)))
    finally:
        ray.shutdown()
    return in_process, via_actor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--ms", type=float, default=250.0, help="fake model cost per frame (ms)")
    parser.add_argument("--shards-per-worker", type=int, default=20)
    args = parser.parse_args()
    from farm.testing.cluster import SimCluster

    work = tempfile.mkdtemp(prefix="farm-scale-")
    print(f"# bench_scale {time.strftime('%Y-%m-%d')} on {platform.node()}: {os.cpu_count()} CPUs, "
          f"{NODES} simulated GPU nodes, fake model {args.ms:g} ms/frame, {FRAMES_PER_SHARD} frames/shard, "
          f"{args.shards_per_worker} shards/worker", flush=True)
    try:
        per_node = -(-max(args.sizes) // NODES)
        rows = []
        with SimCluster(gpu_nodes=0, head_cpus=2) as cluster:
            for _ in range(NODES):
                cluster.cluster.add_node(num_cpus=per_node, num_gpus=per_node)
            cluster.cluster.wait_for_nodes()
            for n in args.sizes:
                rows.append(run_job(cluster.address, n, args.ms, args.shards_per_worker, work))
                r = rows[-1]
                print(f"workers {r['workers']:3d}: {r['frames']:5d} frames, steady {r['throughput']:7.1f} fps over {r['span_s']:6.1f} s, "
                      f"start-up {r['startup_s']:5.1f} s, tail {r['tail_s']:5.1f} s, wall {r['wall_s']:6.1f} s, host CPU {100 * r['cpu_busy']:3.0f} % busy, "
                      f"driver waited {r['coordinator_ms']:.3f} ms/shard on the coordinator", flush=True)
        base = rows[0]["throughput"] / rows[0]["workers"]
        print("\nworkers  speed-up  efficiency  with the tail")
        for r in rows:
            speedup = r["throughput"] / base
            print(f"{r['workers']:7d}  {speedup:8.2f}  {100 * r['efficiency']:8.1f} %  {100 * r['efficiency_with_tail']:11.1f} %")
        in_process, via_actor = coordinator_cost(work)
        print(f"\ncoordinator at 10,000 shards: {in_process:.3f} ms per shard in process; {via_actor:.3f} ms per shard "
              "with one Ray actor call per completion (the worst case: the driver batches the completions of each "
              "poll into one call, see 'driver waited' above)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
