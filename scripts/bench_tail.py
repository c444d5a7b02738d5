#!/usr/bin/env python
"""What the job costs beyond the model now that workers encode chunks and the tail only copies packets.

One job through the real CLI (``farm submit --address ...``) on a simulated multi-node Ray cluster
(farm.testing.cluster: a head without GPUs and ``--workers`` nodes of one logical GPU each, all on
this host), with the fixed-cost fake model (``fake:scale=4,ms=--ms``, a GPU-like speed), a source
of scene_frame scenes with seeded cuts (farm.testing.make_scene_clip) at a quarter of ``--size``,
``--codec x264 --crf 18 --preset PRESET --no-face``. It measures, all in this one run:

1. The tail: from the last shard's "finished" (its shard log) to the output appearing whole at
   ``-o`` (the muxer's rename, watched every 20 ms; the output's mtime and the CLI's exit are
   shown too), over one serial encode of the same frames (the fake model's output, regenerated
   from the source: farm.video.encode.ChunkWriter with the job's chunk_settings, i.e. libx264
   CRF 18, the same preset and farm.video.encode.encoder_threads threads; only the time inside
   the encoder's calls is counted). Goal <= 0.2. The job's video bytes are compared with this
   serial encode's too: the chunking cost at the job's own shard size (CLI default, ~64 shards).
2. The job directory's peak size (walked every 0.2 s during the job) over the output's size.
   Goal <= 1.5.
3. The job's wall time (submit to the CLI's exit) over model time / workers + start-up, where
   model time = frames x ms and start-up = submit to the first shard's "started". Goal <= 1.15.
   The host's CPU use during the job is printed with it: every simulated node shares this host's
   CPUs, and the workers' x264 encodes need the serial encode's CPU seconds in all, so where that
   exceeds what the host's cores give in the model's time the host, not the farm, is the limit
   (the "host floor" line says by how much).
4. The size cost of chunking at CRF 18, plain and scene-aware boundaries, with the functions of
   scripts/bench_chunk_cost.py (1200 frames 640x360, 240-frame shards, ~1-2 minutes). Goal <= 2 %.

    .venv/bin/python scripts/bench_tail.py
    .venv/bin/python scripts/bench_tail.py --preset ultrafast --skip-chunk-cost
    .venv/bin/python scripts/bench_tail.py --frames 2000 --ms 40 --workers 2 --size 1920x1080
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from farm.testing.rayenv import isolate_ray  # noqa: E402

isolate_ray("tail", auth=False)

SCALE = 4
FPS = 24


def scene_cuts(frames: int, mean: int, seed: int) -> list[int]:
    """Seeded random scene cuts, at least 8 frames apart (as bench_chunk_cost places them)."""
    rng = random.Random(seed)
    cuts: list[int] = []
    f = 0
    while True:
        f += max(8, int(rng.expovariate(1 / mean)))
        if f >= frames:
            return cuts
        cuts.append(f)


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of this host, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _tree_bytes(path: str) -> int:
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:  # renamed or removed while walking
                pass
    return total


class Watcher(threading.Thread):
    """Polls the jobs root's size (every ``every`` s) and the output's appearance (every 20 ms)."""

    def __init__(self, jobs_root: str, output: str, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.jobs_root, self.output, self.every = jobs_root, output, every
        self.peak = 0
        self.samples = 0
        self.output_seen: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        next_walk = 0.0
        while not self.done.is_set():
            now = time.time()
            if self.output_seen is None and os.path.exists(self.output):
                self.output_seen = now
            if now >= next_walk:
                self.peak = max(self.peak, _tree_bytes(self.jobs_root))
                self.samples += 1
                next_walk = now + self.every
            time.sleep(0.02)


def run_job(args, work: str, address: str) -> dict:
    from farm.testing.clips import make_scene_clip
    from farm.testing.process import run_farm

    w, h = (int(v) for v in args.size.lower().split("x"))
    if w % (2 * SCALE) or h % (2 * SCALE):
        raise SystemExit(f"--size {args.size}: both sides must be multiples of {2 * SCALE}")
    cuts = scene_cuts(args.frames, 120, seed=1)
    clip = make_scene_clip(os.path.join(work, "clip.mkv"), cuts, frames=args.frames, size=(w // SCALE, h // SCALE),
                           fps=FPS, gop=48)
    jobs = os.path.join(work, "jobs")
    output = os.path.join(work, "out", "out.mkv")
    os.makedirs(os.path.dirname(output))
    cmd = ["submit", clip, "-o", output, "--jobs-root", jobs, "--model", f"fake:scale={SCALE},ms={args.ms:g}", "--no-face",
           "--codec", "x264", "--crf", "18", "--preset", args.preset, "--workers", str(args.workers),
           "--address", address, "--json", "--quiet", "--lease-timeout", "3600"]
    print("# farm " + " ".join(cmd), flush=True)
    watcher = Watcher(jobs, output)
    watcher.start()
    cpu0 = _cpu_times()
    t0 = time.time()
    result = run_farm(cmd, timeout=3600)
    t_end = time.time()
    cpu1 = _cpu_times()
    watcher.done.set()
    watcher.join()
    if result.returncode != 0:
        raise SystemExit(f"the job failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    summary = next((json.loads(line) for line in reversed(result.stdout.splitlines()) if line.startswith("{")), None)
    if summary is None:
        raise SystemExit(f"no JSON result from the CLI:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    logs = [json.load(open(p)) for p in glob.glob(os.path.join(jobs, summary["job_id"], "logs", "*.json"))]
    return {
        "clip": clip, "cuts": cuts, "jobs": jobs, "job_id": summary["job_id"], "output": output, "summary": summary,
        "submit": t0, "end": t_end, "first_started": min(r["started"] for r in logs),
        "last_finished": max(r["finished"] for r in logs), "output_seen": watcher.output_seen,
        "output_mtime": os.path.getmtime(output), "output_bytes": os.path.getsize(output),
        "peak_bytes": watcher.peak, "samples": watcher.samples, "shards": len({r["shard"] for r in logs}),
        "attempts": len(logs), "workers": len({r["worker"] for r in logs}),
        "shard_s": sum(r["finished"] - r["started"] for r in logs),
        "cpu_busy": (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1]),
    }


def video_bytes(path: str) -> int:
    """The bytes of the first video stream's packets (no container overhead)."""
    import av

    with av.open(path) as c:
        return sum(p.size for p in c.demux(c.streams.video[0]) if p.size)


def serial_encode(job: dict) -> tuple[float, int, dict]:
    """Seconds inside one ChunkWriter's calls for the whole video (the job's own chunk settings),
    its video packets' bytes, and the settings' encoder options."""
    import av

    from farm.plan import output_sar
    from farm.storage.jobdir import JobDir
    from farm.testing.fakes import fake_output
    from farm.video.encode import ChunkWriter, chunk_settings

    spec = JobDir(job["jobs"], job["job_id"]).read_spec()
    source, out, index = spec.source, spec.out, spec.output_index
    with av.open(job["clip"]) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(c.streams.video[0])]
    first = fake_output(frames[0], SCALE, None)
    sar = output_sar(source.sample_aspect_ratio, spec.model.target, spec.model.square_pixels)
    settings = chunk_settings(out.codec, out.crf, out.preset, out.pix_fmt, (first.shape[1], first.shape[0]), False,
                              index.pts, index.time_base, colour=source.colour, sample_aspect_ratio=sar)
    path = os.path.join(os.path.dirname(job["clip"]), "serial.nut")
    spent = 0.0
    t = time.perf_counter()
    writer = ChunkWriter(path, settings)
    spent += time.perf_counter() - t
    for i, pixels in enumerate(frames):
        up = fake_output(pixels, SCALE, None)
        t = time.perf_counter()
        writer.write(up, index.pts[i])
        spent += time.perf_counter() - t
    t = time.perf_counter()
    writer.close()  # the encoder's flush (and a quick re-read of the chunk's packets)
    spent += time.perf_counter() - t
    return spent, video_bytes(path), {"threads": settings.threads, **settings.options}


def chunk_cost(preset: str, frames: int = 1200, size: tuple[int, int] = (640, 360), shard_frames: int = 240) -> dict:
    """bench_chunk_cost's measurement (its functions, its defaults): chunked / serial bytes."""
    from bench_chunk_cost import encode_bytes, encoder, make_frames

    from farm.plan import plan_shards, search_ranges, snap_window
    from farm.video.scenes import cuts_in, frame_differences

    width, height = size
    cuts = scene_cuts(frames, 120, seed=1)
    pictures = make_frames(frames, width, height, cuts, 2.0, 1)
    window = snap_window(shard_frames, FPS)
    found: set[int] = set()
    for start, stop in search_ranges(frames, shard_frames, window):
        found.update(cuts_in(frame_differences(pictures[start:stop]), start + 1))
    plain = [(s.start, s.stop) for s in plan_shards(frames, shard_frames)]
    aware = [(s.start, s.stop) for s in plan_shards(frames, shard_frames, scene_cuts=sorted(found), window=window)]

    def make():
        return encoder(width, height, FPS, 18, preset)

    serial, serial_q = encode_bytes(pictures, [(0, frames)], make)
    plain_b, plain_q = encode_bytes(pictures, plain, make)
    aware_b, aware_q = encode_bytes(pictures, aware, make)
    return {"frames": frames, "size": f"{width}x{height}", "shard_frames": shard_frames, "cuts": len(cuts), "found": len(found),
            "serial": serial, "plain": plain_b / serial - 1, "aware": aware_b / serial - 1,
            "psnr": (serial_q, plain_q, aware_q)}


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "NOT met"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--ms", type=float, default=20.0, help="fake model cost per frame (ms)")
    ap.add_argument("--workers", type=int, default=4, help="workers, one per simulated GPU node")
    ap.add_argument("--size", default="1280x720", help="output WxH (the source is a quarter of it)")
    ap.add_argument("--preset", default="medium", help="x264 preset of the job, the serial encode and the chunk-cost part")
    ap.add_argument("--skip-chunk-cost", action="store_true")
    args = ap.parse_args()

    from benchlib import machine

    from farm.testing.cluster import SimCluster

    print(f"# bench_tail on {machine()}: {args.frames} frames -> {args.size}, fake model {args.ms:g} ms/frame, "
          f"{args.workers} workers on {args.workers} simulated GPU nodes, x264 CRF 18 preset {args.preset}", flush=True)
    work = tempfile.mkdtemp(prefix="farm-tail-")
    try:
        with SimCluster(gpu_nodes=args.workers, head_cpus=2) as cluster:
            job = run_job(args, work, cluster.address)
        serial_s, serial_bytes, options = serial_encode(job)

        tail = job["output_seen"] - job["last_finished"]
        print(f"\njob {job['job_id']}: {job['shards']} shards ({job['attempts']} attempts) on {job['workers']} workers, "
              f"{len(job['cuts'])} scene cuts in the source, output {job['output_bytes']:,} bytes", flush=True)
        job_video = video_bytes(job["output"])
        per_worker = job["shard_s"] / max(1, job["workers"])
        print(f"serial encode of the same frames ({options}): {serial_s:.1f} s, {serial_bytes:,} bytes of video "
              f"(the job's: {job_video:,}, {100 * (job_video / serial_bytes - 1):+.2f} %); "
              f"the shards took {job['shard_s']:.1f} s in all, {per_worker:.1f} s per worker")
        written, exited = job["output_mtime"] - job["last_finished"], job["end"] - job["last_finished"]
        print(f"1. tail: last shard finished -> output written {tail:.2f} s (mux wrote it by +{written:.2f} s, "
              f"the CLI exited at +{exited:.2f} s); tail / serial encode = {tail / serial_s:.3f}  "
              f"(goal <= 0.2: {verdict(tail / serial_s, 0.2)})")
        ratio = job["peak_bytes"] / job["output_bytes"]
        print(f"2. job directory peak {job['peak_bytes']:,} bytes ({job['samples']} samples) / output "
              f"{job['output_bytes']:,} bytes = {ratio:.2f}  (goal <= 1.5: {verdict(ratio, 1.5)})")
        wall = job["end"] - job["submit"]
        startup = job["first_started"] - job["submit"]
        model = args.frames * args.ms / 1000
        ideal = model / args.workers + startup
        print(f"3. wall {wall:.1f} s / (model {model:.1f} s / {args.workers} workers + start-up {startup:.1f} s = {ideal:.1f} s) "
              f"= {wall / ideal:.2f}  (goal <= 1.15: {verdict(wall / ideal, 1.15)}); host CPU {100 * job['cpu_busy']:.0f} % busy "
              f"during the job ({os.cpu_count()} cores)")
        cores = os.cpu_count() or 1
        floor = max(model / args.workers, serial_s / cores) + startup + tail
        print(f"   host floor: the x264 work alone needs {serial_s:.1f} CPU-s, >= {serial_s / cores:.1f} s on {cores} cores, "
              f"so this host allows at best {floor:.1f} s (ratio {floor / ideal:.2f}); wall / floor = {wall / floor:.2f}",
              flush=True)
        if not args.skip_chunk_cost:
            t = time.perf_counter()
            c = chunk_cost(args.preset)
            print(f"4. chunking at CRF 18 ({c['frames']} frames {c['size']}, {c['shard_frames']}-frame shards, {c['cuts']} cuts, "
                  f"{c['found']} found near boundaries, preset {args.preset}): plain {100 * c['plain']:+.2f} %, "
                  f"scene-aware {100 * c['aware']:+.2f} % vs serial {c['serial']:,} bytes; Y-PSNR {c['psnr'][0]:.3f} / "
                  f"{c['psnr'][1]:.3f} / {c['psnr'][2]:.3f} dB  (goal <= 2 %: plain {verdict(c['plain'], 0.02)}, "
                  f"scene-aware {verdict(c['aware'], 0.02)}; {time.perf_counter() - t:.0f} s)")
        print(f"# load at the end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
