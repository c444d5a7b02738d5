"""A real multi-node Ray cluster on this machine for tests and scripts: a head without GPUs and
nodes with logical GPUs, all on 127.0.0.1, with node death noticed within seconds."""

from __future__ import annotations

import glob
import json
import os
import socket
import time

from ray.cluster_utils import Cluster

FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
    "metrics_report_interval_ms": 1000,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimCluster:
    """``with SimCluster(gpu_nodes=2) as c: c.address``; ``c.kill(node)``; ``c.add_gpu_node()``."""

    def __init__(self, gpu_nodes: int = 2, cpus_per_node: int = 2, dashboard: bool = False, head_cpus: int = 1) -> None:
        self.metrics_ports: list[int] = [free_port()]
        head_args: dict = {
            "num_cpus": head_cpus,
            "num_gpus": 0,
            "include_dashboard": dashboard,
            "metrics_export_port": self.metrics_ports[0],
            "_system_config": FAST_HEALTH_CHECKS,
        }
        if dashboard:
            head_args.update(dashboard_host="127.0.0.1", dashboard_port=free_port(), dashboard_agent_listen_port=free_port())
        self.cluster = Cluster(initialize_head=True, connect=False, head_node_args=head_args)
        self.cpus_per_node = cpus_per_node
        self.gpu_nodes: list = []
        for _ in range(gpu_nodes):
            self.add_gpu_node(wait=False)
        self.cluster.wait_for_nodes()
        self.dashboard_url = f"http://127.0.0.1:{head_args['dashboard_port']}" if dashboard else None

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_gpu_node(self, wait: bool = True):
        port = free_port()
        node = self.cluster.add_node(num_cpus=self.cpus_per_node, num_gpus=1, wait=wait, metrics_export_port=port)
        self.metrics_ports.append(port)
        self.gpu_nodes.append(node)
        return node

    def kill(self, node) -> None:
        """A node lost as a real machine is lost: SIGKILL of all its processes."""
        self.cluster.remove_node(node, allow_graceful=False)
        if node in self.gpu_nodes:
            self.gpu_nodes.remove(node)

    def shutdown(self) -> None:
        self.cluster.shutdown()

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def receipt_paths(jobs_root: str) -> list[str]:
    """The committed receipts of every job under a local ``jobs_root``."""
    return glob.glob(os.path.join(jobs_root, "*", "segments", "*.json"))


def job_segments(jobs_root: str, job_id: str) -> dict[int, str]:
    """Shard -> segment of one job's committed receipts, under a local ``jobs_root`` (of several jobs)."""
    out = {}
    for path in glob.glob(os.path.join(jobs_root, job_id, "segments", "*.json")):
        with open(path) as f:
            r = json.load(f)
        out[r["shard"]] = r["segment"]
    return out


def receipts(jobs_root: str) -> list[dict]:
    out = []
    for path in receipt_paths(jobs_root):
        with open(path) as f:
            out.append(json.load(f))
    return out


def wait_for_receipts(jobs_root: str, count: int, proc=None, timeout: float = 120) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = receipts(jobs_root)
        if len(found) >= count:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver exited early with {proc.returncode}")
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} shards done after {timeout} s")


def ledger(jobs_root: str) -> dict:
    (path,) = glob.glob(os.path.join(jobs_root, "*", "ledger.json"))
    with open(path) as f:
        return json.load(f)
