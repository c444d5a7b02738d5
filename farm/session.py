"""Starting or joining Ray from this process: an embedded cluster on loopback (Ray's own module
constants patched so that it binds 127.0.0.1 only), a cluster at an address, and the token that
Ray's authentication reads from the environment."""

from __future__ import annotations

import logging
import os

import ray

from farm.actors.connect import NAMESPACE, join


def start_ray(address: str | None, num_cpus: int | None = None, dashboard: bool = True, token: str | None = None) -> str | None:
    """Join the cluster at ``address`` (``host:port``, ``auto`` or ``ray://``), or start an
    embedded one on loopback; returns the dashboard URL when there is one."""
    if token:
        use_token(token)
    if address:
        ctx = join(address)
    else:
        ctx = _start_local_ray(num_cpus, dashboard)
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url else None


def _start_local_ray(num_cpus: int | None, dashboard: bool):
    """An embedded cluster for this machine only: every port of its GCS, raylet, workers, dashboard
    and agents on 127.0.0.1, and Ray's token authentication left on (Ray's default for a local
    cluster; it writes a token to ~/.ray/auth_token if there is none). Only an explicit
    ``RAY_AUTH_MODE=disabled`` turns it off.

    Ray binds all interfaces unless it takes the node's address to be loopback, which it does only
    where "clusters are disabled" (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read when ray is imported,
    so the constant is set here too; child processes read the variable)."""
    from ray._private import ray_constants  # type: ignore[attr-defined]

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    saved, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        return ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            # No port given: Ray takes 8265 or the next free one when it binds (a port checked
            # free beforehand can be taken by another Ray starting meanwhile).
            _node_ip_address="127.0.0.1",
            logging_level=logging.ERROR,
            log_to_driver=False,
            namespace=NAMESPACE,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def use_token(token: str) -> None:
    """Ray's token authentication reads the token from the environment, in this process and in
    everything it starts; Ray caches its settings at import, so they are reloaded here (as Ray's
    own `_enable_token_auth` does)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = token
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")
