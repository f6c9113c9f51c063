"""The worker's side of the job records in Redis: start, finish, heartbeat.

Terminal writes are one Lua script keyed by job id, so a redelivered job (a worker
died after computing but before acknowledging) can never produce a second result
or overwrite a cancellation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from shared.keys import Keys, decode_hash

log = logging.getLogger(__name__)

# ARGV: now, max_attempts, the error JSON for a job out of attempts.
# A job whose earlier deliveries all died with their worker (killed, crashed) is
# failed here instead of being run again, so it cannot loop forever.
_START = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if s == 'succeeded' or s == 'failed' or s == 'cancelled' then return s end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if attempts >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[1], 'error', ARGV[3])
  redis.call('PUBLISH', KEYS[2], 'failed')
  return 'exhausted'
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 'running'
"""

_FINISH = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 0 end
if s == 'succeeded' or s == 'failed' or s == 'cancelled' then return 0 end
redis.call('HINCRBY', KEYS[1], 'terminal_writes', 1)  -- audited: never above 1
if ARGV[2] ~= '' then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
  else
    redis.call('SET', KEYS[2], ARGV[2])
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[4])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"""


T = TypeVar("T")


class JobStore:
    def __init__(
        self, client: redis.Redis, keys: Keys, *, max_attempts: int = 3, retry_s: float = 30.0
    ) -> None:
        self.redis = client
        self.keys = keys
        self.max_attempts = max_attempts
        self.retry_s = retry_s
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)

    def retrying(self, call: Callable[[], T]) -> T:
        """Ride out a Redis restart: a computed result is worth a few seconds' wait."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.2
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("redis unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def start(self, job_id: str) -> dict[str, str] | None:
        """Mark the job running; None when it is gone, cancelled, done or out of attempts."""
        error = json.dumps(
            {
                "type": "worker_crashed",
                "message": f"the job's worker died on each of its {self.max_attempts} attempts",
            }
        )
        state = self.retrying(
            lambda: self._start(
                keys=[self.keys.job(job_id), self.keys.done(job_id)],
                args=[time.time(), self.max_attempts, error],
            )
        )
        if state != b"running":
            return None
        return decode_hash(self.retrying(lambda: self.redis.hgetall(self.keys.job(job_id))))

    def status(self, job_id: str) -> str | None:
        value = self.retrying(lambda: self.redis.hget(self.keys.job(job_id), "status"))
        return value.decode() if value else None

    def image_bytes(self, owner: str, image_id: str) -> bytes | None:
        return self.retrying(lambda: self.redis.hget(self.keys.image(owner, image_id), "data"))

    def image_hw(self, owner: str, image_id: str) -> tuple[int, int] | None:
        """(height, width) from the upload's probe, without fetching the pixels."""
        key = self.keys.image(owner, image_id)
        height, width = self.retrying(lambda: self.redis.hmget(key, "height", "width"))
        return None if height is None or width is None else (int(height), int(width))

    def fault(self, image_id: str) -> str | None:
        value = self.redis.get(self.keys.fault(image_id))
        return value.decode() if value else None

    def succeed(self, job_id: str, result: dict[str, Any]) -> bool:
        return self._terminal(job_id, "succeeded", json.dumps(result), "")

    def fail(self, job_id: str, error: dict[str, str]) -> bool:
        return self._terminal(job_id, "failed", "", json.dumps(error))

    def _terminal(self, job_id: str, status: str, result: str, error: str) -> bool:
        keys = [self.keys.job(job_id), self.keys.result(job_id), self.keys.done(job_id)]
        return bool(
            self.retrying(
                lambda: self._finish(keys=keys, args=[status, result, error, time.time()])
            )
        )

    def task_ended(self, job_id: str, retval: object) -> None:
        """Called once a job's run is over, whatever its outcome (metrics hook)."""

    def heartbeat(self, name: str, fields: dict[str, Any], ttl_s: float) -> None:
        key = self.keys.worker(name)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={**fields, "ts": time.time()})
        pipe.pexpire(key, int(ttl_s * 1000))
        pipe.execute()

    def forget_worker(self, name: str) -> None:
        self.redis.delete(self.keys.worker(name))
