"""`farm doctor --address`: one tiny task pinned to each live node of a Ray cluster, reporting its
GPUs, the jobs root (writable?) and the weights dir (present, verified?), as plain dicts that
:func:`probe_nodes` turns into :class:`farm.doctor.Check` lines."""

from __future__ import annotations

import socket
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from farm.actors.connect import join
from farm.doctor import Check, Status, check_jobs_root, check_weights
from farm.errors import ClusterError

#: How long a node may take to answer (a fresh node imports farm first).
PROBE_TIMEOUT_S = 120.0


def _probe(jobs_root: str, weights_dir: str) -> dict[str, Any]:
    """Runs on the node."""
    checks = [check_jobs_root(jobs_root), *check_weights(weights_dir)]
    return {"host": socket.gethostname(), "checks": [(c.name, c.status, c.detail) for c in checks]}


def probe_nodes(address: str | None, jobs_root: str, weights_dir: str, timeout_s: float = PROBE_TIMEOUT_S) -> list[Check]:
    """One summary line per live node, followed by that node's findings that are not ok.

    Args:
        address: the cluster (``host:port``, ``auto``, ``ray://``); None uses the Ray this
            process is already connected to.
    """
    owns = not ray.is_initialized()
    if owns:
        try:
            join(address)
        except ClusterError as exc:
            return [Check(f"cluster {address}", "fail", exc.message)]
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        task = ray.remote(num_cpus=0, max_retries=0)(_probe)
        refs = {
            n["NodeID"]: task.options(
                name="farm_doctor_probe",
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False),
            ).remote(jobs_root, weights_dir)
            for n in nodes
        }
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        done = set(ready)
        gpus_total = sum(n.get("Resources", {}).get("GPU", 0) for n in nodes)
        checks = [Check("cluster", "ok" if gpus_total else "info", f"{len(nodes)} live node(s), {gpus_total:g} GPU(s)")]
        for node in nodes:
            checks.extend(_node_checks(node, refs[node["NodeID"]], done, timeout_s))
        return checks
    finally:
        if owns:
            ray.shutdown()


def _node_checks(node: dict[str, Any], ref, done: set, timeout_s: float) -> list[Check]:
    resources = node.get("Resources", {})
    label = f"node {node.get('NodeManagerAddress', '?')} ({node['NodeID'][:8]})"
    gpus = resources.get("GPU", 0)
    what = f"{gpus:g} GPU(s), {resources.get('CPU', 0):g} CPU(s)"
    if ref not in done:
        ray.cancel(ref, force=True)
        return [Check(label, "fail", f"{what}; did not answer within {timeout_s:.0f} s (is farm installed there?)")]
    try:
        answer = ray.get(ref)
    except Exception as exc:  # whatever the node raised is the finding
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return [Check(label, "fail", f"{what}; the probe failed: {first}")]
    findings = [Check(name, status, detail) for name, status, detail in answer["checks"]]
    worst: Status = "ok"
    for level in ("info", "warn", "fail"):
        if any(f.status == level for f in findings):
            worst = level  # type: ignore[assignment]
    seen = "sees the jobs root and the weights" if worst == "ok" else "see below"
    summary = Check(label, worst if worst != "info" else "ok", f"{answer['host']}: {what}; {seen}")
    return [summary, *(Check(f"  {f.name}", f.status, f.detail) for f in findings if f.status != "ok")]
