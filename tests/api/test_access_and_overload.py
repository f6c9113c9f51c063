"""API keys, ownership, rate limits, idempotency and expiry, against a real Redis.

No model runs here: a warm-worker heartbeat written by the test stands in for a
worker (a test double for the readiness seam), so submits are accepted and stay
queued.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from sam2fleet.admin import apikeys
from sam2fleet.shared.records import Keys
from sam2fleet.shared.settings import Settings
from tests.api.conftest import serve
from tests.support import encode, scene

KEY_A, KEY_B = "s2f_key_for_alice_0123456789", "s2f_key_for_bob_9876543210"
IMG = base64.b64encode(encode(scene(64, 48))).decode()
BODY = {"image": IMG, "prompts": [{"box": [1, 1, 30, 30]}]}


def fake_warm_worker(rdb: redis.Redis, settings: Settings) -> None:
    key = Keys(settings.key_prefix).worker("stand-in")
    rdb.hset(key, mapping={"model": settings.model, "warm": 1, "ts": time.time(), "device": "cpu"})
    rdb.expire(key, 60)


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "auth_enabled": True,
            "api_key_hashes": apikeys.digest(KEY_A),
            "rate_limit_per_minute": 5,
            "job_ttl_s": 3,
        }
    )


@pytest.fixture
def api(auth_settings: Settings, rdb: redis.Redis) -> Iterator[httpx.Client]:
    fake_warm_worker(rdb, auth_settings)
    # Bob's key was made with `sam2fleet keys create`: only its digest is in Redis.
    rdb.hset(Keys(auth_settings.key_prefix).api_keys(), apikeys.digest(KEY_B), "bob")
    with serve(auth_settings) as client:
        yield client


def h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_requests_without_a_valid_key_are_401(api: httpx.Client) -> None:
    for r in (
        api.post("/v1/jobs", json=BODY),
        api.get("/v1/models"),
        api.post("/v1/jobs", json=BODY, headers=h("wrong")),
        api.get("/v1/jobs/x", headers={"X-API-Key": "wrong"}),
    ):
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        assert "wrong" not in r.text
    assert api.get("/livez").status_code == 200  # probes need no key
    assert api.get("/v1/models", headers={"X-API-Key": KEY_A}).status_code == 200


def test_jobs_and_images_are_visible_only_to_their_key(api: httpx.Client) -> None:
    job = api.post("/v1/jobs", json=BODY, headers=h(KEY_A))
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    assert api.get(f"/v1/jobs/{job_id}", headers=h(KEY_A)).status_code == 200
    assert api.get(f"/v1/jobs/{job_id}", headers=h(KEY_B)).status_code == 404
    assert api.delete(f"/v1/jobs/{job_id}", headers=h(KEY_B)).status_code == 404
    assert api.get(f"/v1/jobs/{job_id}", headers=h(KEY_A)).json()["status"] == "queued"
    image_id = api.post("/v1/images", json={"image": IMG}, headers=h(KEY_A)).json()["image_id"]
    r = api.post(
        "/v1/jobs", json={"image_id": image_id, "prompts": BODY["prompts"]}, headers=h(KEY_B)
    )
    assert r.status_code == 422 and "unknown or expired" in r.text


def test_keys_are_stored_hashed(
    api: httpx.Client, rdb: redis.Redis, auth_settings: Settings
) -> None:
    api.post("/v1/jobs", json=BODY, headers=h(KEY_A))
    for key in rdb.scan_iter(f"{auth_settings.key_prefix}:*"):
        assert KEY_A.encode() not in key and KEY_B.encode() not in key
        if rdb.type(key) == b"hash":
            dumped = json.dumps(
                {
                    k.decode(errors="replace"): v.decode(errors="replace")
                    for k, v in rdb.hgetall(key).items()
                }
            )
            assert KEY_A not in dumped and KEY_B not in dumped


def test_rate_limit_is_per_key_and_shared_across_api_processes(
    api: httpx.Client, auth_settings: Settings
) -> None:
    with serve(auth_settings) as second:  # another API process on the same Redis
        codes = [
            c.post("/v1/jobs", json=BODY, headers=h(KEY_A)).status_code
            for c in (api, second, api, second, api, second)
        ]
        assert codes == [202] * 5 + [429]
        limited = second.post("/v1/jobs", json=BODY, headers=h(KEY_A))
        assert limited.json()["error"]["type"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 61
        assert second.post("/v1/jobs", json=BODY, headers=h(KEY_B)).status_code == 202


def test_idempotency_key_gives_one_job(
    api: httpx.Client, rdb: redis.Redis, auth_settings: Settings
) -> None:
    headers = {**h(KEY_A), "Idempotency-Key": "batch-7/image-1"}
    first = api.post("/v1/jobs", json=BODY, headers=headers)
    again = api.post("/v1/jobs", json=BODY, headers=headers)
    assert first.status_code == 202 and again.status_code in (200, 202)
    assert again.json()["id"] == first.json()["id"]
    assert (
        rdb.llen(Keys(auth_settings.key_prefix).queue(auth_settings.model)) == 1
    )  # one message, one run
    other = api.post("/v1/jobs", json={**BODY, "multimask": False}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["type"] == "idempotency_conflict"
    # The same key string from another API key is another key.
    bob = api.post(
        "/v1/jobs", json=BODY, headers={**h(KEY_B), "Idempotency-Key": "batch-7/image-1"}
    )
    assert bob.status_code == 202 and bob.json()["id"] != first.json()["id"]


def test_records_expire_into_404(
    api: httpx.Client, rdb: redis.Redis, auth_settings: Settings
) -> None:
    job_id = api.post("/v1/jobs", json=BODY, headers=h(KEY_A)).json()["id"]
    assert api.get(f"/v1/jobs/{job_id}", headers=h(KEY_A)).status_code == 200
    ttl_ms = rdb.pttl(Keys(auth_settings.key_prefix).job(job_id))
    assert 0 < ttl_ms <= auth_settings.job_ttl_s * 1000
    deadline = time.monotonic() + auth_settings.job_ttl_s + 5
    while (r := api.get(f"/v1/jobs/{job_id}", headers=h(KEY_A))).status_code == 200:
        assert time.monotonic() < deadline, "the record outlived its TTL"
        time.sleep(0.1)
    assert r.status_code == 404 and "unknown or expired" in r.text


def test_no_secret_in_logs_or_errors(
    auth_settings: Settings, rdb: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    fake_warm_worker(rdb, auth_settings)
    secret_url = auth_settings.redis_url.replace("redis://", "redis://:hunter2-secret@")
    with caplog.at_level(logging.DEBUG), serve(auth_settings) as client:
        client.post("/v1/jobs", json=BODY, headers=h(KEY_A))
        client.post("/v1/jobs", json=BODY, headers=h("s2f_leaked_secret_attempt"))
    # A Redis URL with a password never shows up in an error either.
    broken = auth_settings.model_copy(
        update={
            "redis_url": secret_url.replace(
                str(auth_settings.redis_url.rsplit(":", 1)[1].split("/")[0]), "1"
            )
        }
    )
    with serve(broken) as client:
        r = client.post("/v1/jobs", json=BODY, headers=h(KEY_A))
        assert r.status_code == 503
        assert "hunter2" not in r.text
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (KEY_A, "s2f_leaked_secret_attempt", "hunter2-secret"):
        assert secret not in text
