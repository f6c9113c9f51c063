"""Admission: may one more job (or upload) come in? Answered in one atomic step in Redis.

Reading the queue's depth and then enqueueing, as two steps, lets every API process
that reads the same depth at the same moment enqueue: a burst went far past the cap.
So a Lua script checks and *reserves* together. A job waiting counts once it holds
a reservation, and stays counted as a message on a queue:

    waiting = messages on the model's shared queue
            + messages on its workers' private queues (image affinity)
            + reservations not yet turned into messages

Between the push of its message and the release of its reservation a job counts
twice, which can only refuse early, never admit past the cap. A reservation that is
never released (its API process died mid-submit) lapses after `RESERVATION_MS`.

The same script reads Redis's memory: with `maxmemory` set, new work is refused
(`storage_full`) while `used_memory` plus the incoming upload is over
`SAM2FLEET_REDIS_MEMORY_HIGH_WATER` of it, so the room left is there for the
results of jobs already accepted instead of writes failing mid-job.

The script reads keys it is not given (the private queues named in the registry):
fine on one Redis or Sentinel, which is what Celery's broker supports anyway.
"""

from __future__ import annotations

import logging
import uuid

import redis.asyncio as aredis
from redis.exceptions import RedisError

from sam2fleet.api.lua import NOW_MS
from sam2fleet.shared.errors import QueueFull, StorageFull
from sam2fleet.shared.records import Keys
from sam2fleet.shared.settings import Settings

log = logging.getLogger("sam2fleet.api")

# Longer than any submit holds a slot (an enqueue retries for about a second, a Redis
# call times out after two), short enough that a dead API process's slots come back soon.
RESERVATION_MS = 30_000

# Messages on the shared queue and on every private queue in the registry.
_MESSAGES = """
local function messages(shared, registry, private_prefix)
  local n = redis.call('LLEN', shared)
  for _, q in ipairs(redis.call('SMEMBERS', registry)) do
    if string.sub(q, 1, #private_prefix) == private_prefix then
      n = n + redis.call('LLEN', q)
    end
  end
  return n
end
"""

# KEYS: shared queue, private-queue registry. ARGV: private queue prefix.
DEPTH_SCRIPT = _MESSAGES + "return messages(KEYS[1], KEYS[2], ARGV[1])"

# KEYS: shared queue, private-queue registry, reservations; none for an upload, which
# only needs room. ARGV: incoming bytes, high water (fraction of maxmemory), cap,
# private queue prefix, reservation id, reservation lifetime ms, now ms ('' = Redis's
# clock, shared by every API process). Answers {'ok', waiting before this one} or
# {'storage_full', used, max} or {'queue_full', waiting}.
ADMIT_SCRIPT = (
    NOW_MS
    + _MESSAGES
    + """
local info = redis.call('INFO', 'memory')
local max = tonumber(string.match(info, 'maxmemory:(%d+)')) or 0
local used = tonumber(string.match(info, 'used_memory:(%d+)')) or 0
if max > 0 and used + tonumber(ARGV[1]) > max * tonumber(ARGV[2]) then
  return {'storage_full', used, max}
end
if #KEYS == 0 then return {'ok', 0} end
local now = now_ms(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local waiting = messages(KEYS[1], KEYS[2], ARGV[4]) + redis.call('ZCARD', KEYS[3])
if waiting >= tonumber(ARGV[3]) then return {'queue_full', waiting} end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[6]))
return {'ok', waiting}
"""
)


class Admission:
    def __init__(self, settings: Settings, client: aredis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.keys = Keys(settings.key_prefix)
        self._admit = client.register_script(ADMIT_SCRIPT)
        self._depth = client.register_script(DEPTH_SCRIPT)

    async def reserve(self, model: str, incoming_bytes: int, now_ms: int | None = None) -> str:
        """A slot in the model's queue for one job: its reservation id. Raises
        `StorageFull` or `QueueFull` instead when there is no room."""
        reservation = uuid.uuid4().hex
        answer = await self._admit(
            keys=[
                self.keys.queue(model),
                self.keys.private_queues(model),
                self.keys.reservations(model),
            ],
            args=[
                incoming_bytes,
                self.settings.redis_memory_high_water,
                self.settings.max_queued_jobs,
                self.keys.private_queue_prefix(model),
                reservation,
                RESERVATION_MS,
                "" if now_ms is None else now_ms,
            ],
        )
        self._raise_if_refused(answer, model)
        return reservation

    async def check_storage(self, incoming_bytes: int) -> None:
        """Room for an upload of this size; `StorageFull` otherwise."""
        answer = await self._admit(
            keys=[], args=[incoming_bytes, self.settings.redis_memory_high_water]
        )
        self._raise_if_refused(answer, None)

    async def release(self, model: str, reservation: str) -> None:
        """The job's message is queued, or it never will be: the slot is no longer held.
        Never raises: a submit already answered must not fail here, and a slot that
        could not be released lapses by itself."""
        try:
            await self.redis.zrem(self.keys.reservations(model), reservation)
        except RedisError as exc:
            log.warning("could not release an admission slot: %s", type(exc).__name__)

    async def depth(self, model: str) -> int:
        """Messages waiting for the model's workers (shared and private queues)."""
        return int(
            await self._depth(
                keys=[self.keys.queue(model), self.keys.private_queues(model)],
                args=[self.keys.private_queue_prefix(model)],
            )
        )

    def _raise_if_refused(self, answer: list[bytes | int], model: str | None) -> None:
        verdict = answer[0].decode() if isinstance(answer[0], bytes) else str(answer[0])
        if verdict == "storage_full":
            used, limit = int(answer[1]), int(answer[2])
            raise StorageFull(
                f"Redis holds {used / 2**20:.1f} MiB of its {limit / 2**20:.1f} MiB limit "
                f"(new work stops at {self.settings.redis_memory_high_water:.0%}); retry once "
                "results and images have expired or been fetched"
            )
        if verdict == "queue_full":
            raise QueueFull(
                f"{model} has {self.settings.max_queued_jobs} jobs waiting; retry later"
            )
