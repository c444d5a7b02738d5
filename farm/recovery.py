"""The ledger's recovery rules (pure): a new run, what storage holds, workers that cannot start,
leases that expire. Each takes the ledger (typed Any: it imports this module) and its event,
changes the ledger through its public methods, and returns instructions."""

from __future__ import annotations

from typing import Any

from farm.events import Instruction, RunStarted, SegmentFound, SegmentMissing, ShardFailed, StopWorker, Tick, WorkerStartFailed
from farm.records import FailureRecord


def run_started(lg: Any, event: RunStarted) -> list[Instruction]:
    """A failed or cancelled job's attempts start over (history stays); a done or muxing job
    muxes again (the driver starts a run only when its output is missing or stale); what the
    last run knew (workers, leases, blocked nodes) is forgotten."""
    if lg.state in ("failed", "cancelled"):
        lg.reason = None
        lg.attempts.clear()
        lg.losses.clear()
    lg.state = "running"  # a done or muxing job's output is missing or stale: the mux runs again
    lg.forget_run()
    return []


def segment_found(lg: Any, event: SegmentFound) -> list[Instruction]:
    """Adopt a receipt committed after the last snapshot (a worker's commit outlives a
    coordinator that died before writing the ledger)."""
    receipt = event.receipt
    shard = receipt.shard
    if shard in lg.done or not 0 <= shard < len(lg.shards):
        return []
    s = lg.shards[shard]
    if not receipt.matches(s.start, s.stop):
        return []  # a receipt of another plan (--restart re-planned the job)
    lg.done[shard] = lg.record(receipt)
    lease = lg.leases.pop(shard, None)
    if lease is not None:
        lg.busy.pop(lease.worker, None)
    return []


def segment_missing(lg: Any, event: SegmentMissing) -> list[Instruction]:
    record = lg.done.get(event.shard)
    if record is None or record.segment != event.segment:
        return []
    del lg.done[event.shard]
    lg.requeue(event.shard)
    if lg.state in ("done", "muxing"):
        lg.state = "running"
    return []


def start_failed(lg: Any, event: WorkerStartFailed) -> list[Instruction]:
    """Give up when workers keep failing to start and none is ready: the error is the
    cluster's or the setup's (missing weights on the nodes, no access to the input)."""
    lg.start_failures.append(event.error)
    if lg.state != "running" or lg.workers:
        return []
    if lg.policy.stops_starting(len(lg.start_failures), event.starting):
        return lg.abort(f"no worker could start: {event.error}")
    return []


def expire_leases(lg: Any, event: Tick) -> list[Instruction]:
    """Leases with no progress for the lease timeout expire, and their shards count as failed
    on their node. A burst (leases on two or more nodes expiring in one tick) is not the
    nodes' fault: a shared-storage stall, or the driver paused, stops every worker at once.
    A burst's leases get one more timeout; expiring again, their shards are requeued as lost
    workers, blamed on no node (no blocking, no attempt spent, no abort)."""
    now = event.now
    expired = [(shard, lease) for shard, lease in lg.leases.items() if now - lease.renewed > lg.policy.lease_timeout_s]
    if not expired:
        return []
    if len({lease.node for _, lease in expired}) >= 2:
        out: list[Instruction] = []
        for shard, lease in expired:
            if not lease.graced:
                lease.graced, lease.renewed = True, now
                continue
            idle = now - lease.since
            out.append(StopWorker(lease.worker, f"no progress on shard {shard} for {idle:.0f} s, with {len(expired) - 1} other leases at once"))
            lg.release(lease.worker)
            lg.workers.pop(lease.worker, None)
            lg.losses[shard] += 1
            lg.add_failure(FailureRecord(shard, lease.node, lease.worker, f"lease expired with {len(expired) - 1} others at once: no progress for {idle:.0f} s",
                                            lg.attempts[shard], lg.wall, reported=False, blamed=False))
            lg.attempts[shard] = max(0, lg.attempts[shard] - 1)
            lg.requeue(shard)
        return out
    out = []
    for shard, lease in expired:
        idle = now - lease.renewed
        out.append(StopWorker(lease.worker, f"no progress on shard {shard} for {idle:.0f} s"))
        out += lg.fail_shard(
            ShardFailed(shard, lease.worker, now, f"lease expired: no progress for {idle:.0f} s", retryable=True), reported=False
        )
        lg.workers.pop(lease.worker, None)
    return out
