"""A plain `farm submit` on a workstation starts its own Ray; nothing of it may be reachable from
the network: every socket its process tree listens on is on loopback."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import time

import pytest

from farm.testing.process import FARM

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def tree(pid: int) -> set[int]:
    """``pid`` and every process descended from it (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def listening(pid: int) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket listening, and every UDP socket bound,
    in the process tree of ``pid`` (``ss -ltunp``)."""
    pids = tree(pid)
    out = subprocess.run(["ss", "-H", "-ltunp"], capture_output=True, text=True, timeout=30).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        address, port = fields[4].rsplit(":", 1)
        address = address.strip("[]").split("%")[0]
        for name, owner in re.findall(r'\("([^"]*)",pid=(\d+)', line):
            if int(owner) in pids:
                found.add((name, "0.0.0.0" if address == "*" else address, int(port)))
    return found


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or ip).is_loopback


@pytest.mark.xfail(reason="the embedded Ray listens on every interface (GCS, raylet, workers on *:port; the dashboard "
                          "agent on the machine's address); fixed on branch seams (start_ray binds 127.0.0.1)", strict=False)
def test_local_submit_listens_on_loopback_only(tmp_path):
    """A user runs `farm submit` on a laptop on a café network: while the job runs, no socket of
    farm's processes (driver, Ray's GCS, raylet, dashboard, agents, workers) is open to the LAN."""
    if shutil.which("ss") is None:
        pytest.skip("needs `ss` (iproute2) to list listening sockets")
    from farm.testing import make_test_clip

    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=48, size=(32, 24), audio=False)
    args = ["submit", clip, "-o", str(tmp_path / "out.mkv"), "--jobs-root", str(tmp_path / "jobs"),
            "--model", "fake:scale=2,ms=150", "--no-face", "--codec", "ffv1", "--shard-frames", "4", "--workers", "1", "--quiet"]
    # The user's environment: not the tests' RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (conftest), which
    # makes Ray use the loopback address for everything.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    with open(tmp_path / "farm.log", "w") as log:
        proc = subprocess.Popen(FARM + args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    seen: set[tuple[str, str, int]] = set()
    try:
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline:
            seen |= listening(proc.pid)
            time.sleep(0.3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.wait(timeout=60)
    assert proc.returncode == 0, (tmp_path / "farm.log").read_text()[-3000:]
    assert len({port for _, _, port in seen}) >= 3, f"saw too few sockets to have looked at Ray's: {seen}"
    exposed = sorted(s for s in seen if not loopback(s[1]))
    assert exposed == [], f"listening beyond loopback: {exposed}"
