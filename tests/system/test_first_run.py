"""`sam2fleet up` as a newcomer's first run: random weights written on the way, a
worker whose warm-up hangs reported and replaced, Ctrl-C quick even when stuck."""

from __future__ import annotations

import re
import time
from pathlib import Path

import psutil
import redis

from tests.support import RedisServer, encode, fleet_env, scene
from tests.system.client import b64, run
from tests.system.up import Output, sam2fleet_up

READY_S = 240  # a first run: the checkpoint written, two models loaded on 2 cores
STOP_S = 10  # Ctrl-C to exit, whatever the workers are doing
BODY = {"image": b64(encode(scene(120, 90))), "prompts": [{"box": [10, 10, 80, 60]}]}


def started_pids(out: Output, after: int = 0) -> dict[str, int]:
    pids = {}
    for line in out.lines[after:]:
        if m := re.search(r"(worker\d+-\w+): started \(pid (\d+)\)", line):
            pids[m.group(1)] = int(m.group(2))
    return pids


def stuck_env(
    redis_server: RedisServer, prefix: str, checkpoint: Path, fault: str, **extra: str
) -> dict[str, str]:
    """A fleet whose model processes meet the warm-up fault `fault` (worker/faults.py)."""
    redis.Redis.from_url(redis_server.url).set(f"{prefix}:fault:warmup", fault)
    return fleet_env(
        redis_server.url, checkpoint, prefix, 256, SAM2FLEET_FAULT_INJECTION="1", **extra
    )


def gone(pid: int, within_s: float = 5.0) -> bool:
    """The process has ended (exited, or a zombie left for init to reap)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def maps_torch(pid: int) -> bool:
    """Whether the process has torch's libraries (and its OpenMP runtime) loaded."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps or "libgomp" in maps


def test_first_run_writes_random_weights_once_serves_and_stops(
    tmp_path: Path, redis_server: RedisServer, prefix: str
) -> None:
    # As in a fresh clone: no checkpoint folder at all, random weights asked for.
    checkpoints = tmp_path / "checkpoints"
    env = fleet_env(
        redis_server.url,
        None,
        prefix,
        256,
        SAM2FLEET_RANDOM_WEIGHTS="1",
        SAM2FLEET_CHECKPOINT_DIR=str(checkpoints),
    )
    with sam2fleet_up(env, tmp_path, "--workers", "2") as (out, base):
        out.wait_for(r"ready\. Try:", timeout=READY_S)
        job = run(base, BODY)
        assert job["status"] == "succeeded", job
        assert job["result"]["model"]["weights"] == "random"
        # Both workers started at once; one wrote the file, the other waited for it.
        writes = [line for line in out.lines if "writing random sam2.1_hiera_tiny" in line]
        assert len(writes) == 1, out.lines
        assert sorted(p.name for p in (checkpoints / "random").iterdir()) == [
            "sam2.1_hiera_tiny-seed0.pt",
            "sam2.1_hiera_tiny-seed0.pt.lock",
        ]
        # Each worker's Celery supervisor forks its pool: it must not have loaded
        # torch (GNU OpenMP is not fork-safe), while the pool process holding the
        # model has (which shows the probe sees torch where it is).
        pids = started_pids(out)
        assert len(pids) == 2
        for name, pid in pids.items():
            pool = psutil.Process(pid).children()
            assert len(pool) == 1, (name, pool)
            assert not maps_torch(pid), f"{name}'s supervisor has torch loaded"
            assert maps_torch(pool[0].pid)
    assert out.stopped_s <= STOP_S
    assert any("stopped." in line for line in out.lines)


def test_a_worker_stuck_in_warm_up_is_reported_and_replaced(
    tmp_path: Path, redis_server: RedisServer, prefix: str, tiny_checkpoint: Path
) -> None:
    bound = 10
    env = stuck_env(
        redis_server,
        prefix,
        tiny_checkpoint,
        "hang_once",
        SAM2FLEET_WORKER_WARMUP_TIMEOUT_S=str(bound),
    )
    with sam2fleet_up(env, tmp_path) as (out, base):
        out.wait_for(r"worker0-cpu: started")
        seen_start = time.monotonic()
        held = int(out.wait_for(r"warm-up held by fault injection \(hang_once\) in pid (\d+)")[1])
        first = started_pids(out)["worker0-cpu"]
        report = out.wait_for(r"worker0-cpu: no warm-up reported within 10s", timeout=60)
        waited = time.monotonic() - seen_start
        assert bound - 1 <= waited <= bound + 10, waited
        # The report shows the worker's last lines, the stuck warm-up among them.
        at = next(i for i, line in enumerate(out.lines) if report.group(0) in line)
        shown = []
        for line in out.lines[at + 1 :]:
            if not line.startswith("    "):
                break
            shown.append(line)
        assert any("warm-up held by fault injection" in line for line in shown), shown
        # Replaced: the stuck worker and its pool are gone, a new one serves.
        out.wait_for(r"worker0-cpu: started", after=at)
        assert started_pids(out, after=at)["worker0-cpu"] != first
        assert gone(first) and gone(held)
        out.wait_for(r"ready\. Try:", timeout=READY_S)
        assert run(base, BODY)["status"] == "succeeded"


def test_ctrl_c_stops_a_fleet_whose_model_process_is_stuck(
    tmp_path: Path, redis_server: RedisServer, prefix: str, tiny_checkpoint: Path
) -> None:
    env = stuck_env(redis_server, prefix, tiny_checkpoint, "hang")
    with sam2fleet_up(env, tmp_path) as (out, _):
        held = int(out.wait_for(r"warm-up held by fault injection \(hang\) in pid (\d+)")[1])
        worker = started_pids(out)["worker0-cpu"]
    assert out.stopped_s <= STOP_S, out.stopped_s
    assert any("worker0-cpu: still running after 6s; killed" in line for line in out.lines)
    assert gone(worker) and gone(held)
