"""The job state machine, driven with plain lists of events: scheduling, retries on other nodes,
node blocklists, leases, giving up, persistence and resume. No Ray, no files."""

from __future__ import annotations

import pytest

from farm.ledger import (
    Abort,
    Assign,
    Cancelled,
    Finish,
    Heartbeat,
    Ledger,
    Mux,
    MuxDone,
    Policy,
    ShardDone,
    ShardFailed,
    StopWorker,
    Tick,
    WorkerJoined,
    WorkerLost,
)
from farm.plan import Shard, default_shard_frames, plan_shards


def done(shard: int, worker: str, now: float = 1.0) -> ShardDone:
    return ShardDone(shard, worker, now, segment=f"{shard:06d}-x.mkv", frames=10, bytes=100, sha256="ab", seconds=1.0)


def ledger(n: int = 4, **policy) -> Ledger:
    return Ledger(plan_shards(n * 10, 10), Policy(**policy))


def assigns(instructions) -> list[tuple[int, str]]:
    return [(i.shard, i.worker) for i in instructions if isinstance(i, Assign)]


# -- plan -------------------------------------------------------------------------------------------


def test_plan_covers_every_frame_once():
    shards = plan_shards(61, 8)
    assert [(s.start, s.stop) for s in shards] == [(i, min(i + 8, 61)) for i in range(0, 61, 8)]
    assert str(shards[-1]) == "shard 7 [56, 61)"


@pytest.mark.parametrize("n,size", [(0, 4), (5, 0), (-1, 3)])
def test_plan_refuses_nonsense(n, size):
    with pytest.raises(ValueError):
        plan_shards(n, size)


def test_shard_checks_itself():
    with pytest.raises(ValueError):
        Shard(0, 5, 5)


def test_default_shard_size_bounds():
    assert default_shard_frames(60) == 16
    assert default_shard_frames(64 * 100) == 100
    assert default_shard_frames(10**7) == 240


# -- scheduling -------------------------------------------------------------------------------------


def test_workers_get_shards_in_order_then_mux_then_finish():
    lg = ledger(3)
    out = lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0))
    assert assigns(out) == [(0, "a"), (1, "b")]
    assert assigns(lg.handle(done(0, "a"))) == [(2, "a")]
    assert lg.handle(done(1, "b")) == []
    assert lg.handle(done(2, "a")) == [Mux()]
    assert lg.state == "muxing"
    assert lg.handle(MuxDone(5)) == [Finish()]
    assert lg.state == "done" and lg.frames_done == 30


def test_failed_shard_is_retried_on_another_node_first():
    lg = ledger(2)
    lg.handle(WorkerJoined("a", "n1", 0))
    lg.handle(WorkerJoined("b", "n2", 0))  # a has 0, b has 1
    out = lg.handle(ShardFailed(0, "a", 1, "boom"))
    assert assigns(out) == []  # a is idle, but shard 0 failed on n1 and n2 exists
    out = lg.handle(done(1, "b"))
    assert assigns(out) == [(0, "b")]
    assert lg.attempts[0] == 2


def test_retry_stays_on_the_only_node_when_no_other_exists():
    lg = ledger(1)
    lg.handle(WorkerJoined("a", "n1", 0))
    assert assigns(lg.handle(ShardFailed(0, "a", 1, "boom"))) == [(0, "a")]


def test_shard_exhausting_attempts_fails_the_job_with_a_report():
    lg = ledger(1, max_attempts=3)
    lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0))
    lg.handle(ShardFailed(0, "a", 1, "first"))
    lg.handle(ShardFailed(0, "b", 2, "second"))
    out = lg.handle(ShardFailed(0, "a", 3, "CUDA error at frame 7"))
    (abort,) = [i for i in out if isinstance(i, Abort)]
    assert lg.state == "failed"
    assert "shard 0 [0, 10)" in abort.reason and "n1, n2" in abort.reason and "CUDA error at frame 7" in abort.reason
    assert lg.handle(WorkerJoined("c", "n3", 4)) == []


def test_non_retryable_error_fails_at_once():
    lg = ledger(2)
    lg.handle(WorkerJoined("a", "n1", 0))
    out = lg.handle(ShardFailed(0, "a", 1, "weights corrupt", retryable=False))
    assert any(isinstance(i, Abort) for i in out) and lg.state == "failed"


def test_node_with_too_many_failures_gets_no_more_work():
    lg = ledger(6, node_failure_limit=2, max_attempts=5)
    lg.handle(WorkerJoined("a", "bad", 0), WorkerJoined("b", "good", 0))
    lg.handle(ShardFailed(0, "a", 1, "x"))  # a takes shard 2
    out = lg.handle(ShardFailed(2, "a", 2, "x"))
    assert StopWorker("a", "node bad failed 2 shards") in out
    assert "bad" in lg.blocked_nodes
    out = lg.handle(WorkerJoined("a2", "bad", 3))
    assert [i for i in out if isinstance(i, StopWorker)] == [StopWorker("a2", "node bad is blocked")]
    assert all(w == "b" for _, w in assigns(lg.handle(done(1, "b"))))


def test_all_nodes_blocked_aborts():
    """A node is blocked while another can take its work; when that other node's worker is lost,
    only blocked nodes have workers left, and the job gives up naming the last error."""
    lg = ledger(3, node_failure_limit=1, max_attempts=5)
    lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0))
    assert lg.handle(ShardFailed(0, "a", 1, "x")) == [StopWorker("a", "node n1 failed 1 shards")]
    assert lg.handle(WorkerLost("b", 2)) == [
        Abort("every node with workers is blocked after repeated failures: n1; last error: worker lost: worker died")
    ]
    assert lg.state == "failed"


def test_the_only_node_is_never_blocked_and_a_shard_failing_the_same_way_every_attempt_fails_the_job():
    """A damaged source on a one-node cluster with two workers: every shard fails, each with its
    own decode error. The node is not blocked (no other node could do better); the first shard
    to fail the same way on all its attempts ends the job with that error."""
    lg = ledger(3)  # node_failure_limit=3, max_attempts=3
    e0, e1 = "frame 3 (pts 4) cannot be decoded", "frame 12 (pts 13) cannot be decoded"
    assert lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n1", 0)) == [Assign(0, "a", 1), Assign(1, "b", 1)]
    assert lg.handle(ShardFailed(0, "a", 1, e0)) == [Assign(0, "a", 2)]
    assert lg.handle(ShardFailed(1, "b", 2, e1)) == [Assign(1, "b", 2)]
    assert lg.handle(ShardFailed(0, "a", 3, e0)) == [Assign(0, "a", 3)]
    assert lg.handle(ShardFailed(1, "b", 4, e1)) == [Assign(1, "b", 3)]
    assert lg.node_failure_counts()["n1"] == 0  # both errors repeated by their shards: not the node's
    assert lg.handle(ShardFailed(0, "a", 5, e0)) == [
        Abort(f"shard 0 [0, 10) failed: all 3 attempts failed the same way; nodes tried: n1; last error: {e0}")
    ]
    assert lg.blocked_nodes == set() and lg.state == "failed"


def test_shard_failing_the_same_way_on_two_nodes_fails_the_job_at_once():
    """The same decode error from two machines is the file's fault: no third attempt, and no
    node is blocked for it."""
    lg = ledger(3, max_attempts=5, node_failure_limit=1)
    err = "frame 6 (pts 7) of in.avi was not produced by the decoder"
    assert lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0)) == [Assign(0, "a", 1), Assign(1, "b", 1)]
    assert lg.handle(ShardFailed(0, "a", 1, err)) == [StopWorker("a", "node n1 failed 1 shards")]
    assert lg.handle(done(1, "b", 2)) == [Assign(0, "b", 2)]
    assert lg.handle(ShardFailed(0, "b", 3, err)) == [
        Abort(f"shard 0 [0, 10) failed: all 2 attempts failed the same way; nodes tried: n1, n2; last error: {err}")
    ]
    assert (lg.node_failure_counts()["n1"], lg.node_failure_counts()["n2"]) == (0, 0)


def test_different_errors_on_two_nodes_are_retried():
    """Two nodes failing one shard in different ways (a driver bug on one, a timeout on the
    other) say nothing certain about the input: the shard is retried."""
    lg = ledger(2, max_attempts=3)
    assert lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0)) == [Assign(0, "a", 1), Assign(1, "b", 1)]
    assert lg.handle(ShardFailed(0, "a", 1, "CUDA error: an illegal memory access")) == []
    assert lg.handle(done(1, "b", 2)) == [Assign(0, "b", 2)]
    assert lg.handle(ShardFailed(0, "b", 3, "read timed out")) == [Assign(0, "a", 3)]
    assert (lg.node_failure_counts()["n1"], lg.node_failure_counts()["n2"]) == (1, 1)


def test_lost_workers_never_count_as_the_same_failure():
    """Two preempted machines lose the same shard with the same words: that is not the input's
    fault, so the shard is simply run again."""
    lg = ledger(1, max_attempts=5)
    lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0))
    assert lg.handle(WorkerLost("a", 1)) == [Assign(0, "b", 2)]
    assert lg.handle(WorkerLost("b", 2)) == []
    assert lg.state == "running" and lg.pending() == [0]


def test_lost_worker_requeues_its_shard_without_spending_an_attempt():
    lg = ledger(2)
    lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0))
    lg.handle(done(1, "b"))
    assert assigns(lg.handle(WorkerLost("a", 2))) == [(0, "b")]
    assert lg.losses[0] == 1
    assert lg.failures[-1].error.startswith("worker lost")


def test_hung_worker_loses_its_lease_after_the_timeout():
    lg = ledger(2, lease_timeout_s=10)
    lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0))
    lg.handle(done(1, "b", now=1))
    assert lg.handle(Heartbeat("a", 8), Tick(9)) == []
    out = lg.handle(Tick(19))
    assert StopWorker("a", "no progress on shard 0 for 11 s") in out
    assert assigns(out) == [(0, "b")]
    assert "lease expired" in lg.failures[-1].error


def test_late_result_of_an_expired_lease_changes_nothing():
    lg = ledger(1, lease_timeout_s=5)
    lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0))
    lg.handle(Tick(10))  # a loses shard 0 to b
    first = lg.handle(done(0, "b", 11))
    assert first == [Mux()]
    assert lg.handle(done(0, "a", 12)) == []
    assert lg.done[0].worker == "b"


def test_cancel_stops_every_worker():
    lg = ledger(3)
    lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0))
    out = lg.handle(Cancelled(1))
    assert {i.worker for i in out if isinstance(i, StopWorker)} == {"a", "b"}
    assert lg.state == "cancelled" and not lg.leases


# -- persistence ------------------------------------------------------------------------------------


def test_round_trip_keeps_progress_and_drops_leases():
    lg = ledger(3)
    lg.handle(WorkerJoined("a", "n1", 0))
    lg.handle(done(0, "a"))
    lg.handle(ShardFailed(1, "a", 2, "x"))
    back = Ledger.from_json(lg.to_json(), Policy())
    assert back.done == lg.done and back.failures == lg.failures and back.attempts == lg.attempts
    assert back.leases == {} and back.workers == {}
    assert back.pending() == [1, 2]


def test_resume_of_a_failed_job_resets_attempts_not_history():
    lg = ledger(1, max_attempts=1)
    lg.handle(WorkerJoined("a", "n1", 0))
    lg.handle(ShardFailed(0, "a", 1, "x"))
    back = Ledger.from_json(lg.to_json(), Policy(max_attempts=1))
    assert back.state == "failed"
    back.resume()
    assert back.state == "running" and not back.attempts and len(back.failures) == 1
    assert assigns(back.handle(WorkerJoined("b", "n1", 2))) == [(0, "b")]
