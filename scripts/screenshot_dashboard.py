#!/usr/bin/env python
"""Take the README's pictures of a running job: the Ray dashboard's actor list (headless
Chromium) and farm's terminal views, on a simulated 2-GPU-node cluster on 127.0.0.1.

    .venv/bin/python scripts/screenshot_dashboard.py docs/

Writes docs/dashboard-actors.png, docs/dashboard-jobs.png and docs/terminal.txt."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from farm.testing.rayenv import isolate_ray  # noqa: E402

isolate_ray("shot")

from farm.testing.clips import make_test_clip  # noqa: E402
from farm.testing.cluster import SimCluster, wait_for_receipts  # noqa: E402
from farm.testing.process import FARM, run_farm  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1500,760"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", nargs="?", default="docs", help="where the pictures go (default docs/)")
    out_dir = os.path.abspath(ap.parse_args().out_dir)
    os.makedirs(out_dir, exist_ok=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("needs Chromium: apt-get install chromium", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="farm-shot-")
    clip = make_test_clip(os.path.join(work, "holiday.mkv"), frames=240, size=(64, 48), audio=True)
    jobs = os.path.join(work, "jobs")
    with SimCluster(gpu_nodes=2, dashboard=True) as cluster:
        log = open(os.path.join(work, "driver.log"), "w")
        proc = subprocess.Popen(FARM + ["submit", clip, "-o", os.path.join(work, "holiday_x4.mkv"), "--jobs-root", jobs,
                                        "--model", "fake:scale=4,ms=120", "--no-face", "--shard-frames", "8",
                                        "--address", cluster.address], stdout=log, stderr=subprocess.STDOUT)
        wait_for_receipts(jobs, 4, proc)
        time.sleep(3)
        for page, name in (("#/actors", "dashboard-actors.png"), ("#/jobs", "dashboard-jobs.png")):
            subprocess.run([chromium, *FLAGS, f"--user-data-dir={work}/chrome", "--virtual-time-budget=15000",
                            f"--screenshot={os.path.join(out_dir, name)}", cluster.dashboard_url + "/" + page],
                           capture_output=True, timeout=120)
        status = run_farm(["status", "--jobs-root", jobs]).stdout
        job_id = json.loads(run_farm(["ls", "--jobs-root", jobs, "--json"]).stdout)[0]["job_id"]
        proc.wait(timeout=300)
        log.close()
    with open(os.path.join(work, "driver.log")) as f:
        progress = [line for line in f.read().splitlines() if line.startswith(job_id)]
    with open(os.path.join(out_dir, "terminal.txt"), "w") as f:
        f.write("$ farm status\n" + status.replace(work, "/data") + "\n")
        f.write("$ farm submit ... (no terminal: one line every few seconds)\n")
        f.write("\n".join(progress[:3] + ["..."] + progress[-2:]).replace(work, "/data") + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out_dir}/dashboard-actors.png, dashboard-jobs.png, terminal.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
