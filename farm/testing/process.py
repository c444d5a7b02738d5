"""Running the ``farm`` command (with the fakes installed: :mod:`farm.testing.cli`) as a process, in its own process group so a test or script can kill
all of it (the driver and the Ray it started) at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

#: farm as a process, with the fakes installed (the `farm` command has none): the test entry point.
FARM = [sys.executable, "-m", "farm.testing.cli"]


def run_farm(args: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the farm CLI in a new process group (so tests can kill all of it)."""
    return subprocess.run(FARM + args, capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy())


def start_farm(args: list[str], log_path: str) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen(FARM + args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
