"""The job commands users run while a job is going: status (from the job directory alone), ls,
cancel, resume, and a shard's attempt logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from farm.storage.jobdir import JobDir
from farm.testing.clips import make_test_clip
from farm.testing.cluster import ledger, receipts, wait_for_receipts
from tests.helpers import packet_pts, start_farm


def farm_here(args: list[str]):
    """`farm ARGS` in this process; a command that fails fails the test with its output."""
    from click.testing import CliRunner

    from farm.cli.main import main

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.ray
@pytest.mark.slow
def test_status_cancel_resume(tmp_path, local_ray):
    """Watch a job, cancel it (workers stop, work is kept), then resume it to the end. The job's
    driver is a process of its own, as a user's is; the commands run in this process (they read and
    write the job directory, and resume joins the session's Ray instead of starting one)."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=80, size=(32, 24), audio=True)
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    proc = start_farm(["submit", clip, "-o", out, "--jobs-root", jobs, "--model", "fake:scale=2,ms=150", "--no-face",
                       "--codec", "ffv1", "--shard-frames", "4", "--workers", "2"], str(tmp_path / "driver.log"))
    wait_for_receipts(jobs, 2, proc)
    deadline = time.time() + 60
    while True:  # the coordinator writes its live figures every few seconds
        before = ledger(jobs)
        status = json.loads(farm_here(["status", "--jobs-root", jobs, "--json"]).stdout)
        after = ledger(jobs)
        if (status["fps"] > 0 and len(status["workers"]) == 2) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert status["state"] == "running" and status["shards_total"] == 20 and status["frames_total"] == 80
    # status reads the same ledger snapshot the coordinator wrote just before or just after it
    assert (status["shards_done"], status["frames_done"]) in {
        (len(s["done"]), sum(d["frames"] for d in s["done"].values())) for s in (before, after)
    }
    assert status["fps"] > 0 and len(status["workers"]) == 2
    text = farm_here(["status", "--jobs-root", jobs]).stdout
    assert status["job_id"] in text and "worker   w" in text

    job_id = status["job_id"]
    cancel = farm_here(["cancel", job_id, "--jobs-root", jobs])
    assert cancel.exit_code == 0 and "cancel requested" in cancel.stdout
    assert proc.wait(timeout=60) == 1
    assert "cancelled" in open(tmp_path / "driver.log").read()
    status = json.loads(farm_here(["status", job_id, "--jobs-root", jobs, "--json"]).stdout)
    assert status["state"] == "cancelled" and 0 < status["shards_done"] < 20
    kept = {r["shard"]: r["segment"] for r in receipts(jobs)}

    listed = json.loads(farm_here(["ls", "--jobs-root", jobs, "--json"]).stdout)
    assert [(j["job_id"], j["state"]) for j in listed] == [(job_id, "cancelled")]

    farm_here(["resume", job_id, "--jobs-root", jobs, "--quiet"])
    assert packet_pts(out) == packet_pts(clip)
    final = ledger(jobs)
    assert final["state"] == "done"
    assert all(final["done"][str(s)]["segment"] == seg for s, seg in kept.items())

    logs = json.loads(farm_here(["status", job_id, "--jobs-root", jobs, "--shard", "3"]).stdout)
    shard3 = JobDir(jobs, job_id).read_spec().shards()[3]  # boundaries may sit on the source's keyframes
    assert len(logs) == 1 and logs[0]["shard"] == 3 and logs[0]["frames"] == [shard3.start, shard3.stop]
    assert set(logs[0]["timings"]) == {"decode_s", "enhance_s", "encode_s"}


def test_status_of_unknown_job_is_one_line(tmp_path):
    """`farm status` with a job id that is not there (the `farm` command itself, `python -m farm`):
    one line naming the jobs root and the command that lists its jobs, exit 1, nothing written."""
    result = subprocess.run([sys.executable, "-m", "farm", "status", "nope-123", "--jobs-root", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.strip() == f"error: no job nope-123 under {tmp_path}; `farm ls --jobs-root {tmp_path}` lists the jobs"
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("command", [["status"], ["status", "--shard", "0"], ["resume"], ["cancel"]])
def test_a_job_id_that_leaves_the_jobs_root_is_refused(tmp_path, command):
    """`farm status ../outside` (a typo, or a script passing user input on): the id would resolve
    to a directory outside the jobs root, where a job with that layout lies; it is refused as a
    usage error, and nothing there is read or written."""
    from click.testing import CliRunner

    from farm.cli.main import main

    jobs, outside = tmp_path / "jobs", tmp_path / "outside"
    jobs.mkdir()
    outside.mkdir()
    (outside / "job.json").write_text("{}")
    result = CliRunner().invoke(main, [command[0], "../outside", *command[1:], "--jobs-root", str(jobs)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: bad job id '../outside': a job id is a name that `farm ls` shows (letters, digits, '_', '.', '-'; "
        "not '.' or '..')"
    )
    assert sorted(os.listdir(outside)) == ["job.json"] and os.listdir(jobs) == []


def test_check_job_id_accepts_the_ids_farm_makes():
    """Every id farm makes (`<stem>-<hash>`, stems of any input name) passes the check, and
    path-like ones do not."""
    from farm.config import ModelConfig, OutputConfig, check_job_id, job_id
    from farm.errors import UsageError

    for name in ["holiday.mp4", "/videos/my film (1).mkv", "..mkv", ".hidden.mp4", "s3://b/k/x.y.mov", "ünïcode.avi"]:
        made = job_id(name, "fp", ModelConfig(), OutputConfig())
        assert check_job_id(made) == made
    for bad in [".", "..", "...", "../x", "a/b", "/etc", "", "a\\b", "x" * 200]:
        with pytest.raises(UsageError):
            check_job_id(bad)


def test_token_file_reaches_ray_and_stays_off_the_command_line(tmp_path, monkeypatch):
    """A user keeps the cluster's token in a file (`--token-file ~/.ray/token`, so `ps` never
    shows it): submit hands Ray that token, and a Ray Job's driver is not given the file's path
    or the token among its forwarded options."""
    from click.testing import CliRunner

    from farm import rayjob
    from farm.cli.main import main
    from farm.result import JobResult

    token_file = tmp_path / "token"
    token_file.write_text("secret-token-0123\n")
    seen: dict = {}

    def fake_submit_ray_job(cfg, forwarded, address, *, token=None, detach=False, on_line=print):
        seen.update(forwarded=forwarded, token=token)
        return JobResult("j", cfg.output, state="submitted", submission_id="s", dashboard=address)

    monkeypatch.setattr(rayjob, "submit_ray_job", fake_submit_ray_job)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-the-environment")
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=4, size=(16, 16), audio=False)
    out = str(tmp_path / "out.mkv")
    result = CliRunner().invoke(main, ["submit", clip, "-o", out, "--model", "fake", "--no-face", "--codec", "ffv1",
                                       "--address", "http://head:8265", "--token-file", str(token_file), "--detach"])
    assert result.exit_code == 0, result.output
    assert seen == {"forwarded": [clip, "-o", out, "--model", "fake", "--no-face", "--codec", "ffv1"], "token": "secret-token-0123"}

    (tmp_path / "empty").write_text("\n")
    for path, line in [(tmp_path / "absent", f"error: cannot read --token-file {tmp_path / 'absent'}: No such file or directory; "
                                             "pass a readable file holding the token"),
                       (tmp_path / "empty", f"error: --token-file {tmp_path / 'empty'} must hold the token alone, on one line")]:
        refused = CliRunner().invoke(main, ["submit", clip, "-o", out, "--model", "fake", "--address", "http://head:8265",
                                            "--token-file", str(path)])
        assert refused.exit_code == 2 and refused.stderr.strip() == line
