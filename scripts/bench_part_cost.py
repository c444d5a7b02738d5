"""What planned parts cost in size: the same frames encoded with libx264 as one chunk per shard
(the scene-aware plan a new job gets) and again as one chunk per planned part of each shard
(farm.plan.plan_parts: what lets a drained worker keep all but the part in progress). Prints the
parts/shards size ratio for each part length asked, and each encode's luma PSNR (at CRF a size
difference of a few tenths of a percent with a few hundredths of a dB is noise). The goal is a
cost of at most 2 % at the default part length (farm.plan.DEFAULT_PART_FRAMES).

Frames, content and encoder are bench_chunk_cost.py's (synthetic scenes with grain, in memory).

    python scripts/bench_part_cost.py                          # the default part length, ~2 min
    python scripts/bench_part_cost.py --part-frames 40 60 120  # several lengths in one run
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script, beside bench_chunk_cost

from bench_chunk_cost import encode_bytes, encoder, film, film_arguments  # noqa: E402

from farm.plan import DEFAULT_PART_FRAMES, plan_parts, plan_shards, search_ranges, snap_window  # noqa: E402
from farm.video.scenes import cuts_in, frame_differences  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    film_arguments(ap)
    ap.add_argument("--part-frames", type=int, nargs="+", default=[DEFAULT_PART_FRAMES])
    a = ap.parse_args()
    n = a.frames
    frames, width, height, _ = film(a)
    window = snap_window(a.shard_frames, a.fps)
    found: set[int] = set()
    for start, stop in search_ranges(n, a.shard_frames, window):
        found.update(cuts_in(frame_differences(frames[start:stop]), start + 1))
    shards = plan_shards(n, a.shard_frames, scene_cuts=sorted(found), window=window)

    def run(ranges):
        t = time.perf_counter()
        size, psnr = encode_bytes(frames, ranges, lambda: encoder(width, height, a.fps, a.crf, a.preset))
        return size, psnr, time.perf_counter() - t

    print(f"{n} frames {width}x{height} @ {a.fps} fps, libx264 CRF {a.crf} preset {a.preset}, grain {a.noise}, "
          f"{len(shards)} scene-aware shards of about {a.shard_frames} frames")
    base, base_q, base_s = run([(s.start, s.stop) for s in shards])
    print(f"one chunk per shard:        {base:>10d} bytes            Y-PSNR {base_q:.3f} dB  ({base_s:.1f} s)")
    for p in a.part_frames:
        parts = [part for s in shards for part in plan_parts(s.start, s.stop, p)]
        size, q, secs = run(parts)
        print(f"parts of <= {p:>3d} frames ({len(parts):>3d}): {size:>10d} bytes  {100 * (size / base - 1):+6.2f} %  "
              f"Y-PSNR {q:.3f} dB  ({secs:.1f} s)  ratio {size / base:.4f}")


if __name__ == "__main__":
    main()
