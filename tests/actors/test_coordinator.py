"""The coordinator as a plain class (no Ray) on a real job directory: what storage holds becomes
ledger events on load, a restarted coordinator asks the driver to resync, and an earlier run is
told it was superseded."""

from __future__ import annotations

import os

from farm.actors.coordinator import Coordinator
from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.events import Assign, Resync, ShardDone, Superseded, Tick, WorkerJoined
from farm.job import open_job
from farm.receipt import Receipt
from farm.storage.fs import Storage
from farm.testing.clips import make_test_clip


def _job(tmp_path):
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=12, size=(32, 24))
    p = open_job(JobConfig(input=clip, output=str(tmp_path / "out.mkv"), model=ModelConfig(model="fake:scale=2", face=False),
                          out=OutputConfig(codec="ffv1"), jobs_root=str(tmp_path / "jobs"), shard_frames=4))
    p.owner.release()
    return p


def _commit(p, shard: int, token: str) -> Receipt:
    s = p.spec.shards()[shard]
    name = p.job.segment_name(shard, token)
    p.job.storage.write_bytes(p.job.segment_rel(name), b"chunk")
    r = Receipt(shard=shard, segment=name, frames=s.frames, bytes=5, sha256="ab", start=s.start, stop=s.stop, worker="w1", node="n1", attempt=1)
    p.job.write_receipt(name, r)
    return r


def test_a_restarted_coordinator_resyncs_and_keeps_running_shards(tmp_path):
    """Ray restarts the coordinator mid-run (a new instance, rebuilt from storage): the driver's
    next call gets [Resync()]; the driver re-announces its workers with their shards, and only the
    idle one gets work."""
    p = _job(tmp_path)
    first = Coordinator(p.job.jobs_root, p.job.job_id)
    first.start_run("run-1", 0.0)
    assert first.handle([WorkerJoined("a", "n1", 0.0), WorkerJoined("b", "n1", 0.0)], "run-1") == [Assign(0, "a", 1), Assign(1, "b", 1)]
    restarted = Coordinator(p.job.jobs_root, p.job.job_id)
    assert restarted.handle([Tick(1.0)], "run-1") == [Resync()]
    assert restarted.resync("run-1", [WorkerJoined("a", "n1", 1.0, shard=0, attempt=1), WorkerJoined("b", "n1", 1.0, shard=1, attempt=1),
                                      WorkerJoined("c", "n1", 1.0), Tick(1.0)]) == [Assign(2, "c", 1)]


def test_an_earlier_run_is_superseded(tmp_path):
    """Another driver took the job over (its run started on this coordinator): the earlier
    driver's calls are answered [Superseded()] and change nothing."""
    p = _job(tmp_path)
    coord = Coordinator(p.job.jobs_root, p.job.job_id)
    coord.start_run("old", 0.0)
    coord.handle([WorkerJoined("a", "n1", 0.0)], "old")
    coord.start_run("new", 0.0)
    assert coord.handle([ShardDone(0, "a", 1.0, segment="x", frames=4, bytes=1, sha256="s", seconds=1)], "old") == [Superseded()]
    assert coord.ledger.done == {}


def test_storage_facts_on_load_adopt_new_receipts_and_drop_missing_segments(tmp_path, monkeypatch):
    """The coordinator died after shards 0 and 1 were committed but before its snapshot; since
    then shard 1's segment was deleted. On load shard 0 is done, shard 1 is not, and the
    storage listing cache was dropped before reading (an object store's would be stale)."""
    p = _job(tmp_path)
    dropped = []
    monkeypatch.setattr(Storage, "invalidate_cache", lambda self, rel="": dropped.append(rel))
    r0, r1 = _commit(p, 0, "aaaa"), _commit(p, 1, "bbbb")
    coord = Coordinator(p.job.jobs_root, p.job.job_id)
    assert sorted(coord.ledger.done) == [0, 1] and dropped
    os.remove(os.path.join(p.job.location, "segments", r1.segment))
    again = Coordinator(p.job.jobs_root, p.job.job_id)
    assert sorted(again.ledger.done) == [0]
    assert again.ledger.done[0].record_json() == r0.record_json()
