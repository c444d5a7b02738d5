"""`farm estimate`: the model time and disk it predicts from a timed sample are those of the real
job (within 25 %), measured in the same test run. With a model of fixed cost the model time is
checked here; with real model code the time moves with the machine's load, so its ratio is
scripts/bench_estimate.py's figure and the test checks the disk and the sample's make-up."""

from __future__ import annotations

import glob
import json
import os
import threading

import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.testing.clips import make_test_clip

pytestmark = [pytest.mark.ray]

#: The models of the test jobs, as command-line words (the one place that picks them).
FAKE_40MS = ["--model", "fake:scale=2,ms=40"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return make_test_clip(str(tmp_path_factory.mktemp("estimate") / "clip.mp4"), frames=96, size=(64, 48), audio=False)


def owner_threads() -> set[str]:
    """The job-ownership renewal threads alive in this process."""
    return {t.name for t in threading.enumerate() if t.name.startswith("farm-owner-")}


def run_job(clip: str, tmp_path, model: list[str]) -> tuple[dict, dict]:
    """(the estimate's JSON, the real job's totals) for the same command line."""
    common = [clip, *model, "--no-face", "--device", "cpu", "--workers", "1", "--codec", "x264", "--crf", "23"]
    runner = CliRunner()
    before = owner_threads()  # other tests' jobs opened in this process may still hold theirs
    estimated = runner.invoke(main, ["estimate", *common, "--json", "--price-per-gpu-hour", "2"])
    assert estimated.exit_code == 0, estimated.output
    # The estimate's scratch job is let go before its folder is removed: no renewal outlives it.
    assert owner_threads() - before == set()
    jobs, output = str(tmp_path / "jobs"), str(tmp_path / "out.mkv")
    submitted = runner.invoke(main, ["submit", *common, "-o", output, "--quiet", "--jobs-root", jobs])
    assert submitted.exit_code == 0, submitted.output
    receipts = [json.load(open(p)) for p in glob.glob(os.path.join(jobs, "*", "segments", "*.json"))]
    real = {
        "frames": sum(r["output_frames"] for r in receipts),
        "model_s": sum(r["timings"]["enhance_s"] for r in receipts),
        "chunk_bytes": sum(r["bytes"] for r in receipts),
        "output_bytes": os.path.getsize(output),
    }
    return json.loads(estimated.stdout), real


def check(e: dict, real: dict, *, timed: bool = True) -> None:
    assert e["frames"] == real["frames"] == 96
    predicted_model_s = e["model_hours"] * 3600
    print(f"predicted/real: model {predicted_model_s / real['model_s']:.2f}, chunks {e['chunk_bytes'] / real['chunk_bytes']:.2f}, "
          f"output {e['output_bytes'] / real['output_bytes']:.2f}; first calls {e['samples'][0]['first_calls_s']:.3f} s")
    if timed:
        assert 0.75 <= predicted_model_s / real["model_s"] <= 1.25, (predicted_model_s, real)
    assert 0.75 <= e["chunk_bytes"] / real["chunk_bytes"] <= 1.25, (e, real)
    assert 0.75 <= e["output_bytes"] / real["output_bytes"] <= 1.25, (e, real)
    assert e["cost"] == pytest.approx(e["gpu_hours"] * 2)
    [sample] = e["samples"]
    assert sample["workers"] == 1 and sample["frames"] > 0


def test_fake_model_at_40ms(clip, tmp_path, local_ray):
    """A user estimates a job with a model of known fixed cost (40 ms a frame): the predicted model
    time and disk are the job's."""
    e, real = run_job(clip, tmp_path, FAKE_40MS)
    check(e, real)


@pytest.mark.slow
def test_tiny_real_weights(clip, tmp_path, tiny_x4, local_ray):
    """The same with real (tiny, random) RRDBNet weights run by the real model code on the CPU: the
    frames and the disk are predicted (the model time's ratio is scripts/bench_estimate.py's)."""
    e, real = run_job(clip, tmp_path, ["--sr-weights", tiny_x4])
    check(e, real, timed=False)
