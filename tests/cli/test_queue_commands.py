"""The queue's commands without a cluster: queueing a folder and a glob with an output template,
`farm ls` in queue order, `farm priority`, `farm pause` and `farm resume`, `farm cancel` of a job that
never started, and a bad input that queues nothing."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from farm.cli.main import main
from farm.cli.queue import unpause
from farm.storage.queuedir import QueueDir
from farm.testing.clips import make_test_clip

COMMON = ["--model", "fake:scale=2", "--no-face", "--codec", "ffv1", "--queue-only"]


def farm_here(args: list[str], code: int = 0):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def ls(jobs: str) -> list[tuple[str, str, int, str]]:
    rows = json.loads(farm_here(["ls", "--jobs-root", jobs, "--json"]).stdout)
    return [(os.path.basename(r["input"]), r["state"], r["queue"]["priority"], r["queue"]["submitter"]) for r in rows]


def test_queue_a_folder_and_a_glob_then_reorder_pause_and_cancel(tmp_path):
    """Ann queues a folder of DVD rips, Bob two phone clips by glob; `farm ls` shows the queue in the
    order it gets workers. Raising a job's priority moves it to the front, pausing sends it to the
    back (and `farm resume` puts it back in its place), and cancelling a job that never started takes
    it off the queue."""
    (tmp_path / "dvd").mkdir()
    for name in ("ep1", "ep2"):
        make_test_clip(str(tmp_path / "dvd" / f"{name}.mkv"), frames=8, size=(32, 24))
    for name in ("phone1", "phone2"):
        make_test_clip(str(tmp_path / f"{name}.mp4"), frames=8, size=(32, 24))
    jobs = str(tmp_path / "jobs")
    (tmp_path / "out").mkdir()
    out = str(tmp_path / "out" / "{stem}_x4.mkv")
    farm_here(["submit", str(tmp_path / "dvd"), "-o", out, "--jobs-root", jobs, "--submitter", "ann"] + COMMON)
    farm_here(["submit", str(tmp_path / "phone*.mp4"), "-o", out, "--jobs-root", jobs, "--submitter", "bob"] + COMMON)
    assert ls(jobs) == [("ep1.mkv", "queued", 0, "ann"), ("ep2.mkv", "queued", 0, "ann"),
                        ("phone1.mp4", "queued", 0, "bob"), ("phone2.mp4", "queued", 0, "bob")]
    by_input = {os.path.basename(e.config.input): e for e in QueueDir(jobs).entries()}
    assert {k: e.config.output for k, e in by_input.items()} == {
        "ep1.mkv": str(tmp_path / "out" / "ep1_x4.mkv"), "ep2.mkv": str(tmp_path / "out" / "ep2_x4.mkv"),
        "phone1.mp4": str(tmp_path / "out" / "phone1_x4.mkv"), "phone2.mp4": str(tmp_path / "out" / "phone2_x4.mkv")}
    assert os.listdir(tmp_path / "out") == [], "queueing writes no output"

    phone2, ep1 = by_input["phone2.mp4"].job_id, by_input["ep1.mkv"].job_id
    assert farm_here(["priority", phone2, "3", "--jobs-root", jobs]).stdout == f"{phone2}: priority 3 (was 0)\n"
    farm_here(["pause", ep1, "--jobs-root", jobs])
    assert ls(jobs) == [("phone2.mp4", "queued", 3, "bob"), ("ep2.mkv", "queued", 0, "ann"),
                        ("phone1.mp4", "queued", 0, "bob"), ("ep1.mkv", "paused", 0, "ann")]
    assert farm_here(["cancel", phone2, "--jobs-root", jobs]).stdout == f"{phone2} taken off the queue\n"
    assert [r[0] for r in ls(jobs)] == ["ep2.mkv", "phone1.mp4", "ep1.mkv"]

    # Queueing the same folder again keeps each job's place (and its pause).
    farm_here(["submit", str(tmp_path / "dvd"), "-o", out, "--jobs-root", jobs, "--submitter", "ann"] + COMMON)
    assert ls(jobs) == [("ep2.mkv", "queued", 0, "ann"), ("phone1.mp4", "queued", 0, "bob"), ("ep1.mkv", "paused", 0, "ann")]
    assert unpause(jobs, ep1)  # what `farm resume` does to a queued job before it runs the queue
    assert ls(jobs) == [("ep1.mkv", "queued", 0, "ann"), ("ep2.mkv", "queued", 0, "ann"), ("phone1.mp4", "queued", 0, "bob")]
    assert not unpause(jobs, phone2)


def test_a_bad_file_in_a_batch_queues_nothing(tmp_path):
    """One of three files is not a video: the submit names it and exits 1, and the queue stays empty,
    so no half of the batch runs while the user fixes the third."""
    for name in ("a", "b"):
        make_test_clip(str(tmp_path / f"{name}.mkv"), frames=8, size=(32, 24))
    (tmp_path / "c.mkv").write_bytes(b"not a video")
    jobs = str(tmp_path / "jobs")
    result = farm_here(["submit", str(tmp_path / "a.mkv"), str(tmp_path / "b.mkv"), str(tmp_path / "c.mkv"), "-o",
                        str(tmp_path / "{stem}_x4.mkv"), "--jobs-root", jobs] + COMMON, code=1)
    assert result.output.splitlines()[-1].startswith(f"error: input {tmp_path / 'c.mkv'}")
    assert QueueDir(jobs).entries() == []


def test_queue_commands_on_a_job_not_queued_say_so(tmp_path):
    """A typo in a job id: one line naming the queue it looked in and how to find the job."""
    jobs = str(tmp_path / "jobs")
    result = farm_here(["priority", "nope-123", "2", "--jobs-root", jobs], code=2)
    assert result.output == (f"error: job nope-123 is not in the queue of {jobs}; `farm ls` lists it, and --jobs-root picks another\n")


def test_ls_times_the_waiting_jobs_from_the_running_ones(tmp_path):
    """Ann queues two episodes, Bob a longer phone clip, for a runner of 2 workers. While her first
    episode runs on both at 20 fps with 20 frames left, `farm ls` says when each waiting job will
    be done: her second episode gets a worker first (she queued first), Bob's clip the other, and
    then hers too. A paused job gets no time, and nothing is timed while nothing runs."""
    from farm.cli.queue import queue_rows

    for name, frames in (("ep1", 40), ("ep2", 40), ("phone1", 60), ("ep3", 10)):
        make_test_clip(str(tmp_path / f"{name}.mkv"), frames=frames, size=(32, 24))
    jobs = str(tmp_path / "jobs")
    out = str(tmp_path / "{stem}_x4.mkv")
    for name, who in (("ep1", "ann"), ("ep2", "ann"), ("phone1", "bob"), ("ep3", "ann")):
        farm_here(["submit", str(tmp_path / f"{name}.mkv"), "-o", out, "--jobs-root", jobs, "--submitter", who] + COMMON)
    qd = QueueDir(jobs)
    ids = {os.path.basename(e.config.input): e.job_id for e in qd.entries()}
    assert {os.path.basename(e.config.input): e.frames for e in qd.entries()} == {"ep1.mkv": 40, "ep2.mkv": 40, "phone1.mkv": 60, "ep3.mkv": 10}
    farm_here(["pause", ids["ep3.mkv"], "--jobs-root", jobs])
    assert [(r["job_id"], r["state"], r["frames_total"], r["eta_s"]) for r in queue_rows(jobs, [])] == [
        (ids["ep1.mkv"], "queued", 40, None), (ids["ep2.mkv"], "queued", 40, None),
        (ids["phone1.mkv"], "queued", 60, None), (ids["ep3.mkv"], "paused", 10, None)]

    qd.write_slots(2)
    running = {"job_id": ids["ep1.mkv"], "state": "running", "driver": "ws1:123", "fps": 20.0, "workers": [{"worker": "w1"}, {"worker": "w2"}],
               "frames_done": 20, "frames_total": 40, "eta_s": 1.0, "input": str(tmp_path / "ep1.mkv")}
    # ep1 ends at 1 s; then ep2 (40 frames) and phone1 get a worker each at 10 fps: ep2 ends at 5 s,
    # and phone1, with 20 frames left then, gets both workers and ends at 6 s.
    assert [(r["job_id"], r["state"], r["eta_s"]) for r in queue_rows(jobs, [running])] == [
        (ids["ep1.mkv"], "running", 1.0), (ids["ep2.mkv"], "queued", 5.0), (ids["phone1.mkv"], "queued", 6.0), (ids["ep3.mkv"], "paused", None)]
