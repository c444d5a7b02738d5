"""`farm doctor`: on a machine without a GPU it says so plainly and exits 0 when everything needed
for --device cpu is there; a damaged weights file fails it; with a cluster, a task on each node
reports what that node sees."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.doctor import Check, check_jobs_root


@pytest.fixture(autouse=True)
def node_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FARM_NODE_CACHE_DIR", str(tmp_path / "node-cache"))


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as torch sees it without a GPU (also on a CI machine that has one)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    why = "torch sees no CUDA device" if torch.version.cuda else "torch is a CPU-only build"
    return f"no GPU: {why}; farm runs on the CPU (--device cpu), much slower"


def test_doctor_without_gpu_reports_it_plainly_and_exits_0(tmp_path, no_gpu):
    """A fresh CPU-only machine after scripts/setup.sh, before any weights are fetched: the
    report says "no GPU" and what to fetch, and the exit status is 0 (farm can run with
    --device cpu)."""
    wdir, jobs = tmp_path / "weights", tmp_path / "jobs"
    args = ["doctor", "--weights-dir", str(wdir), "--jobs-root", str(jobs)]
    result = CliRunner().invoke(main, args + ["--json"])
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["GPU"] == {"name": "GPU", "status": "info", "detail": no_gpu}
    assert checks["weights"] == {
        "name": "weights",
        "status": "warn",
        "detail": f"no registry weights in {wdir}; run `farm models fetch --weights-dir {wdir}`",
    }
    assert checks[f"jobs root {jobs}"] == {
        "name": f"jobs root {jobs}",
        "status": "info",
        "detail": f"does not exist yet; `farm submit` creates it under {tmp_path}",
    }
    # Everything else is ok: Python, torch, the model libraries behind the shim, PyAV, its
    # encoders, Ray.
    others = {name: c["status"] for name, c in checks.items() if name not in ("GPU", "weights", f"jobs root {jobs}")}
    assert others == {
        "Python": "ok",
        "torch": "ok",
        "basicsr + models": "ok",
        "PyAV": "ok",
        "encoder ffv1": "ok",
        "encoder libx264": "ok",
        "encoder libx265": "ok",
        "Ray": "ok",
    }

    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0
    [row] = [line.split("│") for line in table.stdout.splitlines() if line.startswith("│ GPU ")]
    assert (row[2].strip(), row[3].strip()[:7]) == ("info", "no GPU:")


def test_doctor_fails_on_a_damaged_weights_file(tmp_path, no_gpu):
    """A truncated GFPGANv1.4.pth in the weights dir: doctor names it, says how to fix it, and
    exits 1."""
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "GFPGANv1.4.pth").write_bytes(b"truncated")
    result = CliRunner().invoke(main, ["doctor", "--weights-dir", str(wdir), "--jobs-root", str(tmp_path), "--json"])
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    import hashlib

    from farm.enhance.registry import FACE_MODELS

    actual = hashlib.sha256(b"truncated").hexdigest()
    assert checks["weights GFPGANv1.4.pth"] == {
        "name": "weights GFPGANv1.4.pth",
        "status": "fail",
        "detail": f"not the official file (sha256 {actual[:12]}…, expected {FACE_MODELS['gfpgan-1.4'].weights.sha256[:12]}…); "
        f"run `farm models fetch --weights-dir {wdir} --force gfpgan-1.4`, or pass --trust-weights to farm submit if you changed it on purpose",
    }
    assert checks["weights RealESRGAN_x4plus.pth"]["status"] == "warn"
    assert checks[f"jobs root {tmp_path}"] == {"name": f"jobs root {tmp_path}", "status": "ok", "detail": "writable"}
    assert result.stderr == "error: 1 check(s) failed: weights GFPGANv1.4.pth\n"


def test_jobs_root_on_object_storage_must_be_writable(tmp_path):
    """A jobs root on object storage (fsspec's in-memory store standing in for S3) is checked by
    writing and removing a probe object."""
    check = check_jobs_root("memory://farm-doctor-test/jobs")
    assert check == Check("jobs root memory://farm-doctor-test/jobs", "ok", "writable")


@pytest.mark.ray
def test_cluster_probe_runs_on_every_node(local_ray, tmp_path):
    """`farm doctor --address`: a task pinned to each live node reports its GPUs and whether it
    sees the jobs root and the weights; a node without weights says so."""
    from farm.actors.node_check import probe_nodes

    jobs, wdir = tmp_path / "jobs", tmp_path / "weights"
    jobs.mkdir()
    [node] = [n for n in local_ray.nodes() if n["Alive"]]
    gpus, cpus = node["Resources"].get("GPU", 0), node["Resources"]["CPU"]
    checks = probe_nodes(None, str(jobs), str(wdir))
    assert checks == [
        Check("cluster", "ok" if gpus else "info", f"1 live node(s), {gpus:g} GPU(s)"),
        Check(f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})", "warn", f"{socket.gethostname()}: {gpus:g} GPU(s), {cpus:g} CPU(s); see below"),
        Check("  weights", "warn", f"no registry weights in {wdir}; run `farm models fetch --weights-dir {wdir}`"),
    ]
