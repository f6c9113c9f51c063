"""The Redis StatefulSet's start scripts, run for real: three "pods" on one machine.

Each pod is a network namespace with its own address, its pod host name (a UTS
namespace) and the DNS names of the headless Service (`redis-N.redis`, in the
namespace's own hosts file), running the rendered `redis-scripts` ConfigMap's
scripts with real `redis-server` processes, a Redis and a sentinel per pod, as the
StatefulSet does. The namespaces sit on a bridge of their own: no traffic leaves
them, and the test removes them. Namespaces need root (tests run as root here); a
machine where they cannot be made fails this test saying why.

What it shows: a new set starts with redis-0 as the primary and two replicas under a
quorum of three sentinels; losing the primary's pod (SIGKILL of both its processes)
promotes a replica with the data; the lost pod, restarted with its data volume and a
fresh sentinel, finds the new primary and rejoins as its replica.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy.k8s_manifests import find, render

PODS = 3
SUBNET = "10.231.77"


class Pods:
    def __init__(self, root: Path, scripts: dict[str, str]) -> None:
        tag = os.getpid() % 100000
        self.lan = f"s2f{tag}lan"
        self.names = [f"s2f{tag}r{i}" for i in range(PODS)]
        self.root = root
        self.scripts = scripts
        self.procs: dict[tuple[int, str], subprocess.Popen[bytes]] = {}

    def sh(self, *args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args)}: {done.stderr.strip()} (namespaces need root)")

    def build(self) -> None:
        self.sh("ip", "netns", "add", self.lan)
        self.sh("ip", "netns", "exec", self.lan, "ip", "link", "add", "br0", "type", "bridge")
        self.sh("ip", "netns", "exec", self.lan, "ip", "link", "set", "br0", "up")
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{SUBNET}.{i + 1} redis-{i}.redis\n" for i in range(PODS)
        )
        for i, ns in enumerate(self.names):
            self.sh("ip", "netns", "add", ns)
            inside, outside = f"{ns}a", f"{ns}b"
            self.sh("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
            self.sh("ip", "link", "set", inside, "netns", ns)
            self.sh("ip", "link", "set", outside, "netns", self.lan)
            self.sh("ip", "netns", "exec", self.lan, "ip", "link", "set", outside, "master", "br0")
            self.sh("ip", "netns", "exec", self.lan, "ip", "link", "set", outside, "up")
            self.sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{SUBNET}.{i + 1}/24",
                    "dev", inside)  # fmt: skip
            self.sh("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")
            self.sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            etc = Path("/etc/netns") / ns  # `ip netns exec` mounts these over /etc
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts)
            self._lay_out(i)

    def _lay_out(self, i: int) -> None:
        """The pod's volumes as folders: scripts, data (kept), sentinel (fresh)."""
        pod = self.root / f"pod{i}"
        for sub in ("scripts", "data", "sentinel"):
            (pod / sub).mkdir(parents=True, exist_ok=True)
        for name, text in self.scripts.items():
            text = text.replace("/scripts/", f"{pod}/scripts/")
            text = text.replace("/sentinel/", f"{pod}/sentinel/")
            text = text.replace("--dir /data", f"--dir {pod}/data")
            (pod / "scripts" / name).write_text(text)

    def start(self, i: int, what: str) -> None:
        pod = self.root / f"pod{i}"
        (pod / "sentinel" / "sentinel.conf").unlink(missing_ok=True)  # an emptyDir
        with open(pod / f"{what}.log", "ab") as log:
            self.procs[(i, what)] = subprocess.Popen(
                ["ip", "netns", "exec", self.names[i], "unshare", "--uts", "sh", "-c",
                 f"hostname redis-{i}; exec sh {pod}/scripts/start-{what}.sh"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self, i: int) -> None:
        """The pod is lost: both its processes SIGKILLed."""
        for what in ("redis", "sentinel"):
            proc = self.procs.pop((i, what))
            proc.kill()
            proc.wait(timeout=10)

    def cli(self, i: int, port: int, *command: str) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.names[i], "redis-cli", "-p", str(port), *command],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return done.stdout.strip()

    def replication(self, i: int) -> dict[str, str]:
        lines = self.cli(i, 6379, "info", "replication").splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def primary(self, asked: int) -> str:
        return self.cli(asked, 26379, "sentinel", "get-master-addr-by-name", "sam2fleet")

    def log(self) -> str:
        return "\n".join(
            f"--- {p.parent.name}/{p.name}\n{p.read_text(errors='replace')[-1500:]}"
            for p in sorted(self.root.glob("pod*/*.log"))
        )

    def teardown(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10)
        for ns in [*self.names, self.lan]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Pods]:
    for binary in ("redis-server", "redis-cli", "ip", "unshare"):
        if shutil.which(binary) is None:
            pytest.fail(f"this test runs `{binary}`; tests/install-system-packages.sh installs it")
    (config_map,) = [
        d for d in find(render("gpu"), "ConfigMap") if d["metadata"]["name"].startswith("redis-")
    ]
    built = Pods(tmp_path, config_map["data"])
    try:
        built.build()
        yield built
    finally:
        built.teardown()


def until(check: Callable[[], bool], pods: Pods, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}\n{pods.log()}")
        time.sleep(0.5)


def test_sentinel_set_starts_fails_over_and_takes_the_lost_pod_back(pods: Pods) -> None:
    for i in range(PODS):
        pods.start(i, "redis")
        pods.start(i, "sentinel")
    until(lambda: pods.replication(0).get("connected_slaves") == "2", pods, "two replicas")
    # min-replicas-to-write: the primary takes writes once a replica has acknowledged.
    until(
        lambda: pods.replication(0).get("min_slaves_good_slaves") == "2",
        pods,
        "two replicas acknowledging",
    )
    until(
        lambda: pods.cli(1, 26379, "sentinel", "ckquorum", "sam2fleet").startswith("OK 3"),
        pods,
        "three sentinels in quorum",
    )
    assert pods.primary(2).splitlines()[0] == "redis-0.redis"
    # Each sentinel learns the replicas from the primary's INFO, every 10 s: a primary
    # lost before that leaves a sentinel blind to a replica (it cannot promote it nor
    # point it at the new primary). The steady state comes first.
    for i in range(PODS):
        until(
            lambda i=i: (
                pods.cli(i, 26379, "sentinel", "replicas", "sam2fleet").count(".redis:") == PODS - 1
            ),
            pods,
            f"sentinel of redis-{i} knows both replicas",
        )
    assert pods.cli(0, 6379, "set", "accepted", "job-1") == "OK"
    assert pods.cli(0, 6379, "wait", "2", "5000") == "2"  # on both replicas

    pods.kill(0)
    until(lambda: pods.primary(1).startswith("redis-"), pods, "a primary known")
    until(lambda: pods.primary(1).splitlines()[0] != "redis-0.redis", pods, "a replica promoted")
    new = pods.primary(1).splitlines()[0]
    survivor = int(new.split(".")[0].removeprefix("redis-"))
    until(lambda: pods.replication(survivor).get("role") == "master", pods, f"{new} primary")
    assert pods.cli(survivor, 6379, "get", "accepted") == "job-1"

    pods.start(0, "redis")  # same data folder (the pod's volume), fresh sentinel config
    pods.start(0, "sentinel")

    def rejoined() -> bool:
        info = pods.replication(0)
        return (info.get("role"), info.get("master_host"), info.get("master_link_status")) == (
            "slave",
            new,
            "up",
        )

    until(rejoined, pods, f"redis-0 back as a replica of {new}")
    # It starts with replica-priority 0 (no candidate before it is synced); once
    # synced the start script must make it a failover candidate again.
    until(
        lambda: pods.cli(0, 6379, "config", "get", "replica-priority").split()[-1] == "100",
        pods,
        "redis-0 a failover candidate again",
    )
    until(lambda: pods.primary(0).splitlines()[0] == new, pods, "redis-0's sentinel follows")
    until(
        lambda: pods.cli(0, 26379, "sentinel", "ckquorum", "sam2fleet").startswith("OK 3"),
        pods,
        "three sentinels in quorum again",
    )
    assert pods.cli(0, 6379, "get", "accepted") == "job-1"
    # The sentinels move the other replica over too (one at a time: parallel-syncs 1).
    until(
        lambda: pods.replication(survivor).get("connected_slaves") == "2",
        pods,
        f"both other pods replicas of {new}",
    )
