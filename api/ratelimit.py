"""Per-key submit rate: at most N submits in *any* 60 seconds, shared by every API process.

Fixed one-minute windows let a client send N at 0:59 and N more at 1:00. Here each
key keeps the times of its accepted submits of the last window in a sorted set, and
one Lua script drops the old ones, counts, and admits or refuses in a single step,
so concurrent requests on several API processes cannot both take the last slot.
A refused request is not recorded (a client retrying too early is not locked out
longer), and Retry-After says when the oldest recorded submit leaves the window.
Memory: at most N entries per key, for one window.
"""

from __future__ import annotations

import math
import uuid

import redis.asyncio as aredis

from sam2fleet.api.lua import NOW_MS
from sam2fleet.shared.errors import RateLimited
from sam2fleet.shared.records import Keys
from sam2fleet.shared.settings import Settings

WINDOW_MS = 60_000

# KEYS: the key's log. ARGV: limit, window ms, request id, now ms ('' = Redis's
# clock). Answers {1, 0} when admitted, {0, ms until a slot frees} when not.
SLIDING_WINDOW_SCRIPT = (
    NOW_MS
    + """
local now = now_ms(ARGV[4])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0}
"""
)


class RateLimiter:
    def __init__(self, settings: Settings, client: aredis.Redis) -> None:
        self.limit = settings.rate_limit_per_minute
        self.keys = Keys(settings.key_prefix)
        self._script = client.register_script(SLIDING_WINDOW_SCRIPT)

    async def hit(self, owner: str, now_ms: int | None = None) -> None:
        """Count one submit of this owner; `RateLimited` when over the limit."""
        if self.limit <= 0:
            return
        admitted, wait_ms = await self._script(
            keys=[self.keys.rate(owner)],
            args=[self.limit, WINDOW_MS, uuid.uuid4().hex, "" if now_ms is None else now_ms],
        )
        if not admitted:
            raise RateLimited(
                f"over {self.limit} submits in 60 s for this key",
                max(1, math.ceil(int(wait_ms) / 1000)),
            )
