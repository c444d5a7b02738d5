"""The worker pool's placement arithmetic, with Ray's view of the cluster stubbed out."""

from __future__ import annotations

import ray

from farm.actors import pool as pool_mod
from farm.actors.pool import WorkerPool, _Member
from farm.events import WorkerStartFailed


def test_workers_started_before_any_gpu_node_are_not_doubled_when_one_joins(monkeypatch):
    """--device cuda on a cluster without GPU nodes (an autoscaler adds them on demand): the one
    worker started then is waiting to be placed; when a 1-GPU node joins, the pool starts no
    second worker for it (which would wait forever for a GPU), and once the first is placed
    there the node counts as full."""
    nodes: list[dict] = []
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4})
    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 4})
    spawned: list[str | None] = []

    def spawn(self, node):
        spawned.append(node)
        self.count += 1
        self.members[f"w{self.count}"] = _Member(handle=None, node=node)

    monkeypatch.setattr(WorkerPool, "_spawn", spawn)
    pool = WorkerPool(job=None, device="cuda", gpus_per_worker=1.0, cap=None)  # type: ignore[arg-type]
    assert pool.maintain(set(), 0.0) == [] and spawned == [None]
    assert pool.maintain(set(), 1.0) == [] and spawned == [None]
    nodes.append({"NodeID": "gpu-node-x", "Alive": True, "Resources": {"GPU": 1.0}})
    pool.maintain(set(), 2.0)
    assert spawned == [None]  # the first worker will take that GPU
    pool.members["w1"].node = "gpu-node-x"  # placed: ready() reported its node
    pool.maintain(set(), 3.0)
    assert spawned == [None]
    nodes.append({"NodeID": "gpu-node-y", "Alive": True, "Resources": {"GPU": 2.0}})
    pool.maintain(set(), 4.0)
    assert spawned == [None, "gpu-node-y", "gpu-node-y"]
    assert pool_mod._spread({"a": 2, "b": 2}, 3) == {"a": 2, "b": 1}


def _unschedulable(_ref):
    raise ray.exceptions.ActorUnschedulableError("The node specified via NodeAffinitySchedulingStrategy doesn't exist any more")


def test_a_worker_pinned_to_a_node_that_left_is_replaced_not_counted_as_a_failed_start(monkeypatch):
    """A GPU machine dies just after the pool started a worker pinned to it: Ray can never place
    that worker, and its ready() call fails as unschedulable. The job goes on: the worker is
    forgotten with no start failure (the ledger gives up after enough of those), and the next
    maintain() starts none on the dead node. Pinned to a node still alive, the same error is a
    start failure."""
    nodes = [{"NodeID": "gpu-node-a", "Alive": True, "Resources": {"GPU": 1.0}}]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4, "GPU": 1})
    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 4})
    monkeypatch.setattr(ray, "get", _unschedulable)
    monkeypatch.setattr(ray, "kill", lambda handle, no_restart: None)
    pool = WorkerPool(job=None, device="cuda", gpus_per_worker=1.0, cap=None)  # type: ignore[arg-type]
    pool.members = {"w1": _Member(handle=None, node="gpu-node-b"), "w2": _Member(handle=None, node="gpu-node-a")}
    pool.pending_ready = {"ref-1": "w1", "ref-2": "w2"}

    assert pool.on_ready("ref-1", 5.0) == []
    assert set(pool.members) == {"w2"} and pool.pending_ready == {"ref-2": "w2"}
    (failed,) = pool.on_ready("ref-2", 6.0)
    assert failed == WorkerStartFailed("w2", 6.0, "The actor is not schedulable: The node specified via NodeAffinitySchedulingStrategy doesn't exist any more", 0)
    assert pool.members == {} and pool.pending_ready == {}
