"""Chaos run: a few hundred jobs through a real fleet while workers die and Redis
restarts or loses its primary.

    .venv/bin/python benchmarks/chaos.py --jobs 300 --workers 2 --seed 1
    .venv/bin/python benchmarks/chaos.py --sentinel --jobs 300 --workers 2 --seed 1

Starts its own Redis (AOF everysec, in a temp folder), N workers and the API, all
on this machine (model at 256 px, random weights: the point is delivery, not
masks). With `--sentinel` the Redis is a Sentinel set instead (a primary, two
replicas, three sentinels; tests/redis_sentinel.py) and every process is given
only its `sentinel://` URL. A client thread pool submits jobs, retrying 503s and
connection errors (a job counts as accepted once the API answered 202). A chaos
thread meanwhile, at random intervals, SIGKILLs a model process, SIGKILLs a whole
worker, SIGTERMs a worker, or restarts Redis; with `--sentinel`, instead of the
restart it SIGKILLs the primary, waits for the sentinels to promote a replica and
starts the killed server again as a replica. Afterwards every accepted job is
polled to its end.

Prints: accepted, faults injected (by kind), succeeded, failed (by type), lost
(accepted but unknown or never finished) and duplicated: more than one finishing
call kept in Redis (`terminal_attempts`), or more than one "result written" line
in the workers' logs (counted outside Redis, so a write a failover dropped still
shows). Exit status 1 if anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sam2fleet.shared import redis_clients  # noqa: E402
from sam2fleet.shared.models import MODELS  # noqa: E402
from sam2fleet.worker.weights import write_random_checkpoint  # noqa: E402
from tests.redis_sentinel import SentinelSet  # noqa: E402
from tests.support import Fleet, RedisServer, encode, fleet_env, scene  # noqa: E402
from tests.system.client import b64  # noqa: E402

PREFIX = "chaos"
WRITTEN = re.compile(r"job ([0-9a-f]{32}): result written")


class Chaos:
    def __init__(
        self,
        fleet: Fleet,
        server: RedisServer | SentinelSet,
        workers: list[str],
        rng: random.Random,
    ) -> None:
        self.fleet, self.server, self.workers, self.rng = fleet, server, workers, rng
        self.url = fleet.env["SAM2FLEET_REDIS_URL"]
        self.faults: Counter[str] = Counter()
        self.failover_s: list[float] = []
        self.stop = threading.Event()

    def model_pids(self) -> list[int]:
        try:
            r = redis_clients.sync_client(self.url, socket_timeout=2, socket_connect_timeout=2)
            pids = [int(r.hget(k, "pid") or 0) for k in r.scan_iter(f"{PREFIX}:worker:*")]
            redis_clients.close_sync(r)
        except redis.RedisError:
            return []
        return [p for p in pids if p and psutil.pid_exists(p)]

    def run(self, interval: float) -> None:
        redis_fault = "kill_primary" if isinstance(self.server, SentinelSet) else "restart_redis"
        while not self.stop.wait(self.rng.uniform(interval / 2, interval * 1.5)):
            kind = self.rng.choice(["kill_model", "kill_worker", "term_worker", redis_fault])
            try:
                getattr(self, kind)()
                self.faults[kind] += 1
            except Exception as exc:  # a fault that could not be injected is not counted
                print(f"chaos: {kind} not injected: {exc}", flush=True)

    def kill_model(self) -> None:
        pids = self.model_pids()
        if not pids:
            raise RuntimeError("no model process up")
        psutil.Process(self.rng.choice(pids)).kill()

    def _restart(self, name: str, hard: bool) -> None:
        proc = psutil.Process(self.fleet.procs[name].pid)
        family = [proc, *proc.children(recursive=True)]
        if hard:
            for p in family:
                p.kill()
        else:
            proc.terminate()  # warm shutdown: the running job finishes first
        psutil.wait_procs(family, timeout=120)
        self.fleet.start_worker(name)

    def kill_worker(self) -> None:
        self._restart(self.rng.choice(self.workers), hard=True)

    def term_worker(self) -> None:
        self._restart(self.rng.choice(self.workers), hard=False)

    def kill_primary(self) -> None:
        assert isinstance(self.server, SentinelSet)
        started = time.monotonic()
        old = self.server.kill_primary()
        self.server.wait_failover(old)
        self.failover_s.append(round(time.monotonic() - started, 1))
        self.server.rejoin(old)  # back as a replica: the next kill has one to promote

    def restart_redis(self) -> None:
        assert isinstance(self.server, RedisServer)
        self.server.stop()
        again = RedisServer.start(self.server.data_dir, appendonly=True, port=self.server.port)
        self.server.process = again.process


def submit(base: str, body: dict, deadline: float) -> str | None:
    """Submit until accepted (202) or the deadline; None if never accepted."""
    delay = 0.2
    while time.monotonic() < deadline:
        try:
            r = httpx.post(f"{base}/v1/jobs", json=body, timeout=30)
            if r.status_code == 202:
                return r.json()["id"]
            if r.status_code not in (429, 503):
                raise RuntimeError(f"submit refused: {r.status_code} {r.text}")
        except httpx.HTTPError:
            pass
        time.sleep(delay)
        delay = min(delay * 2, 3.0)
    return None


def final_state(base: str, job_id: str, deadline: float) -> dict | None:
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base}/v1/jobs/{job_id}", params={"wait": 10}, timeout=20)
            if r.status_code == 404:
                return None
            job = r.json()
            if job.get("status") in ("succeeded", "failed", "cancelled"):
                return job
        except (httpx.HTTPError, ValueError):
            time.sleep(0.5)
    return {"status": "unfinished"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fault-interval", type=float, default=6.0, help="mean seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--batch-max-size",
        type=int,
        default=4,
        help="cross-job batching on the workers (1: off); on by default so the faults "
        "also hit jobs taken into batches",
    )
    parser.add_argument(
        "--sentinel",
        action="store_true",
        help="Redis as a Sentinel set; primaries are SIGKILLed instead of Redis restarts",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    work = Path(tempfile.mkdtemp(prefix="sam2fleet-chaos-"))
    checkpoint = write_random_checkpoint(MODELS["sam2.1_hiera_tiny"], work / "tiny.pt", 0)
    server: RedisServer | SentinelSet
    if args.sentinel:
        server = SentinelSet.start(work / "redis", replicas=2)
        url = server.url()
    else:
        server = RedisServer.start(work / "redis", appendonly=True)
        url = server.url
    (work / "logs").mkdir()
    env = fleet_env(
        url,
        checkpoint,
        PREFIX,
        256,
        SAM2FLEET_VISIBILITY_TIMEOUT_S="20",
        SAM2FLEET_TASK_TIME_LIMIT_S="15",
        SAM2FLEET_TASK_SOFT_TIME_LIMIT_S="12",
        SAM2FLEET_MAX_ATTEMPTS="5",
        SAM2FLEET_TORCH_THREADS="1",
        SAM2FLEET_BATCH_MAX_SIZE=str(args.batch_max_size),
    )
    fleet = Fleet(env, work / "logs")
    names = [f"w{i}" for i in range(args.workers)]
    for name in names:
        fleet.start_worker(name)
    fleet.start_api()
    chaos = Chaos(fleet, server, names, rng)
    started = time.monotonic()
    try:
        fleet.wait_ready(timeout=300)
        chaos_thread = threading.Thread(target=chaos.run, args=(args.fault_interval,), daemon=True)
        chaos_thread.start()
        bodies = [
            {
                "image": b64(encode(scene(rng.randrange(64, 160), rng.randrange(48, 120), seed=i))),
                "prompts": [{"points": [[20, 20]], "labels": [1]}],
            }
            for i in range(args.jobs)
        ]
        deadline = time.monotonic() + 1800
        with ThreadPoolExecutor(args.concurrency) as pool:
            ids = list(pool.map(lambda b: submit(fleet.base_url, b, deadline), bodies))
        accepted = [i for i in ids if i]
        print(
            f"submitted: {len(accepted)} accepted of {args.jobs}; faults so far "
            f"{sum(chaos.faults.values())}",
            flush=True,
        )
        # Keep hurting the fleet while it drains the queue, until half is done.
        with ThreadPoolExecutor(args.concurrency) as pool:
            drained = pool.map(
                lambda j: final_state(fleet.base_url, j, time.monotonic() + 900), accepted
            )
            for i, _ in enumerate(drained):
                if i == len(accepted) // 2:
                    chaos.stop.set()
        chaos.stop.set()
        chaos_thread.join()
        # Then read every job once more, after the last fault.
        with ThreadPoolExecutor(args.concurrency) as pool:
            finals = list(
                pool.map(lambda j: final_state(fleet.base_url, j, time.monotonic() + 300), accepted)
            )
        audit = redis_clients.sync_client(url, socket_timeout=10)
        writes = [int(audit.hget(f"{PREFIX}:job:{j}", "terminal_attempts") or 0) for j in accepted]
        results = [int(audit.exists(f"{PREFIX}:result:{j}")) for j in accepted]
        redis_clients.close_sync(audit)
        logged: Counter[str] = Counter()
        for path in (work / "logs").glob("w*.log"):
            logged.update(WRITTEN.findall(path.read_text(errors="replace")))
    finally:
        chaos.stop.set()
        fleet.stop()
        server.stop()

    outcome = Counter((f or {"status": "lost"})["status"] for f in finals)
    failed = Counter(f["error"]["type"] for f in finals if f and f["status"] == "failed")
    report = {
        "jobs_accepted": len(accepted),
        "faults_injected": sum(chaos.faults.values()),
        "faults_by_kind": dict(chaos.faults),
        "jobs_succeeded": outcome["succeeded"],
        "jobs_failed": outcome["failed"],
        "failed_by_type": dict(failed),
        "jobs_lost": outcome["lost"] + outcome["unfinished"],
        "jobs_with_more_than_one_result": sum(1 for w in writes if w > 1),
        "jobs_with_more_than_one_result_written_in_logs": sum(1 for j in accepted if logged[j] > 1),
        "succeeded_without_result": sum(
            1
            for f, r in zip(finals, results, strict=True)
            if f and f["status"] == "succeeded" and not r
        ),
        "jobs_run_more_than_once": sum(1 for f in finals if f and f.get("attempts", 0) > 1),
        "jobs_encoded_in_a_batch": sum(
            1
            for f in finals
            if f and (f.get("result") or {}).get("timings", {}).get("encoder_batch_size", 1) > 1
        ),
        "seconds": round(time.monotonic() - started, 1),
        "redis": "sentinel (primary, 2 replicas, 3 sentinels)" if args.sentinel else "one server",
        "failover_seconds": chaos.failover_s,
        "seed": args.seed,
        "workers": args.workers,
        "batch_max_size": args.batch_max_size,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "chaos-sentinel.json" if args.sentinel else "chaos.json"
    (args.out / name).write_text(json.dumps(report, indent=2) + "\n")
    for key, value in report.items():
        print(f"{key:32} {value}")
    bad = (
        report["jobs_lost"]
        or report["jobs_with_more_than_one_result"]
        or report["jobs_with_more_than_one_result_written_in_logs"]
        or report["succeeded_without_result"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
