"""`Client` (blocking) and `AsyncClient` (asyncio): the calls of `ClientCore`, each run
by the client's own I/O. Everything but sending, sleeping and closing is in calls.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, Unpack

import httpx
import numpy as np

from sam2fleet.client.calls import POLL_S, ClientCore, Done, Pause, Steps, advance
from sam2fleet.client.models import ImageInfo, Job
from sam2fleet.client.payloads import ImageLike, JobOptions
from sam2fleet.client.retry import RetryPolicy

T = TypeVar("T")


class Client(ClientCore):
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(server, api_key, timeout, retry, headers)
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.server, headers=self.headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, steps: Steps[T]) -> T:
        step = advance(steps, None, None)
        while not isinstance(step, Done):
            reply, error = None, None
            if isinstance(step, Pause):
                self._sleep(step.seconds)
            else:
                try:
                    reply = self._http.request(
                        step.method, step.path, timeout=step.timeout, **step.options
                    )
                except httpx.HTTPError as exc:
                    error = exc
            step = advance(steps, reply, error)
        return step.value

    def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        retry_conflict: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """One API call with retries; raises `ApiError` on a final non-2xx answer."""
        steps = self._request(
            method, path, timeout=timeout, retry_conflict=retry_conflict, **kwargs
        )
        return self._run(steps)

    def ready(self) -> bool:
        return self._run(self._ready())

    def models(self) -> list[dict[str, Any]]:
        return self._run(self._models())

    def upload(self, image: ImageLike) -> ImageInfo:
        return self._run(self._upload(image))

    def submit(
        self,
        image: ImageLike | None = None,
        *,
        prompts: Sequence[Mapping[str, Any]] | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        return self._run(self._submit(image, prompts, options))

    def submit_body(self, body: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        return self._run(self._submit_body(body, idempotency_key))

    def get(self, job_id: str, wait: float = 0.0) -> Job:
        return self._run(self._get(job_id, wait))

    def wait(self, job_id: str, timeout: float | None = None, poll_s: float = POLL_S) -> Job:
        """Long-poll until the job ends; `WaitTimeout` after `timeout` seconds (None: never)."""
        return self._run(self._wait(job_id, timeout, poll_s))

    def cancel(self, job_id: str) -> Job:
        return self._run(self._cancel(job_id))

    def segment(
        self,
        image: ImageLike | None = None,
        prompts: Sequence[Mapping[str, Any]] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Submit and wait; raises `JobFailed` unless the job succeeded."""
        return self._run(self._segment(image, prompts, timeout, options))

    def masks(self, job_id: str, timeout: float | None = None) -> list[np.ndarray]:
        """Wait for the job and decode its masks (HxW bool arrays, in result order)."""
        return self._run(self._masks(job_id, timeout))


class AsyncClient(ClientCore):
    """The same calls as `Client`, awaitable. Use `async with`, or `await aclose()`."""

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_connections: int = 100,
    ) -> None:
        super().__init__(server, api_key, timeout, retry, headers)
        self._sleep = sleep
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(
            base_url=self.server,
            headers=self.headers,
            timeout=timeout,
            transport=transport,
            limits=limits,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, steps: Steps[T]) -> T:
        step = advance(steps, None, None)
        while not isinstance(step, Done):
            reply, error = None, None
            if isinstance(step, Pause):
                await self._sleep(step.seconds)
            else:
                try:
                    reply = await self._http.request(
                        step.method, step.path, timeout=step.timeout, **step.options
                    )
                except httpx.HTTPError as exc:
                    error = exc
            step = advance(steps, reply, error)
        return step.value

    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        retry_conflict: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        steps = self._request(
            method, path, timeout=timeout, retry_conflict=retry_conflict, **kwargs
        )
        return await self._run(steps)

    async def ready(self) -> bool:
        return await self._run(self._ready())

    async def models(self) -> list[dict[str, Any]]:
        return await self._run(self._models())

    async def upload(self, image: ImageLike) -> ImageInfo:
        return await self._run(self._upload(image))

    async def submit(
        self,
        image: ImageLike | None = None,
        *,
        prompts: Sequence[Mapping[str, Any]] | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        return await self._run(self._submit(image, prompts, options))

    async def submit_body(
        self, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Job:
        return await self._run(self._submit_body(body, idempotency_key))

    async def get(self, job_id: str, wait: float = 0.0) -> Job:
        return await self._run(self._get(job_id, wait))

    async def wait(self, job_id: str, timeout: float | None = None, poll_s: float = POLL_S) -> Job:
        return await self._run(self._wait(job_id, timeout, poll_s))

    async def cancel(self, job_id: str) -> Job:
        return await self._run(self._cancel(job_id))

    async def segment(
        self,
        image: ImageLike | None = None,
        prompts: Sequence[Mapping[str, Any]] | None = None,
        *,
        timeout: float | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        return await self._run(self._segment(image, prompts, timeout, options))

    async def masks(self, job_id: str, timeout: float | None = None) -> list[np.ndarray]:
        return await self._run(self._masks(job_id, timeout))
