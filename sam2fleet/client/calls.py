"""Every API call, written once for both clients.

A call is a generator of steps: it yields the I/O it needs, `Send` (the answer, or
the transport error, comes back into the generator) or `Pause`, and returns the
call's value. `Client` runs the steps with blocking httpx and `AsyncClient` with
asyncio, so request building, answer handling, retry decisions and waiting live here
and only here (the "sans-I/O" style of h11 and h2).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

import httpx
import numpy as np

from sam2fleet.client.errors import ApiError, WaitTimeout
from sam2fleet.client.models import ImageInfo, Job
from sam2fleet.client.payloads import ImageLike, JobOptions, image_bytes, submit_body
from sam2fleet.client.retry import RetryPolicy

DEFAULT_SERVER = "http://127.0.0.1:8000"
SERVER_ENV = "SAM2FLEET_SERVER"
API_KEY_ENV = "SAM2FLEET_API_KEY"
USER_AGENT = "sam2fleet-client/0.1"
POLL_S = 30.0  # one long-poll of `wait`; the server caps it at its SAM2FLEET_MAX_WAIT_S

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """Make one HTTP request (no retry: that is the steps' business)."""

    method: str
    path: str
    timeout: float
    options: dict[str, Any]  # params, json, files, headers: httpx's own arguments


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T


Step: TypeAlias = Send | Pause
Steps: TypeAlias = Generator[Step, httpx.Response | None, T]


def advance(
    steps: Steps[T], reply: httpx.Response | None, error: httpx.HTTPError | None
) -> Step | Done[T]:
    """The step after `reply` (or `error`) went back into the call, or its value once done."""
    try:
        return steps.throw(error) if error is not None else steps.send(reply)
    except StopIteration as stop:
        return Done(stop.value)


class ClientCore:
    """The configuration and the calls of both clients: `_name` holds the steps of the
    public method `name`, which each client runs its own way."""

    def __init__(
        self,
        server: str | None,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.server = (server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if self.api_key:
            self.headers["Authorization"] = f"Bearer {self.api_key}"
        #: called as on_retry(attempt, delay_s, reason) before each retry (for logs, tests)
        self.on_retry: Callable[[int, float, str], None] | None = None

    def _send(
        self, method: str, path: str, timeout: float | None, **options: Any
    ) -> Steps[httpx.Response]:
        reply = yield Send(method, path, timeout or self.timeout, options)
        assert reply is not None, "a Send is answered with a response or an error"
        return reply

    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        retry_conflict: bool = False,
        **options: Any,
    ) -> Steps[httpx.Response]:
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.HTTPError
            try:
                outcome = yield from self._send(method, path, timeout, **options)
            except httpx.HTTPError as exc:
                outcome = exc
            retry = self.retry.next_retry(attempt, outcome, retry_conflict=retry_conflict)
            if retry is None:
                if isinstance(outcome, httpx.HTTPError):
                    raise outcome
                if outcome.status_code >= 400:
                    raise ApiError.from_response(outcome)
                return outcome
            if self.on_retry is not None:
                self.on_retry(attempt + 1, retry.delay_s, retry.reason)
            yield Pause(retry.delay_s)
            attempt += 1

    def _ready(self) -> Steps[bool]:
        try:
            reply = yield from self._send("GET", "/readyz", None)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    def _models(self) -> Steps[list[dict[str, Any]]]:
        models: list[dict[str, Any]] = (yield from self._request("GET", "/v1/models")).json()
        return models

    def _upload(self, image: ImageLike) -> Steps[ImageInfo]:
        files = {"image": ("image", image_bytes(image))}
        reply = yield from self._request("POST", "/v1/images", files=files)
        return ImageInfo.from_dict(reply.json())

    def _submit(
        self,
        image: ImageLike | None,
        prompts: Sequence[Mapping[str, Any]] | None,
        options: JobOptions,
    ) -> Steps[Job]:
        body = submit_body(image, prompts=prompts, **options)
        return (yield from self._submit_body(body, options.get("idempotency_key")))

    def _submit_body(self, body: Mapping[str, Any], idempotency_key: str | None) -> Steps[Job]:
        # One key for every retry of this submit: the server makes at most one job of it.
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        reply = yield from self._request(
            "POST", "/v1/jobs", json=dict(body), headers=headers, retry_conflict=True
        )
        return Job.from_dict(reply.json())

    def _get(self, job_id: str, wait: float) -> Steps[Job]:
        reply = yield from self._request(
            "GET",
            f"/v1/jobs/{job_id}",
            params={"wait": wait} if wait else None,
            timeout=self.timeout + wait,
        )
        return Job.from_dict(reply.json())

    def _wait(self, job_id: str, timeout: float | None, poll_s: float) -> Steps[Job]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            job = yield from self._get(job_id, max(left, 0.0))
            if job.done:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job, timeout or 0.0)

    def _cancel(self, job_id: str) -> Steps[Job]:
        reply = yield from self._request("DELETE", f"/v1/jobs/{job_id}")
        return Job.from_dict(reply.json())

    def _segment(
        self,
        image: ImageLike | None,
        prompts: Sequence[Mapping[str, Any]] | None,
        timeout: float | None,
        options: JobOptions,
    ) -> Steps[Job]:
        submitted = yield from self._submit(image, prompts, options)
        job = yield from self._wait(submitted.id, timeout, POLL_S)
        job.result_or_raise()
        return job

    def _masks(self, job_id: str, timeout: float | None) -> Steps[list[np.ndarray]]:
        job = yield from self._wait(job_id, timeout, POLL_S)
        return job.result_or_raise().decode_masks()
