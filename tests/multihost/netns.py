"""Several hosts on one machine: Linux network namespaces joined by veth pairs to a
bridge that lives in a namespace of its own.

    s2f<run>-net   the "switch": bridge br0, one veth end per host
    s2f<run>-<host> one host: its veth end (eth0, 10.77.0.N/24), its own loopback,
                    its own UTS namespace per process (hostname = the host's name)

Everything is named after a random run id, so parallel runs never meet, and nothing
is reachable from the machine's own network: the test's own requests leave from a
host of the network too (`Host.call` runs a function on a thread that entered that
host's namespace; every socket it opens belongs there). `Network.close` kills every
process still in a namespace the run made and deletes the namespaces (their veth ends
go with them); the fixtures call it however a test ends.

Processes run with `ip netns exec` (network) under `unshare --uts` (host name), so a
worker's heartbeat names its host, as on real machines. Code comes from this
checkout, as from an image every host has; each host gets its own data folder
(`Host.dir`): no host reads another's files.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000


class NamespaceError(RuntimeError):
    """The machine cannot make network namespaces (no root, no `ip`, a sandbox)."""


def ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise NamespaceError("the `ip` command (iproute2) is not installed") from exc
    if done.returncode != 0:
        raise NamespaceError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def enter_namespace(namespace: str) -> None:
    """Move the calling thread into a network namespace (setns(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
    finally:
        os.close(fd)


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _thread: ThreadPoolExecutor | None = None

    def spawn(self, label: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        """Run a process on this host, named `label`; its output goes to dir/label.log."""
        command = [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--uts", "sh", "-c", f'hostname {self.name} && exec "$@"', "sh",
            *argv,
        ]  # fmt: skip
        with open(self.dir / f"{label}.log", "ab") as log:
            self.procs[label] = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, label: str) -> str:
        path = self.dir / f"{label}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def pids(self) -> list[int]:
        """Every process running on this host (in its network namespace)."""
        return [int(p) for p in ip("netns", "pids", self.namespace).split()]

    def kill_all(self) -> list[int]:
        """SIGKILL every process of the host at once, as a lost machine."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return pids

    def link(self, up: bool) -> None:
        """Plug or unplug the host's network cable (its eth0)."""
        ip("-n", self.namespace, "link", "set", "eth0", "up" if up else "down")

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` from this host: on a thread inside its network namespace."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(
                max_workers=1, initializer=enter_namespace, initargs=(self.namespace,)
            )
        return self._thread.submit(fn).result()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)
            self._thread = None


class Network:
    """Hosts on one bridge; every name carries the run id."""

    def __init__(self, root: Path) -> None:
        self.run = uuid.uuid4().hex[:6]
        self.root = root
        self.switch = f"s2f{self.run}-net"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []
        try:
            ip("netns", "add", self.switch)
        except NamespaceError as exc:
            raise NamespaceError(
                f"cannot create network namespaces here ({exc}); these tests need root "
                "(or CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2"
            ) from exc
        self._made.append(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        ip("-n", self.switch, "link", "set", "lo", "up")

    def add(self, name: str, index: int) -> Host:
        """A host with address 10.77.0.<index>, cabled to the switch."""
        namespace = f"s2f{self.run}-{name}"
        ip("netns", "add", namespace)
        self._made.append(namespace)
        here, there = f"v{self.run}{index}h", f"v{self.run}{index}s"
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", here, "netns", namespace)
        ip("link", "set", there, "netns", self.switch)
        ip("-n", self.switch, "link", "set", there, "master", "br0")
        ip("-n", self.switch, "link", "set", there, "up")
        ip("-n", namespace, "link", "set", here, "name", "eth0")
        address = f"{SUBNET}.{index}"
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        host = Host(name, namespace, address, directory)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        """Stop every process, then remove every namespace (and so every link) made."""
        for host in self.hosts.values():
            host.stop()
        for namespace in reversed(self._made):
            try:
                pids = ip("netns", "pids", namespace).split()
            except NamespaceError:
                pids = []
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                ip("netns", "del", namespace)
            except NamespaceError:
                pass
        self._made.clear()

    def leftovers(self) -> list[str]:
        """Namespaces of this run still present (none after `close`)."""
        return [n for n in ip("netns", "list").split() if n.startswith(f"s2f{self.run}")]


def copy_file(source: Path, host: Host) -> Path:
    """A host's own copy of a file (a checkpoint): hosts share no disk."""
    target = host.dir / source.name
    shutil.copyfile(source, target)
    return target
