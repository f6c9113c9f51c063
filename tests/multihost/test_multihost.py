"""The fleet across hosts: Redis, the API and two workers each on a host of its own
(network namespaces, tests/multihost/netns.py), reached only through the network the
test made. Jobs of every mode (prompt, automatic, a short video), image affinity,
readiness, Prometheus scraping every host; then a host cut off mid-job and a host lost
mid-job."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from sam2fleet.shared.images import image_id_for
from tests.multihost.fleet import WORKERS, MultiHost
from tests.support import encode, scene
from tests.system.client import b64, run, submit, wait
from tests.system.video_client import frames, upload
from tests.video_support import encode_video, moving_frames

BOX = {"box": [5, 5, 60, 50]}
MOMENT_S = 2.0
_seed = [3000]


def fresh_image(hosts: MultiHost, fault: str | None = None) -> tuple[str, str]:
    """A new image (base64) and its id, with a fault armed on it."""
    _seed[0] += 1
    data = encode(scene(96, 72, seed=_seed[0]))
    image_id = image_id_for(data)
    if fault:
        hosts.redis(lambda r: r.set(f"{hosts.prefix}:fault:{image_id}", fault))
    return b64(data), image_id


def host_of(worker: str) -> str:
    """The host in a worker's name (`worker-a:1234`)."""
    return worker.split(":")[0]


def test_every_host_answers_only_on_its_own_address(hosts: MultiHost) -> None:
    ready = hosts.get("/readyz")
    assert ready.status_code == 200, ready.text
    workers = hosts.warm_workers()
    assert sorted(host_of(w) for w in workers) == sorted(WORKERS)  # hostnames of their hosts
    # Nothing listens on the client host's loopback: the API is another host.
    with pytest.raises(httpx.ConnectError):
        hosts.client(lambda: httpx.get("http://127.0.0.1:8000/livez", timeout=2))


def test_prompt_and_automatic_jobs_run_across_hosts(hosts: MultiHost) -> None:
    image, _ = fresh_image(hosts)
    prompt = hosts.client(lambda: run(hosts.api, {"image": image, "prompts": [BOX]}))
    assert prompt["status"] == "succeeded" and prompt["result"]["masks"]
    auto = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    automatic = hosts.client(lambda: run(hosts.api, {"image": image, "mode": "auto", "auto": auto}))
    assert automatic["status"] == "succeeded" and automatic["result"]["masks"]
    for job in (prompt, automatic):
        assert host_of(hosts.job(job["id"])["holder"]) in WORKERS


def test_a_short_video_job_runs_across_hosts(hosts: MultiHost) -> None:
    n = 6
    data = encode_video(moving_frames(n))
    video = hosts.client(lambda: upload(hosts.api, data))
    click = {"obj_id": 1, "frame": 0, "points": [[40, 50]], "labels": [1]}
    body = {"mode": "video", "video_id": video["video_id"], "prompts": [click]}
    done = hosts.client(lambda: wait(hosts.api, submit(hosts.api, body)["id"], timeout=180))
    assert done["status"] == "succeeded", done
    records = hosts.client(lambda: frames(hosts.api, done["id"]))
    assert [r["frame"] for r in records] == list(range(n))


def test_prompts_on_an_image_follow_its_embedding_to_its_worker(hosts: MultiHost) -> None:
    image, _ = fresh_image(hosts)
    uploaded = hosts.client(
        lambda: httpx.post(f"{hosts.api}/v1/images", json={"image": image}, timeout=30)
    )
    assert uploaded.status_code in (200, 201), uploaded.text
    image_id = uploaded.json()["image_id"]
    first = hosts.client(lambda: run(hosts.api, {"image_id": image_id, "prompts": [BOX]}))
    embedded_on = hosts.job(first["id"])["holder"]
    assert first["result"]["timings"]["embedding_cache_hit"] is False
    for i in range(3):
        body = {"image_id": image_id, "prompts": [{"points": [[20 + i, 30]], "labels": [1]}]}
        job = hosts.client(lambda b=body: run(hosts.api, b))  # type: ignore[misc]
        assert hosts.job(job["id"])["holder"] == embedded_on, "routed away from the embedding"
        assert job["result"]["timings"]["embedding_cache_hit"] is True


def test_prometheus_scrapes_the_api_and_every_worker_host(
    hosts: MultiHost, prometheus: str
) -> None:
    def query(expr: str) -> list[dict[str, Any]]:
        r = hosts.client(
            lambda: httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        )
        assert r.status_code == 200, r.text
        result: list[dict[str, Any]] = r.json()["data"]["result"]
        return result

    deadline = time.monotonic() + 60
    while True:
        up = {s["metric"]["instance"]: s["value"][1] for s in query("up")}
        workers = query("sam2fleet_worker_up")
        if len(up) == 3 and set(up.values()) == {"1"} and len(workers) == 2:
            break
        assert time.monotonic() < deadline, (up, workers)
        time.sleep(1)
    expected = {f"{hosts.host(h).address}" for h in ("api", *WORKERS)}
    assert {instance.split(":")[0] for instance in up} == expected
    assert {s["metric"]["instance"].split(":")[0] for s in workers} == {
        hosts.host(w).address for w in WORKERS
    }


def test_a_host_cut_off_mid_job_and_back_later_writes_no_second_result(
    hosts: MultiHost,
) -> None:
    hosts.wait_workers(WORKERS)
    image, _ = fresh_image(hosts, "sleep:8")
    job = hosts.client(lambda: submit(hosts.api, {"image": image, "prompts": [BOX]}))
    holder = _wait_held(hosts, job["id"])
    cut = hosts.host(host_of(holder))
    cut.link(up=False)  # the cable is out; every process of the host keeps running
    try:
        # Its heartbeats stop reaching Redis: the other worker takes the job over.
        deadline = time.monotonic() + 60
        while True:
            record = hosts.job(job["id"])
            if record.get("holder") and record["holder"] != holder:
                break
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
        assert record["attempts"] == "2"
    finally:
        cut.link(up=True)
    done = hosts.client(lambda: wait(hosts.api, job["id"], timeout=120))
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    # The cut-off worker finished too and tried to write: refused (fenced) and counted.
    deadline = time.monotonic() + 90
    while int(hosts.job(job["id"]).get("terminal_attempts", 0)) < 2:
        assert time.monotonic() < deadline, (hosts.job(job["id"]), cut.log("worker"))
        time.sleep(0.3)
    record = hosts.job(job["id"])
    assert record["terminal_attempts"] == "2" and record["fenced_writes"] == "1", record
    assert record["status"] == "succeeded"
    assert "no longer holds the job" in cut.log("worker")
    metrics = hosts.client(lambda: httpx.get(f"http://{cut.address}:9101/metrics", timeout=10).text)
    assert "sam2fleet_fenced_writes_total" in metrics
    fenced = [
        line for line in metrics.splitlines() if line.startswith("sam2fleet_fenced_writes_total")
    ]
    assert fenced and float(fenced[0].rsplit(" ", 1)[1]) == 1.0, fenced
    hosts.wait_workers(WORKERS)  # back on the network, it beats again


def test_a_host_lost_mid_job_costs_seconds_and_one_more_attempt(hosts: MultiHost) -> None:
    hosts.wait_workers(WORKERS)
    image, _ = fresh_image(hosts, "sleep:3")
    job = hosts.client(lambda: submit(hosts.api, {"image": image, "prompts": [BOX]}))
    holder = _wait_held(hosts, job["id"])
    lost = hosts.host(host_of(holder))
    killed = lost.kill_all()  # every process of the host at once, supervisor and model
    lost_at = time.time()
    assert len(killed) >= 2 and lost.pids() == []
    done = hosts.client(lambda: wait(hosts.api, job["id"], timeout=120))
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    record = hosts.job(job["id"])
    assert host_of(record["holder"]) != lost.name
    assert record["terminal_attempts"] == "1" and record.get("fenced_writes", "0") == "0"
    # The bound: the lost heartbeats' TTL + one beat of the surviving worker's sweep.
    ttl = float(hosts.env["SAM2FLEET_HEARTBEAT_TTL_S"])
    beat = float(hosts.env["SAM2FLEET_HEARTBEAT_INTERVAL_S"])
    took_over_after = done["started_at"] - lost_at
    assert took_over_after < ttl + beat + MOMENT_S, took_over_after
    print(f"lost host: job started again {took_over_after:.1f} s after the kill")


def _wait_held(hosts: MultiHost, job_id: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        record = hosts.job(job_id)
        if record.get("status") == "running" and record.get("holder"):
            return record["holder"]
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
