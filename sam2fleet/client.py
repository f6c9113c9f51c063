"""Sync and async HTTP clients of the sam2fleet API, on httpx.

Both clients retry what is safe to retry: 429 and 503 honouring `Retry-After`
(seconds or an HTTP date), 502/504 and connection errors with exponential backoff
and jitter. Every submit carries an `Idempotency-Key` (one is generated when the
caller gives none), and uploads are content-addressed, so a retried request never
makes a second job.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

DEFAULT_SERVER = "http://127.0.0.1:8000"
SERVER_ENV = "SAM2FLEET_SERVER"
API_KEY_ENV = "SAM2FLEET_API_KEY"
TERMINAL = ("succeeded", "failed", "cancelled")
USER_AGENT = "sam2fleet-client/0.1"

# 429/503: the server says "not now" and accepted nothing. 502/504: a proxy in front
# of it gave up; every request this client makes is safe to repeat (idempotency key
# on submit, content-addressed uploads, reads, cancel).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
RETRY_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

ImageLike = bytes | bytearray | str | os.PathLike[str] | Image.Image | np.ndarray


# --- errors -----------------------------------------------------------------------


class ApiError(Exception):
    """A non-2xx answer, after retries: `status`, the server's error `type` and `message`."""

    def __init__(
        self, status: int, type_: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message
        self.retry_after = retry_after


class JobFailed(Exception):
    """A job that ended `failed` or `cancelled` where a result was expected."""

    def __init__(self, job: Job) -> None:
        err = job.error or {}
        super().__init__(
            f"job {job.id} {job.status}: {err.get('type', job.status)}: "
            f"{err.get('message', '')}".rstrip(": ")
        )
        self.job = job


class WaitTimeout(Exception):
    """The job had not ended when the wait's timeout ran out; `job` is its last state."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.id} still {job.status} after {timeout:g} s")
        self.job = job


# --- typed results ----------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    image_id: str
    width: int
    height: int
    format: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageInfo:
        return cls(d["image_id"], int(d["width"]), int(d["height"]), d.get("format"))


@dataclass(frozen=True)
class Mask:
    segmentation: dict[str, Any]
    area: int
    bbox: list[float]
    predicted_iou: float
    stability_score: float | None = None
    prompt_index: int | None = None
    point_coords: list[list[float]] | None = None
    crop_box: list[float] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Mask:
        return cls(
            d["segmentation"],
            int(d["area"]),
            list(d["bbox"]),
            float(d["predicted_iou"]),
            d.get("stability_score"),
            d.get("prompt_index"),
            d.get("point_coords"),
            d.get("crop_box"),
        )

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.segmentation["size"]
        return int(h), int(w)

    def decode(self) -> np.ndarray:
        """The mask as an HxW bool array (from COCO RLE or from PNG output)."""
        return decode_segmentation(self.segmentation)


@dataclass(frozen=True)
class Result:
    image: ImageInfo
    model: dict[str, Any]
    masks: list[Mask]
    timings: dict[str, float]
    notes: list[str]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        return cls(
            ImageInfo.from_dict(d["image"]),
            dict(d["model"]),
            [Mask.from_dict(m) for m in d["masks"]],
            dict(d.get("timings", {})),
            list(d.get("notes", [])),
            dict(d),
        )

    def decode_masks(self) -> list[np.ndarray]:
        return [m.decode() for m in self.masks]


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    model: str
    mode: str
    image_id: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    result: Result | None
    error: dict[str, str] | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        result = d.get("result")
        return cls(
            d["id"],
            d["status"],
            d["model"],
            d["mode"],
            d["image_id"],
            float(d["created_at"]),
            d.get("started_at"),
            d.get("finished_at"),
            int(d.get("attempts") or 0),
            Result.from_dict(result) if result else None,
            d.get("error"),
            dict(d),
        )

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def result_or_raise(self) -> Result:
        if self.status != "succeeded" or self.result is None:
            raise JobFailed(self)
        return self.result


def decode_segmentation(seg: Mapping[str, Any]) -> np.ndarray:
    if seg.get("counts") is not None:
        from pycocotools import mask as mask_utils

        counts = seg["counts"]
        rle = {
            "size": list(seg["size"]),
            "counts": counts.encode() if isinstance(counts, str) else counts,
        }
        return mask_utils.decode(rle).astype(bool)
    if seg.get("png") is not None:
        with Image.open(io.BytesIO(base64.b64decode(seg["png"]))) as img:
            return np.asarray(img.convert("L")) > 0
    raise ValueError("segmentation has neither `counts` (RLE) nor `png`")


# --- request building (shared by both clients) ---------------------------------------


def image_bytes(image: ImageLike) -> bytes:
    """Bytes of an image file: raw bytes, a path, a PIL image or an HxW(x3/4) uint8 array."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"not an image: {type(image).__name__}")


def submit_body(
    image: ImageLike | None = None,
    *,
    image_id: str | None = None,
    prompts: Sequence[Mapping[str, Any]] | None = None,
    mode: str | None = None,
    model: str | None = None,
    multimask: bool | None = None,
    auto: Mapping[str, Any] | None = None,
    output: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of `POST /v1/jobs`. `mode` defaults to prompt with prompts, else auto."""
    if (image is None) == (image_id is None):
        raise ValueError("give exactly one of image and image_id")
    body: dict[str, Any] = {"mode": mode or ("prompt" if prompts else "auto")}
    if image is not None:
        body["image"] = base64.b64encode(image_bytes(image)).decode()
    else:
        body["image_id"] = image_id
    if body["mode"] == "prompt":
        body["prompts"] = [dict(p) for p in prompts or []]
    for name, value in (("model", model), ("multimask", multimask)):
        if value is not None:
            body[name] = value
    if auto:
        body["auto"] = dict(auto)
    if output:
        body["output"] = dict(output)
    return body


def retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def api_error(response: httpx.Response) -> ApiError:
    try:
        err = response.json()["error"]
        type_, message = str(err["type"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        type_, message = "http_error", response.text[:500] or response.reason_phrase
    return ApiError(response.status_code, type_, message, retry_after_s(response))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait. `Retry-After` wins over the backoff when given."""

    max_retries: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.backoff_s * (2**attempt), self.max_backoff_s)
        return base * (0.5 + random.random() / 2)  # jitter: a fleet of clients spreads out


class _Base:
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

    def _retry_reason(
        self,
        attempt: int,
        response: httpx.Response | None,
        exc: Exception | None,
        retry_conflict: bool = False,
    ) -> float | None:
        """Seconds to wait before retrying, or None when the outcome is final."""
        if attempt >= self.retry.max_retries:
            return None
        if exc is not None:
            delay, reason = self.retry.delay(attempt, None), type(exc).__name__
        elif response is not None and response.status_code in RETRY_STATUSES:
            delay = self.retry.delay(attempt, retry_after_s(response))
            reason = f"HTTP {response.status_code}"
        elif (
            retry_conflict
            and response is not None
            and response.status_code == 409
            and api_error(response).type == "conflict"
        ):
            # The first request with this Idempotency-Key is still being accepted.
            delay, reason = self.retry.delay(attempt, None), "HTTP 409 (key in progress)"
        else:
            return None
        if self.on_retry is not None:
            self.on_retry(attempt + 1, delay, reason)
        return delay

    @staticmethod
    def _submit_headers(idempotency_key: str | None) -> dict[str, str]:
        return {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}


class Client(_Base):
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
        attempt = 0
        while True:
            response, error = None, None
            try:
                response = self._http.request(
                    method, path, timeout=timeout or self.timeout, **kwargs
                )
            except RETRY_EXCEPTIONS as exc:
                error = exc
            delay = self._retry_reason(attempt, response, error, retry_conflict)
            if delay is None:
                if error is not None:
                    raise error
                assert response is not None
                if response.status_code >= 400:
                    raise api_error(response)
                return response
            self._sleep(delay)
            attempt += 1

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/models").json()

    def upload(self, image: ImageLike) -> ImageInfo:
        return ImageInfo.from_dict(
            self.request(
                "POST", "/v1/images", files={"image": ("image", image_bytes(image))}
            ).json()
        )

    def submit(
        self,
        image: ImageLike | None = None,
        *,
        image_id: str | None = None,
        prompts: Sequence[Mapping[str, Any]] | None = None,
        mode: str | None = None,
        model: str | None = None,
        multimask: bool | None = None,
        auto: Mapping[str, Any] | None = None,
        output: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        body = submit_body(
            image,
            image_id=image_id,
            prompts=prompts,
            mode=mode,
            model=model,
            multimask=multimask,
            auto=auto,
            output=output,
        )
        return self.submit_body(body, idempotency_key=idempotency_key)

    def submit_body(self, body: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        r = self.request(
            "POST",
            "/v1/jobs",
            json=dict(body),
            retry_conflict=True,
            headers=self._submit_headers(idempotency_key),
        )
        return Job.from_dict(r.json())

    def get(self, job_id: str, wait: float = 0.0) -> Job:
        r = self.request(
            "GET",
            f"/v1/jobs/{job_id}",
            params={"wait": wait} if wait else None,
            timeout=self.timeout + wait,
        )
        return Job.from_dict(r.json())

    def wait(self, job_id: str, timeout: float | None = None, poll_s: float = 30.0) -> Job:
        """Long-poll until the job ends; `WaitTimeout` after `timeout` seconds (None: never)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            job = self.get(job_id, wait=max(left, 0.0))
            if job.done:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job, timeout or 0.0)

    def cancel(self, job_id: str) -> Job:
        return Job.from_dict(self.request("DELETE", f"/v1/jobs/{job_id}").json())

    def segment(
        self,
        image: ImageLike | None = None,
        prompts: Sequence[Mapping[str, Any]] | None = None,
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Job:
        """Submit and wait; raises `JobFailed` unless the job succeeded."""
        job = self.wait(self.submit(image, prompts=prompts, **kwargs).id, timeout)
        job.result_or_raise()
        return job

    def masks(self, job_id: str, timeout: float | None = None) -> list[np.ndarray]:
        """Wait for the job and decode its masks (HxW bool arrays, in result order)."""
        return self.wait(job_id, timeout).result_or_raise().decode_masks()


class AsyncClient(_Base):
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

    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        retry_conflict: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        attempt = 0
        while True:
            response, error = None, None
            try:
                response = await self._http.request(
                    method, path, timeout=timeout or self.timeout, **kwargs
                )
            except RETRY_EXCEPTIONS as exc:
                error = exc
            delay = self._retry_reason(attempt, response, error, retry_conflict)
            if delay is None:
                if error is not None:
                    raise error
                assert response is not None
                if response.status_code >= 400:
                    raise api_error(response)
                return response
            await self._sleep(delay)
            attempt += 1

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def models(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/models")).json()

    async def upload(self, image: ImageLike) -> ImageInfo:
        r = await self.request("POST", "/v1/images", files={"image": ("image", image_bytes(image))})
        return ImageInfo.from_dict(r.json())

    async def submit(
        self,
        image: ImageLike | None = None,
        *,
        image_id: str | None = None,
        prompts: Sequence[Mapping[str, Any]] | None = None,
        mode: str | None = None,
        model: str | None = None,
        multimask: bool | None = None,
        auto: Mapping[str, Any] | None = None,
        output: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        body = submit_body(
            image,
            image_id=image_id,
            prompts=prompts,
            mode=mode,
            model=model,
            multimask=multimask,
            auto=auto,
            output=output,
        )
        return await self.submit_body(body, idempotency_key=idempotency_key)

    async def submit_body(
        self, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Job:
        r = await self.request(
            "POST",
            "/v1/jobs",
            json=dict(body),
            retry_conflict=True,
            headers=self._submit_headers(idempotency_key),
        )
        return Job.from_dict(r.json())

    async def get(self, job_id: str, wait: float = 0.0) -> Job:
        r = await self.request(
            "GET",
            f"/v1/jobs/{job_id}",
            params={"wait": wait} if wait else None,
            timeout=self.timeout + wait,
        )
        return Job.from_dict(r.json())

    async def wait(self, job_id: str, timeout: float | None = None, poll_s: float = 30.0) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            job = await self.get(job_id, wait=max(left, 0.0))
            if job.done:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job, timeout or 0.0)

    async def cancel(self, job_id: str) -> Job:
        return Job.from_dict((await self.request("DELETE", f"/v1/jobs/{job_id}")).json())

    async def segment(
        self,
        image: ImageLike | None = None,
        prompts: Sequence[Mapping[str, Any]] | None = None,
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Job:
        job = await self.wait((await self.submit(image, prompts=prompts, **kwargs)).id, timeout)
        job.result_or_raise()
        return job

    async def masks(self, job_id: str, timeout: float | None = None) -> list[np.ndarray]:
        return (await self.wait(job_id, timeout)).result_or_raise().decode_masks()
