"""API keys: who is asking, and how often they may submit.

Keys are checked by their sha256 digest against the configured digests and the
ones `sam2fleet keys create` stored in Redis; the key itself is never stored,
logged or echoed. The owner id kept on jobs and images is a prefix of a second
hash, so it reveals nothing usable about the key.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Request

from sam2fleet.admin import apikeys
from sam2fleet.api.ratelimit import RateLimiter
from sam2fleet.shared.errors import Unauthorized
from sam2fleet.shared.records import Keys

ANONYMOUS = "anon"


def owner_id(digest: str) -> str:
    return hashlib.sha256(f"owner:{digest}".encode()).hexdigest()[:16]


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


async def authenticate(request: Request) -> str:
    """The caller's owner id; 401 when auth is on and no valid key was presented."""
    settings = request.app.state.settings
    if not settings.auth_enabled:
        return ANONYMOUS
    key = _presented_key(request)
    if key is None:
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`")
    digest = apikeys.digest(key)
    if digest not in settings.accepted_key_hashes():
        service = request.app.state.service
        if not await service.redis.hexists(Keys(settings.key_prefix).api_keys(), digest):
            raise Unauthorized("the API key is not valid")
    return owner_id(digest)


Owner = Annotated[str, Depends(authenticate)]


async def check_rate(request: Request, owner: str) -> None:
    """One submit of this owner against its rate limit (api/ratelimit.py)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    await limiter.hit(owner)
