"""The queue in the Ray dashboard: while a runner runs the queue of a jobs root, an actor named
``farm-queue <jobs-root>`` stands for it in the actor list, each change of the queue is a call on it
named with the queue's line (``queue: 1 running (ep2-… x2), 3 waiting (next ep3-…), …``, in the task
list and timeline), and it sets farm's queue metrics (``farm_queue_jobs`` by state,
``farm_queue_workers`` by job and submitter)."""

from __future__ import annotations

from typing import Any

import ray

from farm.actors.connect import NAMESPACE
from farm.actors.metrics import QueueMetrics

#: Lines a board keeps (the dashboard's task list keeps its own history).
KEEP = 200


class QueueBoard:
    """Holds the queue's latest lines and metrics; the runner tells it each change."""

    def __init__(self, jobs_root: str) -> None:
        self.jobs_root = jobs_root
        self.lines: list[str] = []
        self.metrics = QueueMetrics(jobs_root)

    def __repr__(self) -> str:  # Ray shows it, once, in the dashboard's actor list
        return f"QueueBoard({self.jobs_root})"

    def show(self, line: str, states: dict[str, int], workers: dict[str, tuple[str, int]]) -> None:
        """``states``: jobs per state (running, waiting, paused, finished, failed); ``workers``: each
        job's submitter and workers held, 0 for the jobs that left since the last call."""
        self.lines = [*self.lines, line][-KEEP:]
        self.metrics.show(states, workers)

    def history(self) -> list[str]:
        return list(self.lines)


def board_name(jobs_root: str) -> str:
    return f"farm-queue {jobs_root}"


def start_board(jobs_root: str) -> Any:
    """The jobs root's board: this runner's, or the one a runner before it left in this Ray."""
    return ray.remote(QueueBoard).options(name=board_name(jobs_root), namespace=NAMESPACE, get_if_exists=True,
                                         num_cpus=0, max_restarts=0).remote(jobs_root)
