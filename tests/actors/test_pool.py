"""The worker pool's placement arithmetic, with Ray's view of the cluster stubbed out."""

from __future__ import annotations

import ray

from farm.actors import pool as pool_mod
from farm.actors.pool import WorkerPool, _Member


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
