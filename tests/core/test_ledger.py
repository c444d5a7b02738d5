"""The job state machine, driven with plain lists of events: scheduling, retries on other nodes,
node blocklists, leases, giving up, persistence and resume. No Ray, no files."""

from __future__ import annotations

import pytest

from farm.events import (
    Abort,
    Assign,
    Cancelled,
    Finish,
    Heartbeat,
    Mux,
    MuxDone,
    RunStarted,
    SegmentFound,
    SegmentMissing,
    ShardDone,
    ShardFailed,
    ShardReturned,
    StopWorker,
    Tick,
    WorkerJoined,
    WorkerLost,
    WorkerStartFailed,
)
from farm.ledger import Ledger
from farm.plan import Shard, default_shard_frames, plan_shards
from farm.receipt import Receipt
from farm.records import GiveUp, Retry, RetryPolicy


def done(shard: int, worker: str, now: float = 1.0) -> ShardDone:
    return ShardDone(shard, worker, now, segment=f"{shard:06d}-x.mkv", frames=10, bytes=100, sha256="ab", seconds=1.0)


def ledger(n: int = 4, **policy) -> Ledger:
    return Ledger(plan_shards(n * 10, 10), RetryPolicy(**policy))


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


def test_a_shard_given_back_by_a_leaving_worker_costs_no_attempt_and_blames_no_node():
    """A spot node gets its preemption notice: its worker commits its finished parts and gives
    shard 0 back. The shard goes to the worker on another node with the same attempt number
    (none spent), nothing is recorded as a failure, the node is not blocked, and the leaving
    worker is stopped and gets no more shards, even after it gives back many times over."""
    lg = ledger(3, max_attempts=1, node_failure_limit=1)
    lg.handle(WorkerJoined("a", "spot", 0), WorkerJoined("b", "n2", 0))
    lg.handle(done(1, "b"))  # b takes shard 2
    out = lg.handle(ShardReturned(0, "a", 2, frames_kept=7))
    assert out == [StopWorker("a", "it gave shard 0 back (7 frames kept): its node is leaving")]
    assert (lg.attempts[0], lg.failures, lg.blocked_nodes, lg.state) == (0, [], set(), "running")
    assert lg.workers == {"b": "n2"} and 0 in lg.pending()
    assert assigns(lg.handle(done(2, "b"))) == [(0, "b")]
    assert lg.attempts[0] == 1  # the first counted attempt, which max_attempts=1 still allows
    assert lg.handle(ShardReturned(0, "b", 4)) == [StopWorker("b", "it gave shard 0 back (0 frames kept): its node is leaving")]
    lg.handle(WorkerJoined("c", "n3", 5))
    assert assigns(lg.handle(ShardFailed(0, "c", 6, "boom"))) == []  # a real failure still counts
    assert lg.state == "failed"


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
    back = Ledger.from_json(lg.to_json(), RetryPolicy())
    assert back.done == lg.done and back.failures == lg.failures and back.attempts == lg.attempts
    assert back.leases == {} and back.workers == {}
    assert back.pending() == [1, 2]


def test_resume_of_a_failed_job_resets_attempts_not_history():
    lg = ledger(1, max_attempts=1)
    lg.handle(WorkerJoined("a", "n1", 0))
    lg.handle(ShardFailed(0, "a", 1, "x"))
    back = Ledger.from_json(lg.to_json(), RetryPolicy(max_attempts=1))
    assert back.state == "failed"
    back.resume()
    assert back.state == "running" and not back.attempts and len(back.failures) == 1
    assert assigns(back.handle(WorkerJoined("b", "n1", 2))) == [(0, "b")]


# -- recovery: restarts, storage facts, start failures, stalls (issue 13 step 3, issue 12) ---------


def test_restarted_coordinator_gets_the_running_workers_back_without_double_work():
    """Ray restarts the job's coordinator mid-job: its ledger comes back from storage with no
    workers. The driver re-announces them, each with the shard it is running: those keep their
    leases (nothing is assigned twice) and the idle worker gets the next shard."""
    lg = ledger(5)
    lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0), WorkerJoined("c", "n3", 0))
    assert lg.handle(done(2, "c", 1)) == [Assign(3, "c", 1)]
    back = Ledger.from_json(lg.to_json(), RetryPolicy())
    assert back.handle(WorkerJoined("a", "n1", 5, shard=0, attempt=1), WorkerJoined("b", "n2", 5, shard=1, attempt=1),
                       WorkerJoined("c", "n3", 5, shard=3, attempt=1), WorkerJoined("d", "n3", 5)) == [Assign(4, "d", 1)]
    assert back.handle(done(0, "a", 6)) == []
    assert back.done[0].attempt == 1 and back.done[0].node == "n1"


def test_a_new_run_of_a_done_job_whose_output_is_missing_muxes_again():
    """The output of a finished job was deleted and the user submits again: the run starts and
    the ledger asks for the mux at once (every shard is done), with no worker needed."""
    lg = ledger(2)
    lg.handle(WorkerJoined("a", "n1", 0))
    lg.handle(done(0, "a"), done(1, "a"))
    lg.handle(MuxDone(3))
    back = Ledger.from_json(lg.to_json(), RetryPolicy())
    assert back.state == "done"
    assert back.handle(RunStarted(0)) == [Mux()]
    assert back.state == "muxing" and back.workers == {}


def test_a_new_run_starts_a_new_clock():
    """The first driver ran for days (its monotonic clock read 900,000 s); the next driver's
    clock starts near 0. A hung worker of the new run still loses its lease after the timeout."""
    lg = ledger(2, lease_timeout_s=10)
    lg.handle(WorkerJoined("a", "n1", 900_000))
    lg.handle(RunStarted(3), WorkerJoined("b", "n2", 3), WorkerJoined("c", "n3", 3))
    assert lg.handle(Heartbeat("c", 14), Tick(14)) == [StopWorker("b", "no progress on shard 0 for 11 s")]
    assert lg.failures[-1].error == "lease expired: no progress for 11 s"


def test_receipts_found_on_storage_are_adopted_and_schedule_nothing():
    """The coordinator died after a worker committed shard 1 but before the ledger was written:
    on load the receipt on storage makes shard 1 done. A receipt of another plan (the job was
    re-planned by --restart) is ignored. Storage facts alone assign nothing."""
    lg = ledger(3)
    found = Receipt(shard=1, segment="000001-x.nut", frames=10, bytes=5, sha256="cd", start=10, stop=20, worker="w9", node="n7", attempt=2)
    stale = Receipt(shard=2, segment="000002-y.nut", frames=4, bytes=5, sha256="ef", start=20, stop=24)
    assert lg.handle(SegmentFound(found), SegmentFound(stale)) == []
    assert sorted(lg.done) == [1] and lg.done[1].record_json() == {
        "segment": "000001-x.nut", "frames": 10, "bytes": 5, "sha256": "cd", "node": "n7", "worker": "w9", "seconds": 0.0, "attempt": 2, "faces": 0}
    assert lg.handle(WorkerJoined("a", "n1", 1)) == [Assign(0, "a", 1)]


def test_a_missing_segment_of_a_done_job_is_redone_then_muxed():
    """Someone deleted a finished job's segment: on load the shard is no longer done and the job
    runs again; the next worker redoes just that shard, and then the mux runs."""
    lg = ledger(2)
    lg.handle(WorkerJoined("a", "n1", 0))
    lg.handle(done(0, "a"), done(1, "a"), MuxDone(2))
    assert lg.handle(SegmentMissing(1, "000001-x.mkv")) == []
    assert lg.state == "running" and sorted(lg.done) == [0]
    assert lg.handle(RunStarted(0), WorkerJoined("b", "n1", 0)) == [Assign(1, "b", 1)]
    assert lg.handle(done(1, "b")) == [Mux()]


def test_workers_that_cannot_start_end_the_job_with_their_error():
    """Every GPU node lacks the weights: each worker fails in ready(). After three failures with
    none ready the job gives up with the workers' own error; one ready worker keeps it going."""
    lg = ledger(2)
    err = "weights realesr-x4 missing on node n1: run farm models fetch"
    assert lg.handle(WorkerStartFailed("w1", 1, err, starting=1), WorkerStartFailed("w2", 2, err, starting=0)) == []
    assert lg.handle(WorkerStartFailed("w3", 3, err)) == [Abort(f"no worker could start: {err}")]
    other = ledger(2)
    other.handle(WorkerJoined("a", "n1", 0))
    assert other.handle(*(WorkerStartFailed(f"w{i}", i, err) for i in range(5))) == []
    assert other.state == "running"


def test_a_burst_of_expiries_is_not_blamed_on_the_nodes():
    """The NFS server stalls (or the driver is paused) for longer than --lease-timeout: every
    worker on every node stops making progress at once. The leases get one more timeout; then
    the shards are requeued as lost workers, with no node blocked, no attempt spent, no abort."""
    lg = ledger(4, lease_timeout_s=10, node_failure_limit=1, max_attempts=1)
    lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0), WorkerJoined("c", "n3", 0))
    assert lg.handle(Tick(11)) == []
    assert lg.failures == [] and len(lg.leases) == 3
    assert lg.handle(Tick(22)) == [
        StopWorker("a", "no progress on shard 0 for 22 s, with 2 other leases at once"),
        StopWorker("b", "no progress on shard 1 for 22 s, with 2 other leases at once"),
        StopWorker("c", "no progress on shard 2 for 22 s, with 2 other leases at once"),
    ]
    assert lg.state == "running" and lg.blocked_nodes == set() and dict(lg.node_failure_counts()) == {}
    assert lg.pending() == [0, 1, 2, 3] and sum(lg.attempts.values()) == 0
    assert lg.handle(WorkerJoined("d", "n1", 23)) == [Assign(0, "d", 1)]


def test_a_stall_that_ends_in_time_costs_nothing():
    """Storage comes back within the extra timeout: the workers report progress again and
    finish their shards; nothing is redone."""
    lg = ledger(2, lease_timeout_s=10)
    lg.handle(WorkerJoined("a", "n1", 0), WorkerJoined("b", "n2", 0))
    assert lg.handle(Tick(11)) == []
    assert lg.handle(Heartbeat("a", 15), Heartbeat("b", 15), Tick(20)) == []
    assert lg.handle(done(0, "a", 21), done(1, "b", 21)) == [Mux()]
    assert lg.failures == []


def test_failure_records_carry_the_wall_clock_not_the_event_clock():
    """Events carry the driver's monotonic clock; `farm status` shows failures at wall-clock
    times, which the coordinator passes apart."""
    lg = ledger(2)
    lg.handle(WorkerJoined("a", "n1", 5.0))
    lg.handle(ShardFailed(0, "a", 6.0, "boom"), wall=1_700_000_000.0)
    assert lg.failures[-1].at == 1_700_000_000.0


def test_one_receipt_from_the_worker_to_the_ledger_and_back():
    """A worker's receipt is written to receipt.json, carried by ShardDone and kept by the
    ledger: one record, and receipt.json of an older farm (the same keys) reads back."""
    r = Receipt(shard=0, segment="000000-a.nut", frames=10, bytes=100, sha256="ab", seconds=1.5, start=0, stop=10,
                output_frames=10, worker="w1", node="n1", host="h", attempt=1, video={"codec": "ffv1"}, timings={"decode_s": 0.1})
    assert Receipt.from_json(r.to_json()) == r and r.segment == "000000-a.nut"
    assert ShardDone(0, "w1", 1.0, r).receipt is r
    lg = ledger(1)
    lg.handle(WorkerJoined("w1", "n1", 0))
    lg.handle(ShardDone(0, "w1", 1.0, r))
    assert lg.to_json()["done"] == {"0": {"segment": "000000-a.nut", "frames": 10, "bytes": 100, "sha256": "ab", "node": "n1",
                                          "worker": "w1", "seconds": 1.5, "attempt": 1, "faces": 0}}
    assert Ledger.from_json(lg.to_json(), RetryPolicy()).done == lg.done


def test_the_retry_policy_decides_from_the_attempts_and_the_errors():
    """The rules behind every give-up, asked directly: a shard that failed twice with the same
    error on two machines is the input's (a damaged frame), so the job stops at once; on one
    machine it gets its attempts; an error the worker calls final stops the job; a lost worker
    is retried until the loss limit; a node is blocked after its limit unless it is the last."""
    policy = RetryPolicy(max_attempts=3, max_losses=2, node_failure_limit=2)
    never = lambda: pytest.fail("asked when it does not matter")  # noqa: E731
    assert policy.decide(attempts=1, retryable=True, same_error_nodes=["n1"], every_attempt_same=never) == Retry()
    assert policy.decide(attempts=2, retryable=True, same_error_nodes=["n1", "n2"], every_attempt_same=never) == GiveUp("all 2 attempts failed the same way")
    assert policy.decide(attempts=2, retryable=True, same_error_nodes=["n1", "n1"], every_attempt_same=never) == Retry()
    assert policy.decide(attempts=3, retryable=True, same_error_nodes=["n1", "n1", "n1"], every_attempt_same=lambda: True) == GiveUp("all 3 attempts failed the same way")
    assert policy.decide(attempts=3, retryable=True, same_error_nodes=["n1", "n1"], every_attempt_same=lambda: False) == GiveUp("all 3 attempts failed")
    assert policy.decide(attempts=1, retryable=False, same_error_nodes=[], every_attempt_same=never) == GiveUp("the error cannot be fixed by a retry")
    assert [policy.after_loss(n) for n in (1, 2)] == [Retry(), GiveUp("2 workers were lost while running it")]
    assert [policy.blocks(1, True), policy.blocks(2, True), policy.blocks(5, False)] == [False, True, False]
    assert [policy.stops_starting(3, 1), policy.stops_starting(3, 2), policy.stops_starting(4, 2)] == [True, False, True]
