"""Real hosts for tests and scripts: Linux network, mount, PID and UTS namespaces on one machine,
joined by a bridge, each with its own IP, hostname, process tree, /tmp and /dev/shm, sharing only
the storage it is given. Needs root, ``ip netns``, ``unshare`` and ``nsenter``; never ``ray stop``."""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

from farm.testing.process import FARM  # the command that runs farm, here and on every host

#: The directory holding the ``farm`` package, put on each host's PYTHONPATH (hosts run this farm).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _under_tmp(paths: list[str]) -> list[str]:
    """The outermost of ``paths`` under /tmp (a nested one comes with its parent)."""
    inside = sorted({p for p in map(os.path.realpath, paths) if p.startswith("/tmp/")})
    return [p for p in inside if not any(p.startswith(q + "/") for q in inside)]
SUBNET = "10.77.0"
RAY_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
#: Node death is noticed within a few seconds (Ray's defaults take tens of seconds).
FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}
_runs = itertools.count(1)


class HostsUnavailable(RuntimeError):
    """This machine cannot build namespace hosts (no root, no ``ip netns``, no ``unshare``)."""


def unavailable_reason() -> str | None:
    """One line saying why namespace hosts cannot be built here, or None when they can."""
    if sys.platform != "linux":
        return "namespace hosts need Linux"
    if os.geteuid() != 0:
        return "namespace hosts need root (ip netns, unshare)"
    for tool in ("ip", "unshare", "nsenter", "timeout"):
        if shutil.which(tool) is None:
            return f"namespace hosts need `{tool}` (iproute2 / util-linux / coreutils)"
    probe = f"farmprobe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip().splitlines()[-1] if made.stderr.strip() else made.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    trial = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if trial.returncode != 0:
        return f"`unshare --mount --pid` fails here: {trial.stderr.strip() or trial.returncode}"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise HostsUnavailable(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


class Host:
    """One machine: its namespaces, its address, its mounts (host path -> path under the share)."""

    def __init__(self, net: Hosts, name: str, number: int, mounts: dict[str, str]) -> None:
        self.net = net
        self.name = name
        self.ip = f"{SUBNET}.{number}"
        self.netns = f"{net.tag}-{name}"
        self.port = f"v{number}-{os.getpid() % 100000}"  # the switch side of the link (<= 15 chars)
        self.mounts = mounts
        self.init_pid: int | None = None  # PID 1 of the host's PID namespace, as the machine sees it
        self.joined: tuple[Host, dict] | None = None  # the head and ray_node arguments it last joined with
        self._holder: subprocess.Popen | None = None

    # -- life

    def boot(self) -> None:
        """Start the host's init (after :meth:`kill`, a fresh one: empty /tmp, no processes)."""
        setup = ["set -e", f"hostname {shlex.quote(self.name)}", "mount -t tmpfs -o size=1g tmpfs /dev/shm"]
        tops = sorted({"/" + p.strip("/").split("/")[0] for p in self.mounts})
        setup += [f"mount -t tmpfs -o size=16m tmpfs {shlex.quote(t)}" for t in tops]
        for path, sub in self.mounts.items():
            source = os.path.join(self.net.shared, sub) if sub else self.net.shared
            setup += [f"mkdir -p {shlex.quote(path)}", f"mount --bind {shlex.quote(source)} {shlex.quote(path)}"]
        # farm and its Python may live under the machine's /tmp (a CI checkout): only they show through
        carried = _under_tmp([ROOT, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))])
        outer = "/dev/shm/.outer-tmp"
        setup += [f"mkdir -p {outer}", f"mount --bind /tmp {outer}", "mount -t tmpfs -o size=2g tmpfs /tmp"]
        setup += [f"mkdir -p {shlex.quote(p)}; mount --bind {shlex.quote(outer + p[4:])} {shlex.quote(p)}" for p in carried]
        setup += [f"umount -l {outer}", f"rmdir {outer}"]
        setup += ["mkdir -p /tmp/home /tmp/ray /tmp/work", "touch /tmp/.booted",
                  f"end=$((SECONDS + {int(self.net.lifetime_s)}))", "while [ $SECONDS -lt $end ]; do sleep 1; done"]
        self._holder = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
             "--propagation", "private", "bash", "-c", "\n".join(setup)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            children = _children(self._holder.pid)
            if children and os.path.exists(f"/proc/{children[0]}/root/tmp/.booted"):
                self.init_pid = children[0]
                return
            if self._holder.poll() is not None:
                stderr = self._holder.stderr.read().decode().strip() if self._holder.stderr else ""
                raise HostsUnavailable(f"host {self.name} did not boot: {stderr}")
            time.sleep(0.05)
        raise HostsUnavailable(f"host {self.name} did not boot within 20 s")

    def kill(self) -> None:
        """The machine crashes: every process of the host gets SIGKILL at once (its init dies, and
        the kernel kills the rest of its PID namespace); its /tmp is gone."""
        if self.init_pid is not None:
            with _quiet():
                os.kill(self.init_pid, signal.SIGKILL)
        for pid in self.pids():  # anything that entered the network namespace some other way
            with _quiet():
                os.kill(pid, signal.SIGKILL)
        if self._holder is not None:
            self._holder.wait(timeout=30)
            self._holder.stderr.close()  # type: ignore[union-attr]
        deadline = time.time() + 10
        while self.pids() and time.time() < deadline:
            time.sleep(0.05)
        self.init_pid = self._holder = None

    def pids(self) -> list[int]:
        """Every process in the host's network namespace (machine PIDs)."""
        out = _ip("netns", "pids", self.netns, check=False).stdout.split()
        return [int(p) for p in out]

    # -- network

    def cut(self) -> None:
        """A network partition: the host's link goes down (its processes run on, unreachable)."""
        _ip("-n", self.net.switch, "link", "set", self.port, "down")

    def heal(self) -> None:
        _ip("-n", self.net.switch, "link", "set", self.port, "up")

    # -- running things

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        venv_bin = os.path.dirname(sys.executable)
        env = {
            "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/tmp/home", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONPATH": ROOT,
            "RAY_TMPDIR": "/tmp/ray", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
        }
        return {**env, **(extra or {})}

    def command(self, argv: list[str], env: dict[str, str] | None = None, timeout_s: float | None = None) -> list[str]:
        """``argv`` as run on this host (in its namespaces, with its environment), ended by
        SIGKILL after ``timeout_s`` if given."""
        if self.init_pid is None:
            raise HostsUnavailable(f"host {self.name} is down; boot() it first")
        limit = ["timeout", "--foreground", "-s", "KILL", str(int(timeout_s))] if timeout_s else []
        return ["nsenter", "-t", str(self.init_pid), "-n", "-m", "-p", "-u", "env", "-i", "-C", "/tmp/work",
                *(f"{k}={v}" for k, v in self.env(env).items()), *limit, *argv]

    def run(self, argv: list[str], env: dict[str, str] | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess:
        """Run ``argv`` on this host to the end (killed after ``timeout_s``)."""
        return subprocess.run(self.command(argv, env, timeout_s), capture_output=True, text=True, timeout=timeout_s + 30)

    def start(self, argv: list[str], log_path: str, env: dict[str, str] | None = None,
              timeout_s: float = 600) -> subprocess.Popen:
        """Start ``argv`` on this host; its output goes to ``log_path`` (a path of the caller's)."""
        with open(log_path, "ab") as log:
            return subprocess.Popen(self.command(argv, env, timeout_s), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def farm(self, args: list[str], env: dict[str, str] | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess:
        return self.run(FARM + args, env, timeout_s)

    def start_farm(self, args: list[str], log_path: str, env: dict[str, str] | None = None,
                   timeout_s: float = 600) -> subprocess.Popen:
        return self.start(FARM + args, log_path, env, timeout_s)

    def file(self, path: str) -> str:
        """Where the caller finds this host's ``path`` (e.g. in its private /tmp) while it is up."""
        return f"/proc/{self.init_pid}/root{path}"

    # -- Ray

    @property
    def ray_address(self) -> str:
        return f"{self.ip}:{RAY_PORT}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.ip}:{DASHBOARD_PORT}"

    @property
    def client_url(self) -> str:
        return f"ray://{self.ip}:{CLIENT_PORT}"

    def ray_head(self, cpus: int = 0, gpus: int = 0) -> None:
        """A head as the shipped cluster configs start it: no CPU and no GPU for work, the
        dashboard (for Ray Jobs) and the client server on the host's address."""
        self._ray_start(["--head", f"--port={RAY_PORT}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                         "--include-dashboard=true", "--dashboard-host=0.0.0.0", f"--dashboard-port={DASHBOARD_PORT}",
                         f"--ray-client-server-port={CLIENT_PORT}", f"--system-config={json.dumps(FAST_HEALTH_CHECKS)}"])

    def ray_node(self, head: Host, gpus: int = 1, cpus: int = 1, resources: dict[str, float] | None = None) -> None:
        """A worker node with ``gpus`` logical GPUs (a CPU machine pretending, as in Ray's tests)."""
        self.joined = (head, {"gpus": gpus, "cpus": cpus, "resources": resources})
        self._ray_start([f"--address={head.ray_address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                         f"--resources={json.dumps(resources or {})}"])

    def rejoin(self) -> None:
        """Reboot this worker machine (every process killed, /tmp emptied) and join it to its
        cluster again as before; returns once the head lists it alive."""
        if self.joined is None:
            raise HostsUnavailable(f"host {self.name} never joined a cluster")
        head, args = self.joined
        self.kill()
        self.boot()
        self.ray_node(head, **args)
        head.wait_for_nodes({self.ip})

    # Ray on a host ends with the host's init; never ``ray stop``: it would kill every Ray on the
    # machine, other runs' included.
    def _ray_start(self, args: list[str]) -> None:
        result = self.run(["ray", "start", f"--node-ip-address={self.ip}", "--disable-usage-stats", *args], timeout_s=120)
        if result.returncode != 0:
            raise HostsUnavailable(f"ray start on {self.name} failed: {(result.stderr or result.stdout).strip()[-800:]}")

    def ray_nodes(self, head: Host | None = None) -> list[dict]:
        """The cluster's nodes as its GCS (on ``head``, default this host) lists them."""
        code = ("import json,sys; from ray._raylet import GcsClient; c=GcsClient(address=sys.argv[1]); "
                "print(json.dumps([{'ip': n.node_manager_address, 'alive': n.state == 0, 'id': n.node_id.hex(), "
                "'resources': dict(n.resources_total)} for n in c.get_all_node_info(timeout=10).values()]))")
        result = self.run([sys.executable, "-c", code, (head or self).ray_address], timeout_s=60)
        if result.returncode != 0:
            raise HostsUnavailable(f"cannot list the cluster's nodes from {self.name}: {result.stderr.strip()[-400:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, ips: set[str], timeout_s: float = 90) -> None:
        """Wait until the nodes at exactly ``ips`` are alive (this host being the head)."""
        deadline = time.time() + timeout_s
        alive: set[str] = set()
        while time.time() < deadline:
            alive = {n["ip"] for n in self.ray_nodes() if n["alive"]}
            if ips <= alive:
                return
            time.sleep(0.5)
        raise HostsUnavailable(f"nodes {sorted(ips - alive)} did not join within {timeout_s:.0f} s (alive: {sorted(alive)})")


def start_cluster(head: Host, gpu_hosts: list[Host], gpus: int = 1, cpus: int = 1,
                  others: dict[Host, dict] | None = None) -> None:
    """``ray start`` a head (no CPU, no GPU) and, at the same time, ``gpu_hosts`` with ``gpus``
    logical GPUs and ``cpus`` CPUs each (and ``others`` with their own ray_node arguments); returns
    once all are alive."""
    import threading

    head.ray_head()
    joins = [(h, {"gpus": gpus, "cpus": cpus, "resources": {"farm-gpu-host": 1}}) for h in gpu_hosts]
    joins += list((others or {}).items())
    errors: list[BaseException] = []

    def join(host: Host, args: dict) -> None:
        try:
            host.ray_node(head, **args)
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=join, args=j) for j in joins]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    head.wait_for_nodes({head.ip, *(h.ip for h, _ in joins)})


class Hosts:
    """A bridge and the hosts on it; everything is removed on exit (or by the watchdog)."""

    def __init__(self, shared: str, lifetime_s: float = 1800) -> None:
        reason = unavailable_reason()
        if reason:
            raise HostsUnavailable(reason)
        self.shared = os.path.abspath(shared)
        os.makedirs(self.shared, exist_ok=True)
        self.lifetime_s = lifetime_s
        self.tag = f"farm{next(_runs)}-{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.bridge = f"fb{os.getpid() % 10000000}"  # unique per run; it lives in the switch namespace anyway
        self.hosts: dict[str, Host] = {}
        self._closed = False
        _ip("netns", "add", self.switch)
        self._watchdog = self._start_watchdog()
        atexit.register(self.close)
        _ip("-n", self.switch, "link", "add", self.bridge, "type", "bridge")
        _ip("-n", self.switch, "link", "set", self.bridge, "up")

    def add(self, name: str, mounts: dict[str, str] | None = None) -> Host:
        """A new host on the bridge, booted, with the share at each of ``mounts`` (host path ->
        sub-directory of the share, "" for its top)."""
        host = Host(self, name, len(self.hosts) + 1, mounts or {})
        self.hosts[name] = host
        _ip("netns", "add", host.netns)
        _ip("-n", self.switch, "link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _ip("-n", self.switch, "link", "set", host.port, "master", self.bridge, "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        _ip("-n", host.netns, "route", "add", "default", "dev", "eth0")
        host.boot()
        return host

    def namespaces(self) -> list[str]:
        return [h.netns for h in self.hosts.values()] + [self.switch]

    def _start_watchdog(self) -> subprocess.Popen:
        """A shell in its own session that removes this run's namespaces once this process is gone
        (even if it was SIGKILLed) or the lifetime is over; it then ends."""
        script = (f"end=$((SECONDS + {int(self.lifetime_s) + 30})); "
                  f"while kill -0 {os.getpid()} 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 1; done; "
                  f"for ns in $(ip netns list | awk '{{print $1}}' | grep '^{self.tag}-'); do "
                  "ip netns pids $ns | xargs -r kill -9; sleep 0.2; ip netns del $ns; done")
        return subprocess.Popen(["bash", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            with _quiet():
                host.kill()
        for ns in self.namespaces():
            _ip("netns", "del", ns, check=False)
        with _quiet():
            self._watchdog.kill()
            self._watchdog.wait(timeout=10)

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class _quiet:
    """Ignore a process that is already gone."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        return kind is not None and issubclass(kind, (ProcessLookupError, ChildProcessError, subprocess.TimeoutExpired, OSError))
