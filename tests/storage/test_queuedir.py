"""The queue's files on storage: one entry per job, outcomes, and the runner's ownership, on a local
path and on an fsspec URL."""

from __future__ import annotations

import os

import pytest

from farm.config import JobConfig
from farm.queue import QueueEntry
from farm.storage.ownership import Ownership
from farm.storage.queuedir import Outcome, QueueDir


def entry(job_id: str, submitter: str = "ann", priority: int = 0) -> QueueEntry:
    return QueueEntry(job_id, JobConfig(f"/v/{job_id}.mp4", f"/o/{job_id}.mkv"), submitter, 1000.0, priority)


@pytest.mark.parametrize("root", ["local", "memory://farm-queue-test"])
def test_entries_outcomes_and_removal(tmp_path, root):
    """Two submitters queue on one jobs root (a share or a bucket): each entry is its own file, a
    failure is kept beside its entry until the job leaves the queue."""
    jobs = str(tmp_path / "jobs") if root == "local" else root
    qd = QueueDir(jobs)
    assert qd.entries() == [] and qd.get("a-1") is None
    qd.put(entry("a-1"))
    qd.put(entry("b-1", "bob", 2))
    assert sorted(qd.entries(), key=lambda e: e.job_id) == [entry("a-1"), entry("b-1", "bob", 2)]
    assert qd.get("b-1") == entry("b-1", "bob", 2)
    qd.write_outcome("a-1", Outcome("failed", "input /v/a-1.mp4 does not exist; check the path"))
    assert qd.outcome("a-1") == Outcome("failed", "input /v/a-1.mp4 does not exist; check the path")
    assert qd.outcomes() == {"a-1": Outcome("failed", "input /v/a-1.mp4 does not exist; check the path")}
    qd.clear_outcome("a-1")
    assert qd.outcome("a-1") is None
    qd.write_outcome("a-1", Outcome("failed", "x"))
    qd.remove("a-1")
    assert [e.job_id for e in qd.entries()] == ["b-1"] and qd.outcome("a-1") is None


def test_a_torn_entry_is_left_out_not_fatal(tmp_path):
    """A backend without atomic writes left half an entry: the queue goes on without it."""
    qd = QueueDir(str(tmp_path))
    qd.put(entry("a-1"))
    with open(os.path.join(tmp_path, "queue", "entries", "b-1.json"), "w") as f:
        f.write('{"job_id": "b-1", "conf')
    assert qd.entries() == [entry("a-1")]


def test_one_runner_per_queue(tmp_path):
    """Two machines start `farm queue run` on one jobs root: the second sees the first as the holder;
    once the first hands the queue back, the second takes it."""
    first = Ownership(QueueDir(str(tmp_path)), me="ws1-runner", host="ws1")
    second = Ownership(QueueDir(str(tmp_path)), me="ws2-runner", host="ws2")
    assert first.try_take()
    assert not second.try_take() and second.holder is not None and second.holder.host == "ws1"
    first.release()
    assert second.try_take()
    second.release()


def test_outcomes_check_themselves():
    with pytest.raises(ValueError, match="a failure with its error line"):
        Outcome("failed", "")
