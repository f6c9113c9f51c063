"""What the client raises: a final error answer, a job that did not succeed, a wait that
ran out."""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from sam2fleet.client.models import Job


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

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The API's `{"error": {"type", "message"}}`, or the raw answer of anything else
        (a proxy's HTML page, say)."""
        try:
            err = response.json()["error"]
            type_, message = str(err["type"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            type_, message = "http_error", response.text[:500] or response.reason_phrase
        return cls(response.status_code, type_, message, retry_after_s(response))


def retry_after_s(response: httpx.Response) -> float | None:
    """The answer's `Retry-After` in seconds from now (it may be seconds or an HTTP date)."""
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


class JobFailed(Exception):
    """A job that ended `failed` or `cancelled` where a result was expected."""

    def __init__(self, job: Job) -> None:
        reason = f"{job.error.type}: {job.error.message}" if job.error else job.status
        super().__init__(f"job {job.id} {job.status}: {reason}")
        self.job = job


class WaitTimeout(Exception):
    """The job had not ended when the wait's timeout ran out; `job` is its last state."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.id} still {job.status} after {timeout:g} s")
        self.job = job
