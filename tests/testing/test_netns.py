"""The namespace hosts behave as separate machines: the multi-host tests (tests/faults/test_hosts.py) and
`scripts/chaos.py --hosts netns` mean something only if each host has its own address, processes,
hostname and /tmp, sees only the storage it was given (at its own path), can be cut off the
network and crashed, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from farm.testing.netns import Hosts, unavailable_reason

LISTEN = ("import socket; s = socket.socket(); s.bind(('0.0.0.0', 7000)); s.listen(); "
          "open('/tmp/work/up', 'w').close(); s.accept()")
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 7000), timeout=3)"


@pytest.fixture
def hosts(tmp_path):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    os.makedirs(tmp_path / "share" / "jobs")
    with Hosts(str(tmp_path / "share"), lifetime_s=120) as net:
        yield net
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert net.tag not in listed, "namespaces left behind"


def run(host, code: str, *args: str) -> subprocess.CompletedProcess:
    return host.run([sys.executable, "-c", code, *args], timeout_s=30)


def wait_for(path: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + 30
    while not os.path.exists(path):
        assert proc.poll() is None and time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_hosts_are_separate_machines(hosts, tmp_path):
    """Two machines on one switch: each its own hostname, address, processes and /tmp; one NFS
    share seen at /mnt/jobs on one and /srv/farm/jobs on the other; nothing of either reachable
    from the computer they run on."""
    a = hosts.add("alpha", {"/mnt/jobs": "jobs"})
    b = hosts.add("beta", {"/srv/farm": ""})
    assert a.run(["hostname"]).stdout.strip() == "alpha" and b.run(["hostname"]).stdout.strip() == "beta"
    assert a.run(["bash", "-c", "echo hello > /mnt/jobs/note; echo secret > /tmp/work/mine"]).returncode == 0
    assert b.run(["cat", "/srv/farm/jobs/note"]).stdout == "hello\n"
    assert (tmp_path / "share" / "jobs" / "note").read_text() == "hello\n"
    assert b.run(["ls", "/tmp/work"]).stdout == "" and not os.path.exists("/tmp/work/mine")
    assert b.run(["test", "-e", "/mnt/jobs/note"]).returncode == 1, "beta sees only the path it was given"
    assert set(b.run(["ps", "-e", "-o", "comm="]).stdout.split()) <= {"bash", "sleep", "timeout", "ps"}, "its own processes only"

    server = b.start([sys.executable, "-c", LISTEN], str(tmp_path / "server.log"), timeout_s=60)
    wait_for(b.file("/tmp/work/up"), server)
    mine = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True).stdout
    assert "10.77.0." not in mine, "the computer itself has no address on the hosts' network"
    b.cut()
    assert run(a, CONNECT, b.ip).returncode != 0, "a cut link carries nothing"
    b.heal()
    # a healed link carries traffic again once the neighbour entry that failed during the cut is
    # resolved anew: a few seconds on a loaded machine
    deadline = time.time() + 20
    while (joined := run(a, CONNECT, b.ip)).returncode != 0 and time.time() < deadline:
        time.sleep(0.5)
    assert joined.returncode == 0, joined.stderr + (tmp_path / "server.log").read_text()
    server.wait(timeout=30)


def test_a_crash_kills_every_process_of_the_host(hosts, tmp_path):
    """A machine crash takes every process of the host with it, however it was started, and a
    reboot comes back with an empty /tmp."""
    host = hosts.add("gamma", {})
    sleepers = [host.start(["bash", "-c", "touch /tmp/work/was-here; sleep 300 & sleep 300"], str(tmp_path / "s.log"))]
    wait_for(host.file("/tmp/work/was-here"), sleepers[0])
    assert len(host.pids()) >= 4
    host.kill()
    assert host.pids() == []
    assert sleepers[0].wait(timeout=10) != 0
    host.boot()
    assert host.run(["ls", "/tmp/work"]).stdout == ""
