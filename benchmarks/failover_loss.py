"""What a Redis failover loses of the jobs already answered 202, with and without a WAIT.

    .venv/bin/python benchmarks/failover_loss.py --rounds 6 --lag-ms 0 500

A Sentinel set (a primary, one replica, three sentinels; tests/redis_sentinel.py)
and two API processes on it, side by side under the same load and the same
failovers: one with SAM2FLEET_REDIS_MIN_REPLICAS_ACK=0 (answers 202 once the
primary holds the job), one with 1 (answers 202 once a replica holds it too). No
worker runs: a stand-in heartbeat keeps the APIs admitting, so every accepted job
stays queued where it can be counted. This measures the admission path only,
which is what the setting guards.

Each round the replica replicates through a small TCP relay in this script. A
few seconds of submits; then the relay holds the primary's stream for `lag` ms, as
a link that has fallen behind (a congested network, a busy replica host); the
primary is SIGKILLed and the relay drops what it held, as a host that dies takes
its unsent writes with it; the sentinels promote the replica; the killed server
comes back as the new replica. (Pausing the replica process instead loses nothing:
the kernel keeps what was already sent in its socket buffer.) A job is lost when it
was answered 202 before the kill and its record or its queue message is missing on
the new primary.

Writes benchmarks/results/failover-loss.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sam2fleet.shared import redis_clients  # noqa: E402
from sam2fleet.shared.records import Keys  # noqa: E402
from tests.redis_sentinel import SentinelSet  # noqa: E402
from tests.support import Fleet, encode, fleet_env, scene  # noqa: E402

MODEL = "sam2.1_hiera_tiny"
BODY = {
    "image": base64.b64encode(encode(scene(64, 48, seed=1))).decode(),
    "prompts": [{"box": [2, 2, 40, 30]}],
}
JOB_ID = re.compile(rb"[0-9a-f]{32}")


class Relay:
    """A TCP relay from a replica to its primary that can hold the primary's stream,
    then drop it."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hold = threading.Event()
        self.dead = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.dead.is_set():
            try:
                down, _ = self.listener.accept()
                up = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self.sockets += [down, up]
            threading.Thread(target=self._pump, args=(up, down, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(down, up, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_primary: bool) -> None:
        held: list[bytes] = []
        try:
            while not self.dead.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if from_primary and self.hold.is_set():
                    held.append(data)  # never sent if the relay is dropped meanwhile
                    continue
                for chunk in [*held, data]:
                    dst.sendall(chunk)
                held.clear()
        except OSError:
            pass
        finally:
            self.drop()

    def drop(self) -> None:
        self.dead.set()
        for s in [self.listener, *self.sockets]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class Side:
    """One API process and the jobs it accepted."""

    def __init__(self, name: str, acks: int, url: str, logs: Path) -> None:
        self.name, self.acks, self.prefix = name, acks, f"loss{acks}"
        env = fleet_env(
            url,
            Path("unused.pt"),
            self.prefix,
            None,
            SAM2FLEET_REDIS_MIN_REPLICAS_ACK=str(acks),
            SAM2FLEET_MAX_QUEUED_JOBS="10000000",
        )
        self.fleet = Fleet(env, logs)
        self.base = self.fleet.start_api(name)
        self.accepted: list[tuple[float, str]] = []
        self.refused: Counter[str] = Counter()
        self.lock = threading.Lock()

    def submit_loop(self, stop: threading.Event) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{self.base}/v1/jobs", json=BODY)
                except httpx.HTTPError as exc:
                    self.refused[type(exc).__name__] += 1
                    time.sleep(0.05)
                    continue
                if r.status_code == 202:
                    with self.lock:
                        self.accepted.append((time.monotonic(), r.json()["id"]))
                else:
                    self.refused[str(r.status_code)] += 1
                    time.sleep(0.05)


def submit_latency(base: str, count: int) -> dict[str, float]:
    """Milliseconds per submit, one at a time, with the replica replicating directly."""
    times = []
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            started = time.perf_counter()
            r = client.post(f"{base}/v1/jobs", json=BODY)
            times.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 202, r.text
    times.sort()
    return {"p50": round(times[len(times) // 2], 2), "p95": round(times[int(len(times) * 0.95)], 2)}


def heartbeat(url: str, prefixes: list[str], stop: threading.Event) -> None:
    """A stand-in warm worker for each API, so they admit jobs with no model loaded."""
    client = redis_clients.sync_client(url, socket_timeout=2, socket_connect_timeout=2)
    while not stop.wait(0.5):
        for prefix in prefixes:
            key = Keys(prefix).worker("stand-in")
            try:
                beat = {"model": MODEL, "warm": 1, "ts": time.time(), "device": "cpu"}
                client.hset(key, mapping=beat)
                client.expire(key, 60)
            except Exception:  # the primary is failing over: try again next beat
                pass
    redis_clients.close_sync(client)


def missing(s: SentinelSet, side: Side, ids: list[str]) -> int:
    """Jobs of `ids` whose record or queue message the current primary lacks."""
    keys = Keys(side.prefix)
    with s.client() as r:
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.exists(keys.job(job_id))
        present = pipe.execute()
        queued = {
            m.decode() for msg in r.lrange(keys.queue(MODEL), 0, -1) for m in JOB_ID.findall(msg)
        }
    return sum(1 for j, p in zip(ids, present, strict=True) if not p or j not in queued)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="failovers per lag")
    parser.add_argument("--lag-ms", type=int, nargs="+", default=[0, 500])
    parser.add_argument("--clients", type=int, default=4, help="submitting threads per API")
    parser.add_argument("--load-s", type=float, default=3.0, help="submits before each kill")
    parser.add_argument("--latency-submits", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sam2fleet-loss-"))
    s = SentinelSet.start(work / "redis", replicas=1)
    (work / "logs").mkdir()
    url = s.url()
    sides = [Side("api-ack0", 0, url, work / "logs"), Side("api-ack1", 1, url, work / "logs")]
    stop = threading.Event()
    threads = [threading.Thread(target=heartbeat, args=(url, [x.prefix for x in sides], stop))]
    for side in sides:
        threads += [
            threading.Thread(target=side.submit_loop, args=(stop,)) for _ in range(args.clients)
        ]
    rounds: list[dict[str, object]] = []
    latency: dict[str, dict[str, float]] = {}
    try:
        for side in sides:
            _wait_up(side.base)
        threads[0].start()  # the stand-in worker first
        time.sleep(1.5)
        latency = {side.name: submit_latency(side.base, args.latency_submits) for side in sides}
        print(json.dumps({"submit_latency_ms": latency}), flush=True)
        for t in threads[1:]:
            t.start()
        checked = {side.name: 0 for side in sides}
        for lag_ms in args.lag_ms:
            for _ in range(args.rounds):
                primary = s.primary_port()
                replica = next(p for p in s.servers if p != primary and s.role(p) != "down")
                relay = Relay(primary)
                with s.client(replica) as r:
                    r.replicaof("127.0.0.1", relay.port)  # a partial resync, through the relay
                s.wait_replicas(primary, 1)
                time.sleep(args.load_s)
                with s.client(replica) as r:
                    through_relay = r.info("replication")["master_port"] == relay.port
                relay.hold.set()
                time.sleep(lag_ms / 1000)
                killed_at = time.monotonic()
                old = s.kill_primary()
                relay.drop()
                s.wait_failover(old)
                failover_s = time.monotonic() - killed_at
                row: dict[str, object] = {
                    "lag_ms": lag_ms,
                    "failover_s": round(failover_s, 1),
                    "through_relay": through_relay,
                }
                for side in sides:
                    with side.lock:
                        before = [j for t, j in side.accepted if t < killed_at]
                    new = before[checked[side.name] :]
                    checked[side.name] = len(before)
                    row[f"{side.name}_accepted"] = len(new)
                    row[f"{side.name}_lost"] = missing(s, side, new)
                rounds.append(row)
                print(json.dumps(row), flush=True)
                s.rejoin(old)
                s.wait_replicas(s.primary_port(), 1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for side in sides:
            side.fleet.stop()
        s.stop()

    summary: dict[str, object] = {}
    for lag_ms in args.lag_ms:
        these = [r for r in rounds if r["lag_ms"] == lag_ms]
        for side in sides:
            accepted = sum(int(str(r[f"{side.name}_accepted"])) for r in these)
            lost = sum(int(str(r[f"{side.name}_lost"])) for r in these)
            summary[f"lag {lag_ms} ms, min_replicas_ack={side.acks}"] = {
                "failovers": len(these),
                "accepted_before_the_kills": accepted,
                "lost": lost,
            }
    report = {
        "summary": summary,
        "refused_by_api": {side.name: dict(side.refused) for side in sides},
        "submit_latency_ms": latency,
        "rounds": rounds,
        "clients_per_api": args.clients,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "failover-loss.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def _wait_up(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/livez", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base} did not come up")


if __name__ == "__main__":
    sys.exit(main())
