"""What users watch: named actors and shard calls in Ray's state API and dashboard, farm's
metrics on the Prometheus endpoints, and `farm status` during and after a job."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from farm.testing.clips import make_test_clip
from farm.testing.cluster import SimCluster, ledger, wait_for_receipts
from tests.helpers import run_farm, start_farm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def prometheus_total(ports: list[int], metric: str, job_id: str, tag: str = "job", **tags: str) -> float:
    """Sum of ``metric`` over every node's Prometheus endpoint, for one job (or the value of
    another ``tag``), among the series with ``tags``."""
    total = 0.0
    for port in ports:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(metric + "{") and f'{tag}="{job_id}"' in line and all(f'{k}="{v}"' in line for k, v in tags.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_job_is_legible_in_state_api_dashboard_metrics_and_status(tmp_path):
    """A user opens the dashboard while a job runs: the coordinator, the workers and the shard
    calls carry the job id; the dashboard page lists them; Prometheus has farm's counters, which
    end at the job's frame count; `farm status` agrees with the ledger during and after the job,
    and `--watch` runs without a terminal. A queue run on the cluster stands in the actor list, its
    changes in the task list, and its jobs in Prometheus by state."""
    from ray.util.state import list_actors, list_tasks

    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=128, size=(32, 24), audio=True)
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    with SimCluster(gpu_nodes=2, dashboard=True) as cluster:
        proc = start_farm(["submit", clip, "-o", out, "--jobs-root", jobs, "--model", "fake:scale=2,ms=150", "--no-face",
                           "--codec", "ffv1", "--shard-frames", "4", "--address", cluster.address, "--quiet"],
                          str(tmp_path / "driver.log"))
        wait_for_receipts(jobs, 2, proc)
        job_id = json.loads(run_farm(["ls", "--jobs-root", jobs, "--json"]).stdout)[0]["job_id"]
        time.sleep(2.5)  # the coordinator's snapshot and live figures
        actors = list_actors(address=cluster.dashboard_url, filters=[("state", "=", "ALIVE")], limit=1000)
        (coordinator,) = [a for a in actors if a.name == f"farm-coordinator-{job_id}"]
        # The coordinator alone writes the ledger; held still, the ledger cannot move while status reads it.
        os.kill(coordinator.pid, signal.SIGSTOP)
        try:
            before = ledger(jobs)
            during = json.loads(run_farm(["status", job_id, "--jobs-root", jobs, "--json"]).stdout)
            snap = ledger(jobs)
        finally:
            os.kill(coordinator.pid, signal.SIGCONT)
        assert snap == before
        assert during["state"] == "running" and 0 < during["shards_done"] < 32
        assert (during["shards_done"], during["frames_done"]) == (len(snap["done"]), sum(d["frames"] for d in snap["done"].values()))
        assert during["dashboard_url"] is None or during["dashboard_url"].startswith("http")

        names = sorted(a.name for a in actors if a.name)
        assert f"farm-coordinator-{job_id}" in names, names  # one per job id, whatever path reaches the jobs root
        assert sum(n.startswith(f"farm-worker-{job_id}-") for n in names) == 2, names
        tasks = list_tasks(address=cluster.dashboard_url, limit=1000)
        shard_calls = {t.name for t in tasks if t.name.startswith(f"farm-shard {job_id} ")}
        assert any(re.fullmatch(rf"farm-shard {job_id} \d+ \[\d+, \d+\) attempt 1", n) for n in shard_calls), shard_calls

        chromium = shutil.which("chromium")
        if chromium:
            shot = tmp_path / "dashboard.png"
            for _ in range(4):  # on a loaded machine the page may render before its data arrives
                dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1600,1000",
                                      "--virtual-time-budget=20000", "--dump-dom", cluster.dashboard_url + "/#/actors"],
                                     capture_output=True, text=True, timeout=120).stdout
                if f"farm-coordinator-{job_id}" in dom:
                    break
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1600,1000",
                            "--virtual-time-budget=15000", f"--screenshot={shot}", cluster.dashboard_url + "/#/actors"],
                           capture_output=True, timeout=120)
            assert f"farm-coordinator-{job_id}" in dom and dom.count(f"farm-worker-{job_id}") >= 2
            assert shot.stat().st_size > 10_000

        watch = run_farm(["status", job_id, "--jobs-root", jobs, "--watch", "--interval", "0.5"])
        assert watch.returncode == 0, watch.stderr
        lines = watch.stdout.strip().splitlines()
        assert len(lines) >= 2 and lines[-1].startswith(f"{job_id} done: 128/128 frames")
        assert proc.wait(timeout=120) == 0

        after = json.loads(run_farm(["status", job_id, "--jobs-root", jobs, "--json"]).stdout)
        assert (after["state"], after["frames_done"], after["shards_done"]) == ("done", 128, 32)

        deadline = time.time() + 30
        while prometheus_total(cluster.metrics_ports, "ray_farm_frames_done_total", job_id) < 128 and time.time() < deadline:
            time.sleep(1)
        assert prometheus_total(cluster.metrics_ports, "ray_farm_frames_done_total", job_id) == 128
        assert prometheus_total(cluster.metrics_ports, "ray_farm_shards_done_total", job_id) == 32

        # The queue of a jobs root in the dashboard: two episodes queued by one submit, run by its runner.
        episodes = [make_test_clip(str(tmp_path / f"ep{i}.mkv"), frames=16, size=(32, 24)) for i in (1, 2)]
        queue_jobs = str(tmp_path / "queue-jobs")
        result = run_farm(["submit", *episodes, "-o", str(tmp_path / "{stem}_x2.mkv"), "--jobs-root", queue_jobs, "--model", "fake:scale=2,ms=50",
                           "--no-face", "--codec", "ffv1", "--shard-frames", "4", "--address", cluster.address, "--quiet"])
        assert result.returncode == 0, result.stderr
        boards = list_actors(address=cluster.dashboard_url, filters=[("name", "=", f"farm-queue {queue_jobs}")], limit=10)
        assert len(boards) == 1, boards
        lines = [t.name for t in list_tasks(address=cluster.dashboard_url, limit=10000) if t.name.startswith("queue: ")]
        assert "queue: 0 running (-), 0 waiting, 0 paused, 2 finished, 0 failed; 2 workers" in lines, lines  # the list has no order
        assert any(re.fullmatch(r"queue: [12] running \(ep\d-\w+ x\d(, ep\d-\w+ x\d)?\), \d waiting.*", n) for n in lines), lines
        deadline = time.time() + 30
        while prometheus_total(cluster.metrics_ports, "ray_farm_queue_jobs", queue_jobs, tag="queue", state="finished") < 2 and time.time() < deadline:
            time.sleep(1)
        assert prometheus_total(cluster.metrics_ports, "ray_farm_queue_jobs", queue_jobs, tag="queue", state="finished") == 2
