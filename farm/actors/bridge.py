"""The Ray bridge: the driver's Ray calls to workers (:meth:`RayBridge.assign`), and every finished
call as ledger events (a receipt, a failure, a lost worker, a heartbeat, a join or a failed start).
It re-announces the workers to a restarted coordinator and decides nothing: the ledger does."""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from farm.actors.pool import WorkerPool, ray_cause
from farm.errors import FarmError, ShardGivenBack
from farm.events import Assign, Event, Heartbeat, ShardDone, ShardFailed, ShardReturned, WorkerJoined, WorkerLost
from farm.plan import Shard
from farm.receipt import Receipt

log = logging.getLogger(__name__)


class RayBridge:
    """The Ray side of one driver run: the worker pool and every call in flight."""

    def __init__(self, pool: WorkerPool, shards: list[Shard], job_id: str) -> None:
        self.pool = pool
        self.shards = shards
        self.job_id = job_id
        self.inflight: dict[Any, tuple[str, int, int]] = {}  # run_shard ref -> (worker, shard, attempt)
        self.polls: dict[Any, str] = {}  # progress ref -> worker
        self.last_seen: dict[str, float] = {}
        self.stats: dict[str, dict[str, Any]] = {}

    # -- calls out ----------------------------------------------------------------------------------

    def assign(self, ins: Assign) -> None:
        member = self.pool.members.get(ins.worker)
        if member is None:
            return
        s = self.shards[ins.shard]
        call = f"farm-shard {self.job_id} {s.index} [{s.start}, {s.stop}) attempt {ins.attempt}"
        ref = member.handle.run_shard.options(name=call).remote(s.index, s.start, s.stop, ins.attempt)
        self.inflight[ref] = (ins.worker, ins.shard, ins.attempt)

    def stop_worker(self, worker: str, reason: str) -> None:
        log.warning("stopping worker %s: %s", worker, reason)
        self.pool.remove(worker)
        self.inflight = {r: v for r, v in self.inflight.items() if v[0] != worker}

    def shutdown(self) -> None:
        self.pool.shutdown()
        self.inflight.clear()

    def poll_progress(self) -> list[dict[str, Any]]:
        """Ask busy workers how far they are (answered as heartbeats); the live figures of each."""
        busy = {w for w, _, _ in self.inflight.values()}
        for worker in busy:
            if worker in self.polls.values() or worker not in self.pool.members:
                continue
            self.polls[self.pool.members[worker].handle.progress.remote()] = worker
        stats = []
        for worker, member in self.pool.members.items():
            if not member.ready:
                continue
            s = self.stats.get(worker, {})
            fps = s.get("frames_done", 0) / s["busy_s"] if s.get("busy_s") else 0.0
            shard = next((sh for w, sh, _ in self.inflight.values() if w == worker), None)
            stats.append({"worker": worker, "node": member.node, "host": member.host, "device": member.device, "fps": round(fps, 2),
                          "shard": shard, "shards_done": s.get("shards_done", 0)})
        return stats

    # -- results in -----------------------------------------------------------------------------------

    def collect(self, timeout: float, now: float) -> list[Event]:
        """Wait up to ``timeout`` for any call to finish; every finished call as events."""
        waiting = list(self.inflight) + list(self.pool.pending_ready) + list(self.polls)
        if not waiting:
            return []
        ready, _ = ray.wait(waiting, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
        events: list[Event] = []
        for ref in ready:
            events.extend(self._completed(ref, now))
        return events

    def waiting(self) -> bool:
        return bool(self.inflight or self.pool.pending_ready or self.polls)

    def _completed(self, ref, now: float) -> list[Event]:
        if ref in self.pool.pending_ready:
            return self.pool.on_ready(ref, now)
        if ref in self.polls:
            worker = self.polls.pop(ref)
            try:
                stats = ray.get(ref)
            except (RayActorError, RayTaskError):
                return []
            self.stats[worker] = stats
            if stats["updated"] > self.last_seen.get(worker, 0.0):
                self.last_seen[worker] = stats["updated"]
                return [Heartbeat(worker, now)]
            return []
        worker, shard, _ = self.inflight.pop(ref)
        try:
            receipt = ray.get(ref)
        except RayActorError as exc:
            self.pool.remove(worker)
            return [WorkerLost(worker, now, ray_cause(exc))]
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, ShardGivenBack):  # the worker is leaving: its shard goes back, uncounted
                return [ShardReturned(shard, worker, now, cause.frames_kept)]
            retryable = cause.retryable if isinstance(cause, FarmError) else True
            return [ShardFailed(shard, worker, now, ray_cause(exc), retryable)]
        return [ShardDone(shard, worker, now, receipt if isinstance(receipt, Receipt) else Receipt.from_json(receipt))]

    def rejoin(self, now: float) -> list[Event]:
        """Every ready worker, with the shard it is running, for a restarted coordinator."""
        running = {worker: (shard, attempt) for worker, shard, attempt in self.inflight.values()}
        out: list[Event] = []
        for worker, member in self.pool.members.items():
            if member.ready and member.node is not None:
                shard, attempt = running.get(worker, (None, 0))
                out.append(WorkerJoined(worker, member.node, now, shard, attempt))
        return out
