"""Scale-in loses nothing: a worker told to stop mid-job finishes that job, takes no
new one, and exits; the job it left in the queue runs elsewhere.

The worker runs exactly as a Kubernetes pod runs it (deploy/k8s): the console script
`sam2fleet worker`, signalled by its own pid as the kubelet signals PID 1, and judged
ready by the pod's probe, `sam2fleet worker-ready`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from sam2fleet.shared.records import Keys
from tests.conftest import SMALL
from tests.faults.conftest import FAULT_ENV, FaultFleet
from tests.support import RedisServer, fleet_env
from tests.system.client import submit, wait

CONSOLE_SCRIPT = Path(sys.executable).with_name("sam2fleet")


def probe(fleet: FaultFleet) -> int:
    """The worker pod's readiness probe, run as the kubelet runs it."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), "worker-ready"], env=fleet.env, capture_output=True, timeout=60
    ).returncode


@pytest.fixture(scope="module")
def no_worker(
    redis_server: RedisServer, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultFleet]:
    """The API with the fault seam on, and no worker yet: the test starts its own."""
    prefix = "scalein"
    fleet = FaultFleet(
        fleet_env(redis_server.url, tiny_checkpoint, prefix, SMALL, **FAULT_ENV),
        tmp_path_factory.mktemp("scale-in"),
    )
    fleet.redis = redis.Redis.from_url(redis_server.url)
    fleet.prefix = prefix
    fleet.start_api()
    try:
        yield fleet
    finally:
        fleet.stop()
        fleet.redis.close()


def test_sigterm_finishes_the_running_job_takes_no_new_one_and_exits(no_worker: FaultFleet) -> None:
    f = no_worker
    assert probe(f) == 1  # no worker on this host yet

    worker = f._spawn("pod", [str(CONSOLE_SCRIPT), "worker", "--name", "pod"])
    f.procs["pod"] = worker
    f.wait_ready()
    # `sam2fleet worker` became Celery in its own process: the pid a container's
    # runtime signals (PID 1 there) is Celery's, so SIGTERM is its warm shutdown.
    assert "celery" in psutil.Process(worker.pid).cmdline()
    assert probe(f) == 0

    running = submit(f.base_url, f.job_body("sleep:3"))
    f.wait_status(running["id"], "running")
    # An automatic-mode job: never taken into a batch of prompt jobs, so only a
    # delivery by Celery could start it.
    image, _ = f.image()
    waiting = submit(f.base_url, {"image": image, "mode": "auto", "auto": {"points_per_side": 4}})
    assert f.wait_status(waiting["id"], "queued")["attempts"] == 0

    worker.send_signal(signal.SIGTERM)
    done = wait(f.base_url, running["id"], timeout=60)
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert worker.wait(timeout=60) == 0
    f.procs.pop("pod")

    left = httpx.get(f"{f.base_url}/v1/jobs/{waiting['id']}").json()
    assert (left["status"], left["attempts"]) == ("queued", 0), left
    queue = Keys(f.prefix).queue("sam2.1_hiera_tiny")
    assert any(waiting["id"].encode() in m for m in f.redis.lrange(queue, 0, -1))
    assert probe(f) == 1  # the stopped worker no longer reports ready

    f.start_worker("w0")  # the autoscaler's other worker
    f.wait_ready()
    later = wait(f.base_url, waiting["id"], timeout=60)
    assert later["status"] == "succeeded" and later["attempts"] == 1, later
    assert f.redis.hget(f"{f.prefix}:job:{waiting['id']}", "terminal_attempts") == b"1"
