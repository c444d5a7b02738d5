#!/usr/bin/env python
"""The old single-machine script vs `farm submit` with one worker: same clip (faces on some frames,
decided by a scripted detector), same full-size architectures with the same random weights
(RRDBNet x4plus 64/23/32, GFPGAN v1.4 clean with channel multiplier 2, facexlib's detector and
parser), same device, same deliverable (1920x1080 libx264 CRF 18 yuv420p with the source's audio).

Prints frames per second of each and their ratio, twice: end to end (a process started from
nothing, model loading and farm's Ray start included) and in steady state (the old script's frame
loop and encode; farm from its first shard's start to its verified output), which is what a long
video sees. Goal: farm ≥ 1.5x on a 2-core CPU.

    .venv/bin/python scripts/bench_vs_old.py                      # 12 frames 64x48 on the CPU
    .venv/bin/python scripts/bench_vs_old.py --frames 48 --size 854x480 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--size", default="64x48", help="WxH of the clip")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--face-every", type=int, default=6, help="a face on every Nth frame (from frame 1)")
    p.add_argument("--workdir", default=os.path.join("/tmp", "farm-bench-vs-old"))
    p.add_argument("--profile", action="store_true", help="then profile both frame loops in this process (cProfile)")
    p.add_argument("--workers", type=int, help="farm's workers (default: farm's own default for this machine)")
    p.add_argument("--use-tune-profile", action="store_true", help="let farm use this user's `farm tune` profile (default: farm's defaults only)")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    from farm.testing.clips import make_test_clip

    from farm.testing.fakes import face_row

    os.makedirs(args.workdir, exist_ok=True)
    weights = benchlib.full_size_weights(os.path.join(args.workdir, "weights"))
    clip = make_test_clip(os.path.join(args.workdir, f"clip-{args.frames}-{width}x{height}.mp4"), frames=args.frames,
                          size=(width, height), fps=24, audio=True)
    side = 0.8 * min(width, height)
    face_frames = list(range(1, args.frames, args.face_every))
    script = benchlib.face_script(clip, {i: [face_row(width / 2 - side / 2, height * 0.05, side)] for i in face_frames},
                                  os.path.join(args.workdir, "faces.json"))
    print(f"machine: {benchlib.machine()}")
    print(f"clip: {args.frames} frames {width}x{height}, one face on frames {face_frames}; x4 then fitted into 1920x1080; "
          f"full-size RRDBNet x4plus + GFPGAN v1.4 (random weights); device {args.device}, fp32 on CPU, fp16 on CUDA; "
          f"the old script runs at niceness {benchlib.RAY_WORKER_NICENESS}, as Ray runs farm's worker")

    work = os.path.join(args.workdir, "old")
    shutil.rmtree(work, ignore_errors=True)
    old_out = os.path.join(args.workdir, "old.mp4")
    old_wall, out = benchlib.run([sys.executable, os.path.join(benchlib.ROOT, "scripts", "baseline_old_script.py"), clip,
                                  "-o", old_out, "--work", work, "--sr-weights", weights["sr"], "--face-weights", weights["face"],
                                  "--weights-dir", weights["dir"], "--face-detector", f"scripted:{script}", "--device", args.device],
                                 niceness=benchlib.RAY_WORKER_NICENESS)
    old = json.loads(out.strip().splitlines()[-1])

    jobs = os.path.join(args.workdir, "jobs")
    farm_out = os.path.join(args.workdir, "farm.mp4")
    farm_wall, result = benchlib.farm_submit([
        clip, "-o", farm_out, "--sr-weights", weights["sr"], "--face-weights", weights["face"], "--weights-dir", weights["dir"],
        "--face-detector", f"scripted:{script}", "--trust-weights", "--target", "1080p",
        "--device", args.device, "--jobs-root", jobs, "--restart", *(["--workers", str(args.workers)] if args.workers else [])],
        env=None if args.use_tune_profile else {**os.environ, "XDG_CONFIG_HOME": os.path.join(args.workdir, "no-profile")})
    logs = benchlib.shard_logs(jobs, result["job_id"])
    farm_steady = os.path.getmtime(farm_out) - logs[0]["started"]

    for path in (old_out, farm_out):
        shape = benchlib.video_shape(path)
        if shape != (args.frames, 1920, 1080):
            raise SystemExit(f"{path} is {shape}, expected {(args.frames, 1920, 1080)}")
    old_steady = old["frames_s"] + old["encode_s"]
    n = args.frames
    faces = sum(r.get("receipt", {}).get("faces", 0) for r in logs)
    print(f"old script: {n / old_wall:.3f} fps end to end ({old_wall:.1f} s: imports {old['import_s']:.1f}, "
          f"models {old['load_s']:.1f}, frames {old['frames_s']:.1f}, encode {old['encode_s']:.1f}); "
          f"{n / old_steady:.3f} fps steady; {old['faces']} faces")
    settings = json.load(open(os.path.join(jobs, result["job_id"], "submit.json"))).get("settings", {})
    print(f"farm settings: {len({r['worker'] for r in logs})} workers ({'--workers ' + str(args.workers) if args.workers else 'default'}), "
          f"{len(logs)} shards, recorded {settings}")
    print(f"farm:       {n / farm_wall:.3f} fps end to end ({farm_wall:.1f} s: start-up {farm_wall - farm_steady:.1f}, "
          f"shards and mux {farm_steady:.1f}; inside shards: decode {benchlib.summed(logs, 'decode_s'):.1f}, "
          f"enhance {benchlib.summed(logs, 'enhance_s'):.1f}, encode {benchlib.summed(logs, 'encode_s'):.1f}); "
          f"{n / farm_steady:.3f} fps steady; {faces} faces")
    print(f"ratio farm/old: {old_wall / farm_wall:.2f}x end to end, {old_steady / farm_steady:.2f}x steady (goal 1.5x)")
    if args.profile:
        profile(args, clip, weights, script)


#: Where the frame loops spend their time: (label, file suffix, function name) of cProfile entries.
PROFILE_ROWS = [
    ("RRDBNet forward", "rrdbnet_arch.py", "forward"),
    ("GFPGAN forward", "gfpganv1_clean_arch.py", "forward"),
    ("face parser forward", "parsenet.py", "forward"),
    ("facexlib paste (whole frame)", "face_restoration_helper.py", "paste_faces_to_input_image"),
    ("farm paste (face boxes)", "faces.py", "_paste"),
    ("JPEG writes (pool)", "baseline_old_script.py", "write"),
    ("segment encode", "encode.py", "write"),
]


def profile(args, clip, weights, script) -> None:
    """cProfile of the old script's frame loop and of farm's worker on the same clip, in this
    process, summarised by network and stage (cumulative seconds of the outermost calls)."""
    import cProfile
    import pstats
    import types

    import baseline_old_script as old

    from farm.actors.worker import EnhanceWorker
    from farm.config import JobConfig, ModelConfig, OutputConfig
    from farm.job import open_job

    def summary(stats: pstats.Stats, total: float) -> str:
        parts = []
        for label, suffix, name in PROFILE_ROWS:
            seconds = max((v[3] for (f, _, fn), v in stats.stats.items() if f.endswith(suffix) and fn == name), default=0.0)
            if seconds:
                parts.append(f"{label} {seconds:.1f} s")
        return f"{total:.1f} s: " + ", ".join(parts)

    ns = types.SimpleNamespace(input=clip, work=os.path.join(args.workdir, "old-profile"), sr_weights=weights["sr"],
                               face_weights=weights["face"], weights_dir=weights["dir"], face_detector=f"scripted:{script}",
                               device=args.device, fp16=None)
    shutil.rmtree(ns.work, ignore_errors=True)
    restorer = old.load_models(ns)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # RealESRGANer prints a line per tile
        prof.runcall(old.enhance_frames, ns, restorer)
    print(f"profile, old script frame loop: {summary(pstats.Stats(prof), time.perf_counter() - t0)}")
    del restorer
    model = ModelConfig(sr_weights=weights["sr"], face_weights=weights["face"], weights_dir=weights["dir"],
                        face_detector=f"scripted:{script}", trust_weights=True, target=(1920, 1080), device=args.device)
    p = open_job(JobConfig(input=clip, output=os.path.join(args.workdir, "profile.mkv"), model=model, out=OutputConfig(codec="ffv1"),
                          jobs_root=os.path.join(args.workdir, "profile-jobs"), shard_frames=args.frames, restart=True))
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "profile", args.device)
    worker.ready()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(worker.run_shard, 0, 0, args.frames, 1)
    print(f"profile, farm worker (one shard, all frames): {summary(pstats.Stats(prof), time.perf_counter() - t0)}")


if __name__ == "__main__":
    main()
