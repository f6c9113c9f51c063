"""The request body cap at its boundary: a body of exactly the cap is a body like any
other, one byte more is refused, whether the length is declared or the body streams."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from sam2fleet.api.limits import BodyLimitMiddleware
from sam2fleet.shared.errors import PayloadTooLarge

CAP = 1000


async def _read_all(scope: Any, receive: Any, send: Any) -> None:
    """The app behind the cap: reads the whole body, answers its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def _post(chunks: list[int], declared: int | None) -> tuple[int, bytes]:
    """POST a body sent in chunks of these sizes; (status, response body)."""
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "path": "/v1/jobs", "headers": headers}
    pending = [
        {"type": "http.request", "body": b"x" * n, "more_body": i < len(chunks) - 1}
        for i, n in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(BodyLimitMiddleware(_read_all, CAP)(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def test_a_declared_length_of_exactly_the_cap_is_read() -> None:
    assert _post([CAP], declared=CAP) == (200, str(CAP).encode())


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    status, body = _post([CAP + 1], declared=CAP + 1)
    assert status == 413
    assert json.loads(body)["error"]["type"] == "payload_too_large"


@pytest.mark.parametrize("chunks", [[CAP], [1] * CAP, [CAP - 1, 1], [1, CAP - 1]])
def test_a_streamed_body_of_exactly_the_cap_is_read(chunks: list[int]) -> None:
    assert _post(chunks, declared=None) == (200, str(CAP).encode())


@pytest.mark.parametrize("chunks", [[CAP + 1], [CAP, 1], [1] * (CAP + 1)])
def test_a_streamed_body_one_byte_over_is_cut_off(chunks: list[int]) -> None:
    with pytest.raises(PayloadTooLarge, match=f"over the {CAP}-byte limit"):
        _post(chunks, declared=None)
