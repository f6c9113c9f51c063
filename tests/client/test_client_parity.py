"""`Client` and `AsyncClient` are one implementation: the same methods, and the same
requests for the same calls."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sam2fleet.client import AsyncClient, Client

JOB = {
    "id": "a" * 32,
    "model": "sam2.1_hiera_tiny",
    "mode": "prompt",
    "image_id": "b" * 64,
    "created_at": 1.0,
}
RESULT = {
    "image": {"image_id": "b" * 64, "width": 4, "height": 3, "format": "PNG"},
    "model": {"name": "m", "checkpoint_sha256": "c", "weights": "random"},
    "masks": [],
    "timings": {"embed_s": 0.5},
}


def _answer(request: httpx.Request) -> httpx.Response:
    """A fleet in miniature: every job ends at once, with an empty result."""
    method, path = request.method, request.url.path
    if path == "/readyz":
        return httpx.Response(200, json={"ready": True})
    if path == "/v1/models":
        return httpx.Response(200, json=[{"name": "m", "default": True, "workers": 1}])
    if path == "/v1/images":
        return httpx.Response(201, json=RESULT["image"])
    if method == "POST" and path == "/v1/jobs":
        return httpx.Response(202, json={**JOB, "status": "queued"})
    if method == "DELETE":
        return httpx.Response(200, json={**JOB, "status": "cancelled"})
    return httpx.Response(200, json={**JOB, "status": "succeeded", "result": RESULT})


# Each public call, with the arguments it is made with in both clients.
CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("ready", (), {}),
    ("models", (), {}),
    ("upload", (b"\x89PNG bytes",), {}),
    ("submit", (b"img",), {"prompts": [{"box": [0, 0, 2, 2]}], "idempotency_key": "k"}),
    ("submit", (), {"image_id": "b" * 64, "auto": {"points_per_side": 4}, "idempotency_key": "k"}),
    ("submit_body", ({"mode": "auto", "image_id": "i"},), {"idempotency_key": "k"}),
    ("get", ("a" * 32,), {"wait": 5}),
    ("wait", ("a" * 32,), {"timeout": 10, "poll_s": 2}),
    ("cancel", ("a" * 32,), {}),
    ("segment", (b"img", [{"box": [0, 0, 2, 2]}]), {"idempotency_key": "k", "multimask": False}),
    ("masks", ("a" * 32,), {}),
    ("request", ("GET", "/v1/models"), {}),
]


def _seen(requests: list[httpx.Request]) -> list[tuple[str, str, bytes, str]]:
    out = []
    for r in requests:
        body = r.read()
        boundary = r.headers.get("content-type", "").partition("boundary=")[2]
        if boundary:  # multipart boundaries are random
            body = body.replace(boundary.encode(), b"BOUNDARY")
        out.append((r.method, str(r.url), body, r.headers.get("Idempotency-Key", "")))
    return out


def _values(value: Any) -> Any:
    """What a call returned, comparable across clients (jobs by their raw record)."""
    if isinstance(value, list):
        return [_values(v) for v in value]
    if isinstance(value, httpx.Response):
        return (value.status_code, value.json())
    return getattr(value, "raw", value)


@pytest.mark.parametrize(("name", "args", "kwargs"), CALLS, ids=[c[0] for c in CALLS])
def test_both_clients_send_the_same_requests_and_return_the_same_values(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    sync_seen: list[httpx.Request] = []
    async_seen: list[httpx.Request] = []

    def recorder(into: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
        return lambda request: (into.append(request), _answer(request))[1]

    with Client(
        "http://fleet.test", "key", transport=httpx.MockTransport(recorder(sync_seen))
    ) as c:
        sync_value = getattr(c, name)(*args, **kwargs)

    async def go() -> Any:
        transport = httpx.MockTransport(recorder(async_seen))
        async with AsyncClient("http://fleet.test", "key", transport=transport) as c:
            return await getattr(c, name)(*args, **kwargs)

    async_value = asyncio.run(go())
    assert sync_seen, "the call made no request"
    assert _seen(async_seen) == _seen(sync_seen)
    assert _values(async_value) == _values(sync_value)


def test_every_public_call_exists_in_both_with_the_same_parameters() -> None:
    def calls(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(fn)
            for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") and name not in ("close", "aclose")
        }

    sync, asynchronous = calls(Client), calls(AsyncClient)
    assert set(sync) == set(asynchronous) == {name for name, _, _ in CALLS}
    for name, signature in sync.items():
        assert asynchronous[name].parameters == signature.parameters, name
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
