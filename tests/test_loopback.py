"""A plain `farm submit` on a workstation starts its own Ray: nothing of it may listen beyond this
machine, and Ray's token authentication stays on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from farm.testing.clips import make_test_clip
from farm.testing.cluster import receipts
from farm.testing.process import FARM, kill_group

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|\[::1\]|\[::ffff:127\.\d+\.\d+\.\d+\]):\d+$")


def process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


def listening(pids: set[int]) -> list[tuple[str, str]]:
    """(local address, process name) of every TCP socket listening in ``pids``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids
        if owners:
            found.append((line.split()[3], re.findall(r'\(\("([^"]+)"', line)[0]))
    return found


def environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(item.split("=", 1) for item in f.read().decode(errors="replace").split("\0") if "=" in item)


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to list listening sockets")
def test_a_local_submit_listens_on_loopback_only_with_token_auth(tmp_path):
    """`farm submit clip.mp4 -o out.mkv` on a laptop on a café's network: its GCS, raylet,
    workers, dashboard and agents listen on 127.0.0.1 only (Ray's own default would be every
    interface, reachable from the LAN), and they run with token authentication."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=24, size=(16, 16), audio=False)
    jobs = str(tmp_path / "jobs")
    env = {**os.environ, "HOME": str(tmp_path)}  # Ray writes its token to ~/.ray/auth_token
    for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):
        env.pop(name, None)  # as on a user's machine (the test session sets some of them)
    log = open(tmp_path / "farm.log", "w")
    proc = subprocess.Popen(FARM + ["submit", clip, "-o", str(tmp_path / "out.mkv"), "--jobs-root", jobs, "--model", "fake:scale=2,ms=250",
                                    "--no-face", "--codec", "ffv1", "--shard-frames", "4", "--workers", "1", "--quiet"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not receipts(jobs) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None and receipts(jobs), open(tmp_path / "farm.log").read()[-3000:]
        tree = process_tree(proc.pid)
        sockets = listening(tree)
        names = {name for _, name in sockets}
        assert {"gcs_server", "raylet"} <= names, sockets  # the check saw Ray's own servers
        assert [(addr, name) for addr, name in sockets if not LOOPBACK.match(addr)] == []
        gcs = next(pid for pid in tree if open(f"/proc/{pid}/comm").read().strip() == "gcs_server")
        assert environ(gcs).get("RAY_AUTH_MODE") == "token"
        assert os.path.getsize(tmp_path / ".ray" / "auth_token") > 0
        assert proc.wait(timeout=180) == 0, open(tmp_path / "farm.log").read()[-3000:]
    finally:
        if proc.poll() is None:
            kill_group(proc)
