"""Resubmitting a finished job: the encode settings key the job (another --crf is another job,
written with its own settings, never the old file reported as done), and another -o with the same
settings writes that file from the job's kept chunks, without enhancing a frame again."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil

import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.testing.clips import make_test_clip
from farm.video.mux import verify
from farm.video.probe import probe
from tests.helpers import packet_pts

pytestmark = [pytest.mark.ray]


def run_json(args: list[str]) -> dict:
    result = CliRunner().invoke(main, [*args, "--quiet", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def x264_crf(path: str) -> float:
    """The CRF x264 wrote into the stream's settings SEI (its "options:" string)."""
    with open(path, "rb") as f:
        found = re.search(rb"x264 - core .*? options: .*? crf=([0-9.]+)", f.read(), re.S)
    assert found, f"no x264 settings SEI in {path}"
    return float(found[1])


def shard_logs(jobs: str, job_id: str) -> int:
    return len(glob.glob(os.path.join(jobs, job_id, "logs", "*.json")))


def test_resubmit_with_other_crf_and_other_output(local_ray, tmp_path):
    """A user encodes at CRF 30, then asks for a second copy elsewhere (same settings), then
    re-encodes the first path at CRF 20, then points the CRF 30 job at a file it did not write: the copy is written from the kept chunks under the same
    job (no frame enhanced again); the CRF 20 run is another job whose output replaces the CRF 30
    file with CRF 20 settings; `farm resume` of it finds it done."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=24, size=(32, 24), audio=False)
    jobs = str(tmp_path / "jobs")
    first_out, copy_out = str(tmp_path / "a.mkv"), str(tmp_path / "b.mkv")
    common = [clip, "--jobs-root", jobs, "--model", "fake:scale=2", "--no-face", "--workers", "1", "--shard-frames", "8"]
    source = probe(clip)

    first = run_json(["submit", "-o", first_out, "--crf", "30", *common])
    assert x264_crf(first_out) == 30
    done_logs = shard_logs(jobs, first["job_id"])
    assert done_logs == 3

    copy = run_json(["submit", "-o", copy_out, "--crf", "30", *common])
    assert copy["job_id"] == first["job_id"] and not copy.get("already_done")
    assert shard_logs(jobs, first["job_id"]) == done_logs  # concatenated from the kept chunks
    assert x264_crf(copy_out) == 30
    again = run_json(["submit", "-o", copy_out, "--crf", "30", *common])
    assert again["already_done"] is True and again["job_id"] == first["job_id"]

    second = run_json(["submit", "-o", first_out, "--crf", "20", *common])
    assert second["job_id"] != first["job_id"] and not second.get("already_done")
    assert x264_crf(first_out) == 20 and x264_crf(copy_out) == 30
    for path in (first_out, copy_out):
        verify(path, source)
        assert packet_pts(path) == packet_pts(clip)
    with open(os.path.join(jobs, second["job_id"], "job.json")) as f:
        assert json.load(f)["out"] == {"codec": "x264", "crf": 20, "preset": None, "pix_fmt": None}

    # A file at -o that this job did not write (a copy of the CRF 20 output) is never taken for
    # the CRF 30 job's output: it is rewritten from the CRF 30 chunks.
    stray = str(tmp_path / "c.mkv")
    shutil.copy(first_out, stray)
    verify(stray, source)
    over = run_json(["submit", "-o", stray, "--crf", "30", *common])
    assert over["job_id"] == first["job_id"] and not over.get("already_done")
    assert x264_crf(stray) == 30 and shard_logs(jobs, first["job_id"]) == done_logs

    resumed = run_json(["resume", second["job_id"], "--jobs-root", jobs])
    assert resumed["job_id"] == second["job_id"] and resumed["already_done"] is True
    assert x264_crf(first_out) == 20
