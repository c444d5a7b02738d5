"""Crash safety of a local job: SIGKILL of the whole `farm submit` process group mid-job, then the
same command again, finishes with the output of an uninterrupted run and redoes only what was not
committed (and what was damaged on disk)."""

from __future__ import annotations

import glob
import json
import os
import time
from collections import Counter

import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.testing.clips import make_test_clip
from tests.helpers import decode_all, kill_group, packet_pts, run_farm, start_farm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL = "fake:scale=2,ms=120"


def receipts(jobs_root: str) -> dict[int, dict]:
    out = {}
    for path in glob.glob(os.path.join(jobs_root, "*", "segments", "*.json")):
        with open(path) as f:
            r = json.load(f)
        out.setdefault(r["shard"], r)
    return out


def submit_in_process(args: list[str]):
    """`farm` in this process, on the session's Ray (where the process boundary is not the point)."""
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_sigkill_then_same_command_resumes(tmp_path, local_ray):
    """A power cut in the middle of a job: committed shards are kept and not recomputed, a segment
    truncated on disk and a half-written scratch file are not trusted, and the final output is
    byte for byte the file an uninterrupted run writes (bit-exact muxing, no dates or random UIDs,
    identical chunks, the redone one included), so frames and timestamps are the uninterrupted
    run's too."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=60, size=(32, 24), vfr=True, audio_tracks=2)
    common = ["--model", MODEL, "--no-face", "--codec", "x264", "--workers", "2", "--shard-frames", "6", "--quiet"]

    reference = str(tmp_path / "reference.mkv")
    submit_in_process(["submit", clip, "-o", reference, "--jobs-root", str(tmp_path / "ref-jobs")] + common)

    jobs = str(tmp_path / "jobs")
    out = str(tmp_path / "out.mkv")
    args = ["submit", clip, "-o", out, "--jobs-root", jobs] + common
    proc = start_farm(args, str(tmp_path / "first.log"))
    deadline = time.time() + 120
    while len(receipts(jobs)) < 2 and time.time() < deadline:
        assert proc.poll() is None, open(tmp_path / "first.log").read()
        time.sleep(0.2)
    kill_group(proc)
    before = receipts(jobs)
    assert 2 <= len(before) < 10, "the kill must land mid-job"
    assert not os.path.exists(out)

    (job_dir,) = glob.glob(os.path.join(jobs, "*"))
    seg_dir = os.path.join(job_dir, "segments")
    damaged = min(before)
    with open(os.path.join(seg_dir, before[damaged]["segment"]), "r+b") as f:
        f.truncate(before[damaged]["bytes"] // 2)
    with open(os.path.join(seg_dir, "000009-deadbeef.tmp-12345678.mkv"), "wb") as f:
        f.write(b"\x1a\x45\xdf\xa3 half a segment")

    again = run_farm(args)
    assert again.returncode == 0, again.stderr

    with open(reference, "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read()
    assert packet_pts(out) == packet_pts(reference) == packet_pts(clip)
    ref_times, ref_frames = decode_all(reference)
    out_times, out_frames = decode_all(out)
    assert out_times == ref_times
    assert all((a == b).all() for a, b in zip(out_frames, ref_frames)) and len(out_frames) == 60

    with open(os.path.join(job_dir, "ledger.json")) as f:
        ledger = json.load(f)
    assert ledger["state"] == "done"
    for shard, receipt in before.items():
        record = ledger["done"][str(shard)]
        if shard == damaged:
            assert record["segment"] != receipt["segment"], "a truncated segment must be redone"
        else:
            assert record["segment"] == receipt["segment"], f"shard {shard} was recomputed"
    attempts = Counter()
    for path in glob.glob(os.path.join(job_dir, "logs", "*.json")):
        with open(path) as f:
            attempts[json.load(f)["shard"]] += 1
    assert all(attempts[shard] == 1 for shard in before if shard != damaged)
    assert attempts[damaged] == 2
    assert not glob.glob(os.path.join(seg_dir, "*.tmp-*")), "scratch files are cleaned up after the mux"


def test_restart_ignores_the_checkpoint(tmp_path, local_ray):
    """--restart recomputes every shard even though the job is complete."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=12, size=(32, 24), audio=False)
    args = ["submit", clip, "-o", str(tmp_path / "o.mkv"), "--jobs-root", str(tmp_path / "jobs"), "--model", "fake",
            "--no-face", "--codec", "ffv1", "--workers", "1", "--shard-frames", "4", "--quiet", "--json"]
    submit_in_process(args)
    second = submit_in_process(args)
    assert json.loads(second.stdout)["already_done"] is True
    third = submit_in_process(args + ["--restart"])
    assert "already_done" not in json.loads(third.stdout)
    (job_dir,) = glob.glob(str(tmp_path / "jobs" / "*"))
    assert len(glob.glob(os.path.join(job_dir, "logs", "*.json"))) == 3
