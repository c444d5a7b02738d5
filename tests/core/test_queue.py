"""The queue's rules without Ray or storage: who gets the cluster's workers, in what order the queue
is shown, and what a queue entry holds on storage."""

from __future__ import annotations

import dataclasses

import pytest

from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.queue import AGING_S, QueuedJob, QueueEntry, allocate, effective_priority, finish_times, order

T0 = 1_000_000.0


def entry(job_id: str, submitter: str, at: float, priority: int = 0, paused: bool = False) -> QueueEntry:
    return QueueEntry(job_id, JobConfig(f"/videos/{job_id}.mp4", f"/out/{job_id}_x4.mkv"), submitter, T0 + at, priority, paused)


def test_two_submitters_share_the_workers_whoever_queued_more():
    """Ann queues a season of three episodes, then Bob one film, on a 2-GPU cluster: Bob's film gets a
    GPU at once beside Ann's first episode; Ann's later episodes wait their turn."""
    jobs = [QueuedJob(entry("ann-e1", "ann", 0)), QueuedJob(entry("ann-e2", "ann", 1)), QueuedJob(entry("ann-e3", "ann", 2)),
            QueuedJob(entry("bob-film", "bob", 3))]
    assert allocate(jobs, 2, T0 + 10) == {"ann-e1": 1, "bob-film": 1}
    assert allocate(jobs, 4, T0 + 10) == {"ann-e1": 2, "bob-film": 2}


def test_running_jobs_keep_their_workers_and_free_ones_go_to_the_submitter_with_fewest():
    """Ann's episode holds both GPUs of a 3-GPU cluster when Bob queues: the third GPU is Bob's, and
    Ann's job is not shrunk (workers are not stopped mid-shard)."""
    jobs = [QueuedJob(entry("ann-e1", "ann", 0), held=2), QueuedJob(entry("ann-e2", "ann", 1)), QueuedJob(entry("bob-film", "bob", 5))]
    assert allocate(jobs, 3, T0 + 10) == {"ann-e1": 2, "bob-film": 1}
    assert allocate(jobs, 2, T0 + 10) == {"ann-e1": 2}


def test_priority_wins_over_fair_share_and_a_capped_job_leaves_the_rest():
    """Bob marks his film urgent (priority 5): it takes every worker it can use; capped at --workers 1,
    it leaves the second worker to Ann's first episode."""
    urgent = entry("bob-film", "bob", 3, priority=5)
    jobs = [QueuedJob(entry("ann-e1", "ann", 0)), QueuedJob(urgent)]
    assert allocate(jobs, 2, T0 + 10) == {"bob-film": 2}
    assert allocate([QueuedJob(entry("ann-e1", "ann", 0)), QueuedJob(urgent, cap=1)], 2, T0 + 10) == {"bob-film": 1, "ann-e1": 1}


def test_paused_jobs_get_nothing_and_nothing_is_handed_out_past_the_slots():
    """A paused job keeps its place but gets no worker; with everything paused, workers stay idle."""
    jobs = [QueuedJob(entry("ann-e1", "ann", 0, paused=True)), QueuedJob(entry("bob-film", "bob", 3))]
    assert allocate(jobs, 2, T0 + 10) == {"bob-film": 2}
    assert allocate([QueuedJob(entry("ann-e1", "ann", 0, paused=True))], 2, T0 + 10) == {}
    assert allocate([], 2, T0) == {}


def test_a_long_wait_lifts_a_low_priority_job_so_none_starves():
    """A priority -1 job queued before a stream of priority 0 jobs: after AGING_S it ties with them and,
    queued first, gets the next worker."""
    old = entry("old-low", "ann", 0, priority=-1)
    fresh = entry("new", "bob", AGING_S - 5)
    assert effective_priority(old, T0 + AGING_S - 1) == -1
    assert effective_priority(old, T0 + AGING_S) == 0
    assert effective_priority(old, T0 + 3 * AGING_S + 1) == 2
    assert allocate([QueuedJob(old), QueuedJob(fresh)], 1, T0 + AGING_S - 1) == {"new": 1}
    assert allocate([QueuedJob(old), QueuedJob(fresh)], 1, T0 + AGING_S) == {"old-low": 1}


def test_the_queue_is_shown_running_then_waiting_by_priority_then_paused():
    """`farm ls` shows what runs, then what runs next, then what is paused."""
    jobs = [QueuedJob(entry("a", "ann", 0, paused=True)), QueuedJob(entry("b", "ann", 1)), QueuedJob(entry("c", "bob", 2, priority=3)),
            QueuedJob(entry("d", "bob", 3), held=1)]
    assert [j.entry.job_id for j in order(jobs, T0 + 10)] == ["d", "c", "b", "a"]


def test_a_queue_entry_keeps_the_whole_submit():
    """A queued job runs hours later on another machine with exactly the options it was submitted with."""
    cfg = JobConfig("/videos/dv.avi", "/out/dv_x4.mkv", ModelConfig(model="realesr-general-x4v3", face=False, target=(1920, 1080), device="cpu"),
                    OutputConfig(codec="x265", crf=20, preset="slow"), jobs_root="/mnt/jobs", shard_frames=48, workers=2, frames=(10, 90))
    e = QueueEntry("dv-0123456789ab", cfg, "ann@ws1", T0, priority=-2, paused=True, frames=80)
    data = e.to_json()
    assert data["spec_version"] == 1
    assert QueueEntry.from_json(data) == e
    # an entry queued by a farm that did not count frames reads as of unknown length
    del data["frames"]
    assert QueueEntry.from_json(data) == dataclasses.replace(e, frames=None)


def test_a_newer_farms_entry_is_refused_with_the_fix():
    """A queue shared with a newer farm: its entries are refused with "upgrade farm", not misread."""
    data = entry("a", "ann", 0).to_json() | {"spec_version": 2}
    with pytest.raises(ValueError, match="^queue entry a has spec_version 2; this farm reads up to 1: upgrade farm$"):
        QueueEntry.from_json(data)


def test_entries_check_themselves():
    """A hand-edited entry with no submitter or a job id that leaves the jobs root is refused."""
    with pytest.raises(ValueError, match="names its submitter"):
        entry("a", " ", 0)
    with pytest.raises(Exception, match="job id"):
        entry("../etc", "ann", 0)
    with pytest.raises(ValueError, match="held=-1"):
        QueuedJob(entry("a", "ann", 0), held=-1)


def test_waiting_jobs_are_timed_by_the_workers_the_queue_would_give_them():
    """Ann queues three 1000-frame episodes, then Bob a 3000-frame film, on 2 workers of 10 fps: her
    first episode and his film start together; each episode after hers takes the worker her last one
    freed, so her third ends when his film does."""
    jobs = [QueuedJob(entry("ann-e1", "ann", 0)), QueuedJob(entry("ann-e2", "ann", 1)), QueuedJob(entry("ann-e3", "ann", 2)),
            QueuedJob(entry("bob-film", "bob", 3))]
    left = {"ann-e1": 1000, "ann-e2": 1000, "ann-e3": 1000, "bob-film": 3000}
    assert finish_times(jobs, left, 2, 10.0, T0 + 10) == {"ann-e1": 100.0, "ann-e2": 200.0, "ann-e3": 300.0, "bob-film": 300.0}


def test_a_running_job_keeps_its_workers_and_the_urgent_one_goes_next():
    """A job holds both workers with 500 frames left; an urgent job (priority 5) waits behind it and
    then gets both, the plain one after it. A paused job, one of unknown length, and any job when
    nothing measured a speed, get no time."""
    jobs = [QueuedJob(entry("running", "ann", 0), held=2), QueuedJob(entry("plain", "ann", 1)),
            QueuedJob(entry("urgent", "bob", 2, priority=5)), QueuedJob(entry("paused", "bob", 3, paused=True)),
            QueuedJob(entry("unknown", "cat", 4))]
    left = {"running": 500, "plain": 100, "urgent": 200, "paused": 50, "unknown": None}
    assert finish_times(jobs, left, 2, 10.0, T0) == {"running": 25.0, "urgent": 35.0, "plain": 40.0}
    assert finish_times(jobs, left, 2, 0.0, T0) == {}


def test_a_running_job_of_unknown_length_keeps_its_worker_throughout():
    """One of two workers is held by a job whose length is not known: the waiting job is timed on
    the other worker alone."""
    jobs = [QueuedJob(entry("old", "ann", 0), held=1), QueuedJob(entry("next", "bob", 1)), QueuedJob(entry("last", "bob", 2))]
    assert finish_times(jobs, {"next": 100, "last": 50}, 2, 10.0, T0) == {"next": 10.0, "last": 15.0}
