#!/usr/bin/env python
"""The GPU check behind scripts/gpu_check.sh: RealESRGAN_x4plus's architecture (RRDBNet 64/23/32)
at 854x480 → 4x, fp32 and fp16, batches of 1, 2 and 4 frames, without and with faces (GFPGAN v1.4's
architecture, facexlib's parser), farm's worker against the old script's loop; frames per second
and the fraction of the compute roofline (35.9 MFLOP per input pixel for x4plus).

Offline: every weight is random and written locally (nothing is downloaded), faces come from the
scripted detector. The peaks are assumptions, printed with the results: by default an H200's dense
fp16/bf16 tensor rate, 790 TFLOP/s, and its fp32 rate without tensor cores, 67 TFLOP/s (cuDNN runs
fp32 convolutions as TF32 on tensor cores unless told not to, so fp32 can pass 100 %).

    scripts/gpu_check.sh                          # on a GPU machine, under 8 minutes
    scripts/gpu_check.sh --device cpu --quick     # anywhere, tiny sizes, a couple of minutes
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

FLOP_PER_PIXEL = 35.9e6  # RRDBNet x4plus, per input pixel


class Budget:
    """Stops starting measurements once the time is spent, so the whole check ends in time."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds
        self.skipped: list[str] = []

    def allows(self, what: str) -> bool:
        if time.perf_counter() < self.end:
            return True
        self.skipped.append(what)
        return False


def roofline(fps: float, pixels: int, precision: str, args) -> str:
    peak = (args.peak_fp16 if precision == "fp16" else args.peak_fp32) * 1e12
    return f"{fps * pixels * FLOP_PER_PIXEL / peak * 100:6.2f} %"


def farm_rows(args, clip, weights, script, precision, faces, budget, frames_bgr):
    """farm's worker (decode, enhance, encode in threads) on the whole clip, one shard per batch size."""
    from farm.actors.worker import EnhanceWorker
    from farm.config import JobConfig, ModelConfig, OutputConfig
    from farm.job import open_job

    model = ModelConfig(sr_weights=weights["sr"], face=faces, face_weights=weights["face"], weights_dir=weights["dir"],
                        face_detector=f"scripted:{script}", trust_weights=True, precision=precision, device=args.device,
                        compile=args.compile)
    p = open_job(JobConfig(input=clip, output=os.path.join(args.workdir, "out.mkv"), model=model, out=OutputConfig(codec="ffv1"),
                          jobs_root=os.path.join(args.workdir, "jobs"), shard_frames=args.frames, restart=True))
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "gpu-check", args.device)
    worker.ready()
    rows = []
    if not faces:
        rows.append(("check", precision, _max_diff_to_realesrganer(worker.enhancer, weights, precision, args, frames_bgr[0])))
    for batch in args.batches:
        if not budget.allows(f"farm {precision} batch {batch} faces={faces}"):
            continue
        worker.enhancer.batch_frames = batch
        warm = min(args.frames, 1 if args.device == "cpu" else 2 * batch)
        worker.run_shard(0, 0, warm, attempt=1)  # cuDNN tuning, allocator, first-call costs
        _sync(args.device)
        t0 = time.perf_counter()
        receipt = worker.run_shard(0, 0, args.frames, attempt=1)
        _sync(args.device)
        wall = time.perf_counter() - t0
        rows.append(("farm", precision, batch, faces, args.frames / wall, args.frames / receipt.timings["enhance_s"], receipt.faces))
    del worker
    return rows


class _NoEncode:
    """Stands in for the worker's chunk encoder: takes the frames and writes nothing (an empty
    file), so the same shard measures the GPU's fps without the encode beside it."""

    def __init__(self, path: str, settings) -> None:
        open(path, "wb").close()
        self.frames, self.info = 0, {}

    def write(self, pixels, pts: int) -> None:
        self.frames += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def encode_rows(args, clip, weights, precision, budget):
    """One worker's fps on the same shard with x264 chunks (the job's settings and thread rule)
    and with the encode switched off: what the encode beside the model costs the GPU."""
    from unittest import mock

    from farm.actors import worker as worker_module
    from farm.actors.worker import EnhanceWorker
    from farm.config import JobConfig, ModelConfig, OutputConfig
    from farm.job import open_job

    model = ModelConfig(sr_weights=weights["sr"], face=False, trust_weights=True, precision=precision, device=args.device,
                        compile=args.compile)
    p = open_job(JobConfig(input=clip, output=os.path.join(args.workdir, "out-x264.mkv"), model=model, out=OutputConfig(codec="x264"),
                          jobs_root=os.path.join(args.workdir, "jobs"), shard_frames=args.frames, restart=True))
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "gpu-check-encode", args.device)
    worker.ready()
    fps = {}
    for label in ("x264", "none"):
        if not budget.allows(f"encode cost ({label})"):
            return None
        patch = mock.patch.object(worker_module, "ChunkWriter", _NoEncode) if label == "none" else contextlib.nullcontext()
        with patch:
            worker.run_shard(0, 0, min(args.frames, 2), attempt=1)  # warm-up
            _sync(args.device)
            t0 = time.perf_counter()
            worker.run_shard(0, 0, args.frames, attempt=1)
            _sync(args.device)
            fps[label] = args.frames / (time.perf_counter() - t0)
    del worker
    return fps


def old_rows(args, weights, script, precision, faces, budget, clip):
    """The old script's loop: cv2.VideoCapture reads and one GFPGANer.enhance (or RealESRGANer.enhance
    without faces) per frame; no JPEG writing."""
    if not budget.allows(f"old script {precision} faces={faces}"):
        return []
    import cv2
    import torch
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from gfpgan import GFPGANer
    from realesrgan import RealESRGANer

    from farm.enhance.patches import facexlib_setup

    device = torch.device(args.device)
    net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
    upsampler = RealESRGANer(scale=4, model_path=weights["sr"], model=net, tile=6000, tile_pad=10, pre_pad=10,
                             half=precision == "fp16", device=device)
    restorer = None
    if faces:
        with facexlib_setup(weights["dir"], f"scripted:{script}"):
            restorer = GFPGANer(model_path=weights["face"], upscale=4, arch="clean", channel_multiplier=2, bg_upsampler=upsampler, device=device)

    def one(frame):
        if restorer is None:
            return upsampler.enhance(frame, outscale=4)[0], 0
        _, restored, out = restorer.enhance(frame, has_aligned=False, only_center_face=False, paste_back=True)
        return out, len(restored)

    cap = cv2.VideoCapture(clip)
    ok, frame = cap.read()
    with contextlib.redirect_stdout(io.StringIO()):  # RealESRGANer prints a line per tile
        one(frame)  # warm-up
        _sync(args.device)
        t0 = time.perf_counter()
        n, found = 1, 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            found += one(frame)[1]
            n += 1
        _sync(args.device)
        wall = time.perf_counter() - t0
    cap.release()
    return [("old script", precision, "-", faces, (n - 1) / wall, None, found)]


def _max_diff_to_realesrganer(enhancer, weights, precision, args, frame) -> int:
    import numpy as np
    import torch
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from realesrgan import RealESRGANer

    net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
    reference = RealESRGANer(scale=4, model_path=weights["sr"], model=net, half=precision == "fp16", device=torch.device(args.device))
    expected = reference.enhance(frame, outscale=4)[0]
    got = enhancer.enhance(frame, 0)
    del reference
    return int(np.abs(got.astype(np.int32) - expected.astype(np.int32)).max())


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny sizes (64x48, 4 frames): to show it works, not to measure")
    p.add_argument("--size", help="WxH (default 854x480; --quick 64x48)")
    p.add_argument("--frames", type=int, help="frames per measurement (default 24; --quick 4)")
    p.add_argument("--batches", default="1,2,4")
    p.add_argument("--precisions", help="default fp32,fp16 on CUDA, fp32 on the CPU")
    p.add_argument("--peak-fp16", type=float, default=790.0, help="assumed dense fp16/bf16 TFLOP/s (H200: 790)")
    p.add_argument("--peak-fp32", type=float, default=67.0, help="assumed fp32 TFLOP/s (H200: 67)")
    p.add_argument("--compile", action="store_true", help="torch.compile farm's upscaler")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting measurements after this long")
    p.add_argument("--workdir", default=os.path.join("/tmp", "farm-gpu-check"))
    args = p.parse_args()
    budget = Budget(args.budget_s)
    args.size = args.size or ("64x48" if args.quick else "854x480")
    args.frames = args.frames or (4 if args.quick else 24)
    args.batches = [int(b) for b in args.batches.split(",")]
    precisions = (args.precisions or ("fp32,fp16" if args.device == "cuda" else "fp32")).split(",")
    width, height = (int(v) for v in args.size.lower().split("x"))

    from farm.enhance.patches import install_torchvision_shim

    install_torchvision_shim()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA device; run with --device cpu --quick to check the script itself")
    from farm.testing.clips import make_test_clip
    from farm.testing.fakes import face_row

    os.makedirs(args.workdir, exist_ok=True)
    weights = benchlib.full_size_weights(os.path.join(args.workdir, "weights"))
    clip = make_test_clip(os.path.join(args.workdir, f"clip-{args.frames}-{width}x{height}.mkv"), frames=args.frames,
                          size=(width, height), audio=False)
    side = 0.45 * height
    face_frames = [args.frames - 1] if args.quick else list(range(1, args.frames, 2))
    script = benchlib.face_script(clip, {i: [face_row(width / 2 - side / 2, height * 0.2, side)] for i in face_frames},
                                  os.path.join(args.workdir, "faces.json"))
    frames_bgr = benchlib.decode_bgr(clip)
    print(f"machine: {benchlib.machine()}; torch {torch.__version__}")
    print(f"RRDBNet x4plus {width}x{height} -> {4 * width}x{4 * height}, {args.frames} frames per measurement; "
          f"faces: one on {len(face_frames)} of them; roofline peaks assumed fp16 {args.peak_fp16:g}, fp32 {args.peak_fp32:g} TFLOP/s")
    print(f"{'path':<11}{'precision':<10}{'batch':<7}{'faces':<7}{'fps':>9}{'model fps':>11}{'roofline':>11}")
    for precision in precisions:
        for faces in (False, True):
            rows = farm_rows(args, clip, weights, script, precision, faces, budget, frames_bgr)
            rows += old_rows(args, weights, script, precision, faces, budget, clip)
            for row in rows:
                if row[0] == "check":
                    print(f"  (farm vs RealESRGANer on frame 0, {precision}: max |difference| {row[2]})")
                    continue
                path, prec, batch, has_faces, fps, model_fps, found = row
                model = f"{model_fps:11.2f}" if model_fps else f"{'':11}"
                print(f"{path:<11}{prec:<10}{batch!s:<7}{('yes' if has_faces else 'no'):<7}{fps:9.2f}{model}"
                      f"{roofline(fps, width * height, prec, args):>11}", flush=True)
            if args.device == "cuda":
                torch.cuda.empty_cache()
    fps = encode_rows(args, clip, weights, precisions[-1], budget)
    if fps:
        cost = 100 * (1 - fps["x264"] / fps["none"])
        print(f"encode cost ({precisions[-1]}, one worker, x264 CRF 18 chunks beside the model): {fps['x264']:.2f} fps "
              f"with, {fps['none']:.2f} fps without: the encode costs {cost:.1f} % of the worker's fps (goal <= 10 %)")
    if budget.skipped:
        print(f"skipped (time budget {args.budget_s:g} s spent): {', '.join(budget.skipped)}")


if __name__ == "__main__":
    main()
