"""A burst of concurrent clients against two API processes, and a storm of odd requests.

    .venv/bin/python benchmarks/burst.py --clients 60 --cap 10 --runs 3

Starts its own Redis, one worker (model at 256 px, random weights: the point is
admission, not masks) and two API processes (uvicorn) with
SAM2FLEET_MAX_QUEUED_JOBS=cap. Each run holds the worker with a job that sleeps at
the model, releases `clients` submits at one instant (half to each API process),
samples the queue depth (shared and private queues, read from Redis's lists) all
the while, then waits for every accepted job to finish. Afterwards it counts the
`sam2fleet_http_*` series one API process exports, sends `--odd` requests with odd
methods and made-up paths, and counts again.

Prints, and writes to --out: per run accepted, refused by error type, the deepest
queue seen against the cap, depth samples, accepted jobs that did not succeed; and
the series count before and after the odd requests. tests/system/test_burst.py
asserts the same quantities with the same helpers (tests/system/burst.py).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis
from common import ROOT, local_fleet

from tests.support import encode, scene
from tests.system.burst import (
    DepthSampler,
    burst,
    hold_the_worker,
    http_series,
    odd_requests,
    visit_every_label,
    wait_until_ready,
)
from tests.system.client import b64, wait

PREFIX = "burst"
MODEL = "sam2.1_hiera_tiny"


def one_run(
    urls: list[str], redis_url: str, clients: int, hold_s: float, seed: int
) -> dict[str, Any]:
    r = redis.Redis.from_url(redis_url)
    blocker = hold_the_worker(r, PREFIX, urls[0], hold_s)
    body = {"image": b64(encode(scene(120, 90, seed=seed))), "prompts": [{"box": [5, 5, 60, 50]}]}
    started = time.monotonic()
    with DepthSampler(redis_url, PREFIX, MODEL).running() as sampler:
        answers = burst(urls, body, clients)
    burst_s = time.monotonic() - started
    held = httpx.get(f"{urls[0]}/v1/jobs/{blocker}").json()["status"] == "running"
    accepted = [a.json()["id"] for a in answers if a.status_code == 202]
    refused = Counter(
        f"{a.status_code} {a.json()['error']['type']}" for a in answers if a.status_code != 202
    )
    finished = Counter(wait(urls[0], job_id, timeout=300)["status"] for job_id in accepted)
    wait(urls[0], blocker, timeout=300)
    r.close()
    return {
        "accepted": len(accepted),
        "refused": dict(refused),
        "refusals_with_retry_after": sum(
            1 for a in answers if a.status_code != 202 and int(a.headers.get("retry-after", 0)) > 0
        ),
        "deepest_queue": sampler.deepest,
        "depth_samples": sampler.samples,
        "burst_seconds": round(burst_s, 2),
        "worker_held_through_the_burst": held,
        "accepted_not_succeeded": len(accepted) - finished["succeeded"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=60)
    ap.add_argument("--cap", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--odd", type=int, default=300, help="odd requests after the bursts")
    ap.add_argument("--hold", type=float, default=15.0, help="seconds the worker is held")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "burst.json")
    args = ap.parse_args()
    env = {"SAM2FLEET_MAX_QUEUED_JOBS": str(args.cap), "SAM2FLEET_FAULT_INJECTION": "1"}
    with local_fleet(PREFIX, 256, **env) as (fleet, _, server):
        urls = [fleet.base_url, fleet.start_api("api2")]
        wait_until_ready(urls[1])
        runs = []
        for i in range(args.runs):
            runs.append(one_run(urls, server.url, args.clients, args.hold, seed=i))
            print(f"run {i + 1}: {json.dumps(runs[-1])}", flush=True)
        visit_every_label(urls[1])
        before = http_series(urls[1])
        statuses = odd_requests(urls[1], args.odd, seed=1)
        after = http_series(urls[1])
    report = {
        "clients": args.clients,
        "api_processes": 2,
        "cap": args.cap,
        "runs": runs,
        "odd_requests": args.odd,
        "odd_request_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "http_series_before": before,
        "http_series_after": after,
    }
    print(json.dumps(report, indent=2))
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
