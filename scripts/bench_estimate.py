#!/usr/bin/env python
"""How close `farm estimate` comes to the job it estimates, with real model code.

For each model, one clip (farm.testing.clips.make_test_clip, ``--frames`` frames of ``--size``, no
audio) is estimated (``farm estimate --json``) and then run (``farm submit``, one CPU worker,
``--no-face --codec x264 --crf 23``), both in this run; it prints predicted / real for the model
time (the job's summed ``enhance_s`` from its receipts), the chunks' bytes and the output's bytes.
Goal: each within 0.75-1.25. The models: the fixed-cost fake (40 ms a frame) and RRDBNet x4 with
random weights, tiny (``--feat 8 --blocks 1``) unless told otherwise; model time measured on a busy
machine moves with the load, so the machine's load is printed with the figures.

    .venv/bin/python scripts/bench_estimate.py
    .venv/bin/python scripts/bench_estimate.py --frames 192 --size 128x96 --feat 64 --blocks 23
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from farm.testing.rayenv import isolate_ray  # noqa: E402

isolate_ray("estimate", auth=False)

from benchlib import machine  # noqa: E402


def estimate_and_run(clip: str, model: list[str], folder: str) -> tuple[dict, dict]:
    """(the estimate's JSON, the real job's totals) for one command line."""
    from click.testing import CliRunner

    from farm.cli.main import main

    common = [clip, *model, "--no-face", "--device", "cpu", "--workers", "1", "--codec", "x264", "--crf", "23"]
    runner = CliRunner()
    estimated = runner.invoke(main, ["estimate", *common, "--json"])
    if estimated.exit_code != 0:
        raise SystemExit(estimated.output)
    jobs, output = os.path.join(folder, "jobs"), os.path.join(folder, "out.mkv")
    submitted = runner.invoke(main, ["submit", *common, "-o", output, "--quiet", "--jobs-root", jobs])
    if submitted.exit_code != 0:
        raise SystemExit(submitted.output)
    receipts = [json.load(open(p)) for p in glob.glob(os.path.join(jobs, "*", "segments", "*.json"))]
    real = {"model_s": sum(r["timings"]["enhance_s"] for r in receipts), "chunk_bytes": sum(r["bytes"] for r in receipts),
            "output_bytes": os.path.getsize(output)}
    return json.loads(estimated.stdout), real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--size", default="64x48")
    ap.add_argument("--feat", type=int, default=None, help="RRDBNet num_feat (default: the tiny test network's)")
    ap.add_argument("--blocks", type=int, default=None, help="RRDBNet num_block (default: the tiny test network's)")
    args = ap.parse_args()
    import ray

    from farm.testing.clips import make_test_clip
    from farm.testing.weights import write_rrdbnet_weights

    width, height = (int(v) for v in args.size.split("x"))
    ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="farm", log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="farm-bench-estimate-") as tmp:
        clip = make_test_clip(os.path.join(tmp, "clip.mp4"), frames=args.frames, size=(width, height), audio=False)
        shape = {k: v for k, v in (("num_feat", args.feat), ("num_block", args.blocks)) if v is not None}
        weights = write_rrdbnet_weights(os.path.join(tmp, "x4.pth"), scale=4, **shape)
        print(f"# {machine()}; {args.frames} frames {args.size}")
        for name, model in (("fake 40 ms/frame", ["--model", "fake:scale=2,ms=40"]), (f"RRDBNet x4 {shape or 'tiny'}", ["--sr-weights", weights])):
            folder = tempfile.mkdtemp(dir=tmp)
            e, real = estimate_and_run(clip, model, folder)
            print(f"{name}: predicted/real model {e['model_hours'] * 3600 / real['model_s']:.2f} "
                  f"({e['model_hours'] * 3600:.2f} s / {real['model_s']:.2f} s), chunks {e['chunk_bytes'] / real['chunk_bytes']:.2f}, "
                  f"output {e['output_bytes'] / real['output_bytes']:.2f}; first calls {e['samples'][0]['first_calls_s']:.3f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
