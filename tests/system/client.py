"""A few lines of HTTP the system tests share."""

from __future__ import annotations

import base64
from typing import Any

import httpx


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def submit(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{base_url}/v1/jobs", json=body, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()


def wait(base_url: str, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    r = httpx.get(f"{base_url}/v1/jobs/{job_id}", params={"wait": timeout}, timeout=timeout + 10)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] in ("succeeded", "failed", "cancelled"), job
    return job


def run(base_url: str, body: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    job = wait(base_url, submit(base_url, body)["id"], timeout)
    assert job["status"] == "succeeded", job
    return job
