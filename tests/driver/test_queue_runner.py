"""The queue's runner on a real (embedded) Ray: jobs from two submitters share the workers in
priority and fair-share order and come out as solo runs do; a runner killed mid-queue is replaced
and the queue goes on without redoing committed work."""

from __future__ import annotations

import os
import time

import pytest
from click.testing import CliRunner

from farm.actors.connect import NAMESPACE
from farm.actors.queue_board import board_name
from farm.cli.main import main
from farm.runner import Runner
from farm.storage.queuedir import QueueDir
from farm.testing.clips import make_test_clip
from farm.testing.cluster import job_segments
from tests.helpers import kill_group, start_farm

pytestmark = pytest.mark.ray

SETTINGS = ["--no-face", "--codec", "ffv1", "--shard-frames", "4", "--quiet"]
COMMON = ["--model", "fake:scale=2,ms=60", *SETTINGS]
# 1 s a shard: the pause lands while most of the job is still ahead, however loaded the machine.
UNHURRIED = ["--model", "fake:scale=2,ms=250", *SETTINGS]


def farm_here(args: list[str]):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def clips(tmp_path, names: list[str], frames: int = 24) -> list[str]:
    os.makedirs(tmp_path / "in", exist_ok=True)
    return [make_test_clip(str(tmp_path / "in" / f"{n}.mkv"), frames=frames, size=(32, 24), audio=True) for n in names]


def solo(tmp_path, clip: str, common: list[str] = COMMON) -> bytes:
    """The output of the clip's job run alone (its own jobs root), as the reference."""
    os.makedirs(tmp_path / "solo", exist_ok=True)
    out = str(tmp_path / "solo" / os.path.basename(clip))
    farm_here(["submit", clip, "-o", out, "--jobs-root", str(tmp_path / "solo-jobs"), "--workers", "1"] + common)
    with open(out, "rb") as f:
        return f.read()


def job_id_of(jobs: str, clip: str) -> str:
    qd = QueueDir(jobs)
    [e] = [e for e in qd.entries() if e.config.input == clip]
    return e.job_id


@pytest.mark.slow
def test_two_submitters_share_two_workers_in_priority_order(tmp_path, local_ray):
    """Ann queues two episodes (the second one urgent, capped at one worker), then Bob a film, on a
    2-worker cluster: the urgent episode starts first despite being queued after Ann's first one,
    Bob's film gets the other worker at once (Ann does not hold both), Ann's first episode waits for
    a free worker; every output is byte for byte what a solo run of its job writes, and the queue
    ends empty."""
    e1, e2, film = clips(tmp_path, ["ep1", "ep2", "film"])
    jobs = str(tmp_path / "jobs")
    os.makedirs(tmp_path / "out", exist_ok=True)
    template = str(tmp_path / "out" / "{stem}_x4.mkv")
    farm_here(["submit", e1, "-o", template, "--jobs-root", jobs, "--submitter", "ann", "--queue-only"] + COMMON)
    farm_here(["submit", e2, "-o", template, "--jobs-root", jobs, "--submitter", "ann", "--queue-only", "--priority", "1",
               "--workers", "1"] + COMMON)
    farm_here(["submit", film, "-o", template, "--jobs-root", jobs, "--submitter", "bob", "--queue-only"] + COMMON)
    ids = {name: job_id_of(jobs, clip) for name, clip in (("ep1", e1), ("ep2", e2), ("film", film))}

    views = []
    runner = Runner(jobs, slots=2, on_update=views.append, poll_s=0.2)
    report = runner.run()

    running = [{j.entry.job_id: j.held for j in v.jobs if j.held} for v in views]
    first = next(r for r in running if r)
    assert first == {ids["ep2"]: 1, ids["film"]: 1}
    ep1_start = next(i for i, r in enumerate(running) if ids["ep1"] in r)
    assert views[ep1_start].finished, "ep1 starts only when a worker is free"
    assert sorted(report.finished) == sorted(ids.values()) and report.failed == () and report.holder is None
    assert QueueDir(jobs).entries() == []
    # The dashboard's view of the queue: a board actor, called once per change with the runner's line.
    board = local_ray.get_actor(board_name(jobs), namespace=NAMESPACE)
    lines = [v.line for i, v in enumerate(views) if i == 0 or v.line != views[i - 1].line]
    assert local_ray.get(board.history.remote()) == lines
    assert lines[0] == f"queue: 2 running ({ids['ep2']} x1, {ids['film']} x1), 1 waiting (next {ids['ep1']}), 0 paused, 0 finished, 0 failed; 2 workers"
    assert lines[-1] == "queue: 0 running (-), 0 waiting, 0 paused, 3 finished, 0 failed; 2 workers"
    for name, clip in (("ep1", e1), ("ep2", e2), ("film", film)):
        with open(template.format(stem=name), "rb") as f:
            assert f.read() == solo(tmp_path, clip), name


@pytest.mark.slow
def test_a_runner_killed_mid_queue_is_replaced_and_the_queue_goes_on(tmp_path, local_ray):
    """The machine running a season's queue dies mid-episode: `farm queue run` elsewhere takes the
    queue over, finishes the episode without redoing its committed shards, runs the rest, and every
    output is what a solo run writes."""
    e1, e2 = clips(tmp_path, ["ep1", "ep2"], frames=40)
    jobs = str(tmp_path / "jobs")
    os.makedirs(tmp_path / "out", exist_ok=True)
    template = str(tmp_path / "out" / "{stem}_x4.mkv")
    proc = start_farm(["submit", e1, e2, "-o", template, "--jobs-root", jobs, "--submitter", "ann", "--workers", "1"] + COMMON,
                      str(tmp_path / "runner.log"))
    deadline = time.time() + 180
    while time.time() < deadline:
        assert proc.poll() is None, open(tmp_path / "runner.log").read()
        done = {e.job_id: job_segments(jobs, e.job_id) for e in QueueDir(jobs).entries()}
        if any(2 <= len(r) for r in done.values()):
            break
        time.sleep(0.2)
    kill_group(proc)
    before = {job_id: r for job_id, r in ((e.job_id, job_segments(jobs, e.job_id)) for e in QueueDir(jobs).entries()) if r}
    assert before and all(len(r) < 10 for r in before.values()), "the kill must land mid-job"
    assert len(QueueDir(jobs).entries()) == 2

    farm_here(["queue", "run", "--jobs-root", jobs, "--workers", "2", "--quiet"])

    assert QueueDir(jobs).entries() == []
    for job_id, kept in before.items():
        after = job_segments(jobs, job_id)
        assert {s: after[s] for s in kept} == kept, "a shard committed before the kill was redone"
    for name, clip in (("ep1", e1), ("ep2", e2)):
        with open(template.format(stem=name), "rb") as f:
            assert f.read() == solo(tmp_path, clip), name


def test_pausing_a_running_job_keeps_its_shards_and_resume_finishes_it(tmp_path, local_ray):
    """Ann pauses an episode mid-job to let a colleague's urgent work through: its workers stop
    within seconds, the runner ends with nothing left to start, and the job keeps its shards; `farm
    resume` puts it back, and the next run finishes it without redoing them, as a solo run would."""
    (ep,) = clips(tmp_path, ["ep"], frames=40)
    jobs = str(tmp_path / "jobs")
    os.makedirs(tmp_path / "out", exist_ok=True)
    template = str(tmp_path / "out" / "{stem}_x4.mkv")
    farm_here(["submit", ep, "-o", template, "--jobs-root", jobs, "--queue-only", "--workers", "1"] + UNHURRIED)
    job_id = job_id_of(jobs, ep)

    def pause_after_two_shards(view) -> None:
        if len(job_segments(jobs, job_id)) >= 2 and not QueueDir(jobs).get(job_id).paused:
            farm_here(["pause", job_id, "--jobs-root", jobs])

    report = Runner(jobs, slots=1, on_update=pause_after_two_shards, poll_s=0.2).run()
    assert report.finished == () and report.failed == ()
    before = job_segments(jobs, job_id)
    assert 2 <= len(before) < 10 and not os.path.exists(template.format(stem="ep"))
    assert QueueDir(jobs).get(job_id).paused

    farm_here(["resume", job_id, "--jobs-root", jobs, "--quiet"])

    assert QueueDir(jobs).entries() == []
    after = job_segments(jobs, job_id)
    assert {s: after[s] for s in before} == before, "a shard committed before the pause was redone"
    with open(template.format(stem="ep"), "rb") as f:
        assert f.read() == solo(tmp_path, ep, UNHURRIED)
