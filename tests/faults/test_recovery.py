"""Recovery on a real (simulated) cluster shaped as the shipped cloud configs: a head with no CPU
and no GPU, and GPU nodes. The job must finish after all its GPU work (the mux needs no CPU on the
head), and two submits of one job with different outputs each get their file. (A coordinator that
Ray restarts mid-job is in tests/faults/test_hosts.py.)"""

from __future__ import annotations

import os

import pytest

from farm.testing.clips import make_test_clip
from farm.testing.cluster import SimCluster, ledger, wait_for_receipts
from tests.helpers import start_farm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SLOW = "fake:scale=2,ms=120"


def job_args(clip: str, out: str, jobs: str, address: str, model: str = "fake:scale=2,ms=20") -> list[str]:
    return ["submit", clip, "-o", out, "--jobs-root", jobs, "--model", model, "--no-face", "--codec", "ffv1",
            "--shard-frames", "4", "--quiet", "--address", address]


@pytest.fixture(scope="module")
def cpu_less_head():
    with SimCluster(gpu_nodes=1, head_cpus=0) as c:
        yield c


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return make_test_clip(str(tmp_path_factory.mktemp("rc") / "clip.mkv"), frames=48, size=(32, 24), audio=True)


def test_job_finishes_on_a_head_without_cpus(cpu_less_head, clip, tmp_path):
    """A cluster shaped as cluster/aws-gpu.yaml (head with 0 CPUs, the driver on the head) runs a
    job to the end: the mux does not ask the head for a CPU it does not have."""
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    proc = start_farm(job_args(clip, out, jobs, cpu_less_head.address), str(tmp_path / "driver.log"))
    assert proc.wait(timeout=240) == 0, open(tmp_path / "driver.log").read()
    assert ledger(jobs)["state"] == "done"


def test_a_second_submit_with_another_output_writes_its_own_file(cpu_less_head, clip, tmp_path):
    """Two people submit the same job at once with different -o: one driver runs it, the other
    follows; each ends with its own file written (the second by a mux of its own from the kept
    chunks), no shard done twice, and the outputs are the same video."""
    jobs = str(tmp_path / "jobs")
    a, b = str(tmp_path / "a.mkv"), str(tmp_path / "b.mkv")
    first = start_farm(job_args(clip, a, jobs, cpu_less_head.address, SLOW), str(tmp_path / "a.log"))
    wait_for_receipts(jobs, 1, first)
    second = start_farm(job_args(clip, b, jobs, cpu_less_head.address, SLOW), str(tmp_path / "b.log"))
    assert first.wait(timeout=240) == 0, open(tmp_path / "a.log").read()
    assert second.wait(timeout=240) == 0, open(tmp_path / "b.log").read()
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()
    (job_dir,) = [d for d in os.listdir(jobs) if not d.startswith(".")]
    assert len(os.listdir(os.path.join(jobs, job_dir, "logs"))) == 12, "one attempt per shard"
