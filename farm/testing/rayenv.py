"""The environment a script's or test's own Ray starts in, set before anything imports ray: on
loopback only (other Ray instances may run on the machine), in a temp dir of its own, and, unless
asked for, without token authentication."""

from __future__ import annotations

import os
import tempfile


def isolate_ray(name: str, auth: bool = True) -> str:
    """Set the environment for a Ray this process will start; returns its temp dir
    (``$RAY_TMPDIR`` when set). ``auth=False`` turns Ray's token authentication off."""
    tmp = os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix=f"farm-{name}-ray-"))
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if not auth:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    return tmp
