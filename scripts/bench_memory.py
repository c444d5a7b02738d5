#!/usr/bin/env python
"""A worker's resident memory does not grow with the shards it has done: after 50 shards it is
within 5 % of after 5.

Runs farm's EnhanceWorker in this process (the same class Ray hosts) over 50 shards of a clip,
with the real model code (a small RRDBNet, GFPGAN and facexlib's parser with random weights, faces
from the scripted detector on some shards) and prints the process's resident set size (VmRSS)
after shards 1, 5, 10, ... 50.

    .venv/bin/python scripts/bench_memory.py
    .venv/bin/python scripts/bench_memory.py --shards 50 --no-faces
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=50)
    p.add_argument("--shard-frames", type=int, default=4)
    p.add_argument("--face-every", type=int, default=10, help="a face in every Nth shard")
    p.add_argument("--no-faces", action="store_true")
    p.add_argument("--workdir", default=os.path.join("/tmp", "farm-bench-memory"))
    args = p.parse_args()

    from farm.actors.worker import EnhanceWorker
    from farm.config import JobConfig, ModelConfig, OutputConfig
    from farm.job import open_job
    from farm.testing.clips import make_test_clip
    from farm.testing.fakes import face_row
    from farm.testing.weights import write_face_helper_weights, write_gfpgan_weights, write_rrdbnet_weights

    os.makedirs(args.workdir, exist_ok=True)
    frames = args.shards * args.shard_frames
    clip = make_test_clip(os.path.join(args.workdir, f"clip-{frames}.mkv"), frames=frames, size=(64, 48), audio=False)
    sr = write_rrdbnet_weights(os.path.join(args.workdir, "sr.pth"), scale=4, num_feat=16, num_block=2, num_grow_ch=8)
    face = not args.no_faces
    options: dict = {}
    if face:
        weights_dir = os.path.join(args.workdir, "facexlib")
        if not os.path.isdir(weights_dir):
            write_face_helper_weights(weights_dir)
        gfpgan = os.path.join(args.workdir, "gfpgan_cm1.pth")
        if not os.path.exists(gfpgan):
            write_gfpgan_weights(gfpgan, channel_multiplier=1)
        faces = {s * args.shard_frames: [face_row(14, 4, 38)] for s in range(0, args.shards, args.face_every)}
        script = benchlib.face_script(clip, faces, os.path.join(args.workdir, "faces.json"))
        options = dict(face_weights=gfpgan, weights_dir=weights_dir, face_detector=f"scripted:{script}", trust_weights=True)
    model = ModelConfig(sr_weights=sr, face=face, device="cpu", **options)
    prepared = open_job(JobConfig(input=clip, output=os.path.join(args.workdir, "out.mkv"), model=model, out=OutputConfig(codec="ffv1"),
                                 jobs_root=os.path.join(args.workdir, "jobs"), shard_frames=args.shard_frames, restart=True))
    worker = EnhanceWorker(prepared.job.jobs_root, prepared.job.job_id, "mem", "cpu")
    worker.ready()
    print(f"machine: {benchlib.machine()}")
    print(f"worker in this process: {args.shards} shards of {args.shard_frames} frames 64x48 -> x4, small RRDBNet"
          + (f", GFPGAN + parser on a face every {args.face_every} shards" if face else ", no faces"))
    marks: dict[int, float] = {}
    for s in range(args.shards):
        worker.run_shard(s, s * args.shard_frames, (s + 1) * args.shard_frames, attempt=1)
        if s + 1 == 1 or (s + 1) % 5 == 0:
            gc.collect()
            marks[s + 1] = rss_mib()
            print(f"after {s + 1:3d} shards: RSS {marks[s + 1]:.1f} MiB", flush=True)
    base, last = marks.get(5), marks[max(marks)]
    if base:
        change = (last - base) / base * 100
        print(f"memory: {last:.1f} MiB after {max(marks)} shards vs {base:.1f} MiB after 5: {change:+.1f} % (goal within ±5 %)")


if __name__ == "__main__":
    main()
