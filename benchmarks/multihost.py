"""Throughput across hosts: prompt jobs through the API with one worker host, then two.

    .venv/bin/python benchmarks/multihost.py --jobs 40      # needs root (network namespaces)

The hosts are those of tests/multihost: Redis, the API, worker-a, worker-b and a
client host, each in its own network namespace on one bridge, reached only through
that network. The client submits `--jobs` prompt jobs (each on a new image, so each
runs the image encoder) from `--concurrency` threads and waits for all of them: with
worker-a alone, then with worker-b started beside it, then with worker-a alone again
(the machine may be shared: the two one-host rounds bracket the two-host one).
Reported: jobs/s for each, the machine's load average after each, and the ratio. Each
worker gets `--torch-threads` threads (a host of its own would bring its own cores);
on a machine with fewer cores than the worker hosts together use, the ratio measures
the machine, not the fleet: no target. Written to benchmarks/results/multihost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ROOT, TINY

from sam2fleet.worker.weights import write_random_checkpoint
from tests.multihost.fleet import MultiHost, multihost
from tests.multihost.netns import enter_namespace
from tests.support import encode, scene
from tests.system.client import b64, submit, wait


def through(fleet: MultiHost, jobs: int, concurrency: int, seed: int) -> dict[str, Any]:
    box = {"box": [40, 30, 200, 180]}
    bodies = [
        {"image": b64(encode(scene(320, 240, seed=seed + i))), "prompts": [box]}
        for i in range(jobs)
    ]

    def one(body: dict[str, Any]) -> dict[str, Any]:
        return wait(fleet.api, submit(fleet.api, body)["id"], timeout=600)

    client = fleet.host("client").namespace
    with ThreadPoolExecutor(concurrency, initializer=enter_namespace, initargs=(client,)) as pool:
        started = time.perf_counter()
        done = list(pool.map(one, bodies))
        seconds = time.perf_counter() - started
    assert all(d["status"] == "succeeded" for d in done), [d["status"] for d in done]
    holders = [fleet.job(d["id"])["holder"].split(":")[0] for d in done]
    return {
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "jobs": jobs,
        "seconds": round(seconds, 2),
        "jobs_per_s": round(jobs / seconds, 3),
        "jobs_by_host": {h: holders.count(h) for h in sorted(set(holders))},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=256, help="model input (reduced)")
    parser.add_argument("--torch-threads", type=int, default=1, help="per worker host")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/multihost.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sam2fleet-multihost-"))
    checkpoint = write_random_checkpoint(TINY, work / "tiny.pt", 0)
    extra = {"SAM2FLEET_TORCH_THREADS": str(args.torch_threads)}
    with multihost(
        work / "hosts", checkpoint, workers=("worker-a",), image_size=args.image_size, **extra
    ) as fleet:
        through(fleet, min(4, args.jobs), args.concurrency, seed=90_000)  # warm both paths
        one = through(fleet, args.jobs, args.concurrency, seed=10_000)
        print(f"one worker host:  {one['jobs_per_s']:.2f} jobs/s", flush=True)
        fleet.start_worker("worker-b")
        fleet.wait_workers(("worker-a", "worker-b"))
        through(fleet, min(4, args.jobs), args.concurrency, seed=91_000)
        two = through(fleet, args.jobs, args.concurrency, seed=20_000)
        print(f"two worker hosts: {two['jobs_per_s']:.2f} jobs/s", flush=True)
        # One host again: the machine is shared, so the first figure alone could be
        # a quiet or a busy moment; the two one-host rounds bracket the two-host one.
        worker_b = fleet.host("worker-b").procs["worker"]
        worker_b.terminate()
        worker_b.wait(timeout=60)
        again = through(fleet, args.jobs, args.concurrency, seed=30_000)
        print(f"one worker host again: {again['jobs_per_s']:.2f} jobs/s", flush=True)
    one_mean = (one["jobs_per_s"] + again["jobs_per_s"]) / 2
    ratio = round(two["jobs_per_s"] / one_mean, 2)
    print(f"ratio two / mean of one: {ratio}")
    report = {
        "command": "benchmarks/multihost.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": TINY.name,
        "image_size": args.image_size,
        "image": "320x240 PNG, one box prompt, a new image per job (the encoder runs)",
        "torch_threads_per_worker": args.torch_threads,
        "concurrency": args.concurrency,
        "one_worker_host": one,
        "two_worker_hosts": two,
        "one_worker_host_again": again,
        "ratio": ratio,
        "ratio_is": "two-host jobs/s over the mean of the two one-host rounds",
        "note": "hosts are network namespaces of one machine sharing its CPU cores; "
        "with as many cores as the worker hosts use together the ratio shows how the "
        "fleet spreads jobs, otherwise it shows the machine's cores",
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
