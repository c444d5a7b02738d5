"""The tail's cost: one in-process job (fake model, one worker), then the final mux task alone.

Prints the workers' seconds, the tail's seconds, the job directory's chunk bytes and the output's
bytes. The tail copies packets, so its time should follow the output's bytes, not its pixels.

    .venv/bin/python scripts/bench_tail.py [--frames 48] [--size 480x270] [--scale 4] [--codec x264]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from farm.actors.muxer import assemble
from farm.actors.worker import EnhanceWorker
from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.prepare import prepare
from farm.testing import make_test_clip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", default="480x270")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--codec", default="x264")
    ap.add_argument("--shard-frames", type=int, default=8)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_test_clip(os.path.join(tmp, "clip.mp4"), frames=args.frames, size=(w, h), vfr=True, audio_tracks=2)
        out = os.path.join(tmp, "out.mkv")
        cfg = JobConfig(input=clip, output=out, model=ModelConfig(model=f"fake:scale={args.scale}", face=False),
                        out=OutputConfig(codec=args.codec), jobs_root=os.path.join(tmp, "jobs"), shard_frames=args.shard_frames)
        p = prepare(cfg)
        worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu")
        worker.ready()
        t0 = time.perf_counter()
        receipts = [worker.run_shard(s.index, s.start, s.stop, attempt=1) for s in p.spec.shards()]
        workers_s = time.perf_counter() - t0
        chunk_bytes = sum(r["bytes"] for r in receipts)
        t0 = time.perf_counter()
        assemble(p.job.jobs_root, p.job.job_id, out, cfg.out, [(r["segment"], r["start"], r["stop"]) for r in receipts], p.geometry.canvas)
        tail_s = time.perf_counter() - t0
        print(json.dumps({
            "frames": args.frames, "output": f"{w * args.scale}x{h * args.scale}", "codec": args.codec,
            "workers_s": round(workers_s, 2), "tail_s": round(tail_s, 2),
            "chunk_bytes": chunk_bytes, "output_bytes": os.path.getsize(out),
            "load": os.getloadavg()[0],
        }))


if __name__ == "__main__":
    main()
