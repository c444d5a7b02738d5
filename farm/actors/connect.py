"""Joining a Ray cluster from this process: one place for the namespace, the log settings and the
one-line error a user sees when the cluster cannot be reached."""

from __future__ import annotations

import logging
from typing import Any

import ray

from farm.errors import ClusterError, first_line

#: Every farm actor lives in this Ray namespace, so any driver of the cluster finds a job's actors.
NAMESPACE = "farm"


def join(address: str | None) -> Any:
    """Connect to the cluster at ``address`` (``host:port``, ``auto`` or ``ray://``).

    Raises:
        ClusterError: the cluster is unreachable or refused this process (naming the token options
            when authentication is the cause).
    """
    try:
        return ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, namespace=NAMESPACE)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        hint = "; pass --token-file, --token or set RAY_AUTH_TOKEN" if "auth" in str(exc).lower() or "token" in str(exc).lower() else ""
        raise ClusterError(f"cannot join the Ray cluster at {address}: {first_line(exc)}{hint}") from None
