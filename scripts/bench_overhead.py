#!/usr/bin/env python
"""How much longer a job takes than its model: a 1,000-frame `farm submit` with one worker, wall
time ÷ time spent inside the model (the shard logs' enhance_s). Goal ≤ 1.05.

The model is farm's fake one with a fixed cost per frame (``fake:scale=4,ms=40``: 40 ms, about a
GPU's pace at 480p), not a small real model: on a GPU machine the model runs on the device and
leaves the CPU to decoding, encoding and bookkeeping, and a sleeping fake does the same here,
whereas a real model on this 2-core CPU would take the cores from the pipeline it is meant to
measure. Its cost is known exactly, so the ratio is all overhead: start-up, per-shard work, the
decode/encode not hidden behind the model, and the final mux.

Prints the whole job's ratio and, separately, the worker's (sum of shard times ÷ model time) and
the fixed costs around the shards (start-up, mux).

    .venv/bin/python scripts/bench_overhead.py
    .venv/bin/python scripts/bench_overhead.py --frames 1000 --ms 40 --size 64x48
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--ms", type=float, default=40.0, help="model milliseconds per frame")
    p.add_argument("--size", default="64x48", help="WxH of the clip")
    p.add_argument("--shard-frames", type=int, help="frames per shard (default: farm's choice)")
    p.add_argument("--workdir", default=os.path.join("/tmp", "farm-bench-overhead"))
    args = p.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    from farm.testing.clips import make_test_clip

    os.makedirs(args.workdir, exist_ok=True)
    clip = os.path.join(args.workdir, f"clip-{args.frames}-{width}x{height}.mkv")
    if not os.path.exists(clip):
        make_test_clip(clip, frames=args.frames, size=(width, height), fps=25, audio=True, gop=25)
    jobs = os.path.join(args.workdir, "jobs")
    out = os.path.join(args.workdir, "out.mkv")
    extra = ["--shard-frames", str(args.shard_frames)] if args.shard_frames else []
    print(f"machine: {benchlib.machine()}")
    t0 = time.time()
    wall, result = benchlib.farm_submit([clip, "-o", out, "--model", f"fake:scale=4,ms={args.ms:g}", "--no-face", "--codec", "ffv1",
                                         "--workers", "1", "--device", "cpu", "--jobs-root", jobs, "--restart", *extra])
    logs = benchlib.shard_logs(jobs, result["job_id"])
    model = benchlib.summed(logs, "enhance_s")
    shards = sum(r["seconds"] for r in logs)
    startup = logs[0]["started"] - t0
    tail = t0 + wall - logs[-1]["ended"]
    between = wall - startup - tail - shards
    print(f"job: {args.frames} frames {width}x{height} -> x4, fake model {args.ms:g} ms/frame, {len(logs)} shards, one worker, FFV1 output")
    print(f"model time {model:.1f} s; job wall {wall:.1f} s = start-up {startup:.1f} + shards {shards:.1f} "
          f"+ between shards {between:.1f} + mux and exit {tail:.1f}")
    print(f"inside shards: decode {benchlib.summed(logs, 'decode_s'):.1f} s, encode {benchlib.summed(logs, 'encode_s'):.1f} s "
          "(threads, overlapping the model)")
    print(f"overhead: job wall / model = {wall / model:.3f} (goal 1.05); worker shards / model = {shards / model:.3f}; "
          f"without start-up = {(wall - startup) / model:.3f}")


if __name__ == "__main__":
    main()
