"""A plain `farm submit` on a workstation starts its own Ray: nothing of it may listen beyond this
machine, and Ray's token authentication stays on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

import pytest

from farm.testing.clips import make_test_clip
from farm.testing.process import FARM, kill_group

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: Loopback, IPv4 and IPv6. Ray's gRPC servers asked for 127.0.0.1 bind an IPv6 socket to the
#: IPv4-mapped address ::ffff:127.0.0.1 (gRPC's dual-stack sockets): that accepts connections from
#: 127.0.0.1 only, so it is loopback too; ::, 0.0.0.0, * or the machine's own address are not.
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


@dataclass(frozen=True)
class Listener:
    proto: str  # tcp | udp
    address: str  # as ss prints it: 127.0.0.1:8265, [::]:5353, *:68
    pids: frozenset[int]
    name: str


def listeners() -> set[Listener]:
    """Every listening TCP socket and bound UDP socket of every process on the machine, IPv4 and
    IPv6, with its owners (``ss -ltunpH``)."""
    out = subprocess.run(["ss", "-ltunpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        pids = frozenset(int(p) for p in re.findall(r"pid=(\d+)", line))
        names = re.findall(r'\(\("([^"]+)"', line)
        found.add(Listener(fields[0], fields[4], pids, names[0] if names else "?"))
    return found


def runs_in(pid: int, ray_tmpdir: str) -> bool:
    """Whether ``pid`` was started by the run whose Ray lives under ``ray_tmpdir`` (Ray's processes
    inherit the environment, also those that leave the driver's process tree)."""
    try:
        return environ(pid).get("RAY_TMPDIR") == ray_tmpdir
    except OSError:
        return False


def environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(item.split("=", 1) for item in f.read().decode(errors="replace").split("\0") if "=" in item)


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to list listening sockets")
def test_a_local_submit_listens_on_loopback_only_with_token_auth(tmp_path):
    """`farm submit clip.mp4 -o out.mkv` on a laptop on a café's network: its GCS, raylet,
    workers, dashboard and agents listen on loopback only (Ray's own default would be every
    interface, reachable from the LAN), and they run with token authentication. Checked over the
    whole run, TCP and UDP, IPv4 and IPv6: the sockets of the driver's process tree, and every
    socket of the machine that appeared during the run whose process belongs to the run."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=24, size=(16, 16), audio=False)
    jobs = str(tmp_path / "jobs")
    ray_tmp = tempfile.mkdtemp(prefix="farm-ss-")  # short: Ray's socket paths live under it
    env = {**os.environ, "HOME": str(tmp_path), "RAY_TMPDIR": ray_tmp}  # Ray writes its token to ~/.ray/auth_token
    for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):
        env.pop(name, None)  # as on a user's machine (the test session sets some of them)
    before = listeners()
    log = open(tmp_path / "farm.log", "w")
    proc = subprocess.Popen(FARM + ["submit", clip, "-o", str(tmp_path / "out.mkv"), "--jobs-root", jobs, "--model", "fake:scale=2,ms=250",
                                    "--no-face", "--codec", "ffv1", "--shard-frames", "4", "--workers", "1", "--quiet"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        seen: set[Listener] = set()
        tree: set[int] = set()
        gcs_env: dict[str, str] = {}
        deadline = time.time() + 180
        while proc.poll() is None and time.time() < deadline:  # the whole run, as its servers come and go
            tree |= process_tree(proc.pid)
            seen |= listeners() - before
            gcs = [pid for pid in tree if name_of(pid) == "gcs_server"]
            if gcs and not gcs_env:
                gcs_env = environ(gcs[0])
            time.sleep(0.2)
        assert proc.wait(timeout=60) == 0, open(tmp_path / "farm.log").read()[-3000:]
        ours = [s for s in seen if s.pids & tree or any(runs_in(p, ray_tmp) for p in s.pids)]
        names = {s.name for s in ours}
        assert {"gcs_server", "raylet"} <= names, ours  # the check saw Ray's own servers
        assert any(s.name.startswith("ray::") for s in ours), ours  # and the workers' and agents'
        assert sorted((s.proto, s.address, s.name) for s in ours if not LOOPBACK.match(s.address)) == []
        assert gcs_env.get("RAY_AUTH_MODE") == "token"
        assert os.path.getsize(tmp_path / ".ray" / "auth_token") > 0
    finally:
        if proc.poll() is None:
            kill_group(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def name_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
