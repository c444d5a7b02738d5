"""What chunking costs in size: the same frames encoded once serially with libx264, and again as
independent chunks (each its own encoder, so each starts with an IDR frame), cut (a) at the plain
plan's boundaries and (b) at the scene-aware plan's boundaries (farm.plan with the cuts that
farm.video.scenes finds). Prints the chunked/serial size ratios, and each encode's luma PSNR
(x264 at CRF keeps quality roughly, not exactly, so a size difference of a few tenths of a
percent with a PSNR difference of a few hundredths of a dB is noise).

The content is synthetic: farm.testing.scene_frame scenes (a moving pattern per scene, a flat
tint per scene) with cuts at seeded random places, plus optional grain. Sizes are the encoders'
packet bytes (no container overhead).

    python scripts/bench_chunk_cost.py                  # 1200 frames 640x360, 240-frame shards: ~1 min
    python scripts/bench_chunk_cost.py --size 1280x720  # the same at 720p (1.6 GB of frames in memory)
    python scripts/bench_chunk_cost.py --frames 600 --shard-frames 120   # twice the boundaries
"""

from __future__ import annotations

import argparse
import math
import random
import time
from fractions import Fraction

import av
import numpy as np

from farm.plan import plan_shards, search_ranges, snap_window
from farm.testing.clips import scene_frame
from farm.video.scenes import cuts_in, frame_differences


def make_frames(count: int, width: int, height: int, cuts: list[int], noise: float, seed: int) -> list[av.VideoFrame]:
    """The benchmark's frames as yuv420p VideoFrames, made once and kept in memory (count x
    width x height x 1.5 bytes: 400 MB for the default, 1.6 GB for 1200 frames of 720p)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        pixels = scene_frame(i, width, height, cuts)
        if noise:
            grain = rng.normal(0, noise, pixels.shape).astype(np.float32)
            pixels = np.clip(pixels + grain, 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        out.append(frame)
    return out


def encoder(width: int, height: int, fps: int, crf: int, preset: str) -> av.CodecContext:
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps)
    ctx.options = {"crf": str(crf), "preset": preset}
    return ctx


def encode_bytes(frames: list[av.VideoFrame], ranges: list[tuple[int, int]], make) -> tuple[int, float]:
    """Bytes of the packets of ``frames`` encoded as one stream per range of ``ranges``, and the
    luma PSNR (dB, over all frames) of what they decode to: at CRF, sizes alone can trade bits
    for quality at chunk ends, so both are shown."""
    total, squared = 0, 0.0
    for start, stop in ranges:
        ctx, packets = make(), []
        for frame in frames[start:stop]:
            packets += ctx.encode(frame)
        packets += ctx.encode(None)
        total += sum(p.size for p in packets)
        decoder = av.CodecContext.create("h264", "r")
        decoded = [f for p in [*packets, None] for f in decoder.decode(p)]
        assert len(decoded) == stop - start, (len(decoded), start, stop)
        h = frames[0].height
        for src, got in zip(frames[start:stop], decoded):
            diff = src.to_ndarray()[:h].astype(np.float32) - got.to_ndarray()[:h].astype(np.float32)
            squared += float((diff * diff).mean())
    mse = squared / len(frames)
    return total, 10 * math.log10(255**2 / mse) if mse else float("inf")


def film_arguments(ap: argparse.ArgumentParser) -> None:
    """The synthetic film's options, and the shard plan's and encoder's (this bench's and bench_part_cost's)."""
    ap.add_argument("--frames", type=int, default=1200)
    ap.add_argument("--size", default="640x360", help="WxH (default 640x360; 1280x720 for the real figure)")
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--shard-frames", type=int, default=240, help="240: the default shard size of any video over 10 minutes")
    ap.add_argument("--crf", type=int, default=18)
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--scene-mean", type=int, default=120, help="mean frames between scene cuts (films: 4-6 s shots)")
    ap.add_argument("--noise", type=float, default=2.0, help="grain: standard deviation in 8-bit levels (0: none)")
    ap.add_argument("--seed", type=int, default=1)


def film(a: argparse.Namespace) -> tuple[list, int, int, list[int]]:
    """(frames, width, height, the true scene cuts) of the film the options ask for."""
    width, height = (int(v) for v in a.size.lower().split("x"))
    rng = random.Random(a.seed)
    cuts, f = [], 0
    while True:
        f += max(8, int(rng.expovariate(1 / a.scene_mean)))
        if f >= a.frames:
            break
        cuts.append(f)
    return make_frames(a.frames, width, height, cuts, a.noise, a.seed), width, height, cuts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    film_arguments(ap)
    a = ap.parse_args()
    n = a.frames
    frames, width, height, cuts = film(a)
    t = time.perf_counter()
    window = snap_window(a.shard_frames, a.fps)
    found: set[int] = set()
    for start, stop in search_ranges(n, a.shard_frames, window):
        found.update(cuts_in(frame_differences(frames[start:stop]), start + 1))
    detect_s = time.perf_counter() - t
    plain = plan_shards(n, a.shard_frames)
    aware = plan_shards(n, a.shard_frames, scene_cuts=sorted(found), window=window)

    def make():
        return encoder(width, height, a.fps, a.crf, a.preset)

    def run(ranges):
        t = time.perf_counter()
        size, psnr = encode_bytes(frames, ranges, make)
        return size, psnr, time.perf_counter() - t

    serial, serial_q, serial_s = run([(0, n)])
    plain_b, plain_q, plain_s = run([(s.start, s.stop) for s in plain])
    aware_b, aware_q, aware_s = run([(s.start, s.stop) for s in aware])

    print(f"{n} frames {width}x{height} @ {a.fps} fps, libx264 CRF {a.crf} preset {a.preset}, grain {a.noise}")
    print(f"scene cuts (true):    {cuts}")
    print(f"scene cuts (found):   {sorted(found)}  (near boundaries only, window ±{window} frames, {detect_s:.1f} s)")
    print(f"plain boundaries:     {[s.start for s in plain[1:]]}")
    print(f"scene-aware:          {[s.start for s in aware[1:]]}")
    print(f"serial:               {serial:>10d} bytes            Y-PSNR {serial_q:.3f} dB  ({serial_s:.1f} s)")
    print(f"chunked, plain:       {plain_b:>10d} bytes  {100 * (plain_b / serial - 1):+6.2f} %  Y-PSNR {plain_q:.3f} dB  ({plain_s:.1f} s)")
    print(f"chunked, scene-aware: {aware_b:>10d} bytes  {100 * (aware_b / serial - 1):+6.2f} %  Y-PSNR {aware_q:.3f} dB  ({aware_s:.1f} s)")


if __name__ == "__main__":
    main()
