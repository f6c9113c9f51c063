"""When to send a request again, and after how long.

429 and 503: the server says "not now" and accepted nothing; its `Retry-After` is
honoured. 502 and 504: a proxy in front of it gave up. Connection errors and timeouts:
backoff with jitter. Every request the client makes is safe to repeat: a submit carries
an idempotency key, uploads are content-addressed, the rest are reads and cancel.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from sam2fleet.client.errors import ApiError, retry_after_s

RETRY_STATUSES = frozenset({429, 502, 503, 504})
RETRY_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class Retry:
    """Send the request again after `delay_s` seconds; `reason` says why (for logs)."""

    delay_s: float
    reason: str


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait. `Retry-After` wins over the backoff when given."""

    max_retries: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.backoff_s * (2.0**attempt), self.max_backoff_s)
        return base * (0.5 + random.random() / 2)  # jitter: a fleet of clients spreads out

    def next_retry(
        self,
        attempt: int,
        outcome: httpx.Response | httpx.HTTPError,
        *,
        retry_conflict: bool = False,
    ) -> Retry | None:
        """The retry that follows `outcome` of try number `attempt` (0 for the first), or
        None when the outcome is final. `retry_conflict`: a 409 `conflict` means the first
        request with the same idempotency key is still being accepted."""
        if attempt >= self.max_retries:
            return None
        if isinstance(outcome, httpx.HTTPError):
            if not isinstance(outcome, RETRY_EXCEPTIONS):
                return None
            return Retry(self.delay(attempt, None), type(outcome).__name__)
        status = outcome.status_code
        if status in RETRY_STATUSES:
            return Retry(self.delay(attempt, retry_after_s(outcome)), f"HTTP {status}")
        if retry_conflict and status == 409 and ApiError.from_response(outcome).type == "conflict":
            return Retry(self.delay(attempt, None), "HTTP 409 (key in progress)")
        return None
