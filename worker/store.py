"""The worker's side of the job records in Redis: start, finish, heartbeat.

Terminal writes are one Lua script keyed by job id, so a redelivered job (a worker
died after computing but before acknowledging) can never produce a second result
or overwrite a cancellation.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from shared.keys import Keys, decode_hash

_START = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if s == 'succeeded' or s == 'failed' or s == 'cancelled' then return s end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 'running'
"""

_FINISH = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 0 end
if s == 'succeeded' or s == 'failed' or s == 'cancelled' then return 0 end
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


class JobStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)

    def start(self, job_id: str) -> dict[str, str] | None:
        """Mark the job running; None when it is gone, cancelled or already done."""
        state = self._start(keys=[self.keys.job(job_id)], args=[time.time()])
        if state != b"running":
            return None
        return decode_hash(self.redis.hgetall(self.keys.job(job_id)))

    def status(self, job_id: str) -> str | None:
        value = self.redis.hget(self.keys.job(job_id), "status")
        return value.decode() if value else None

    def image_bytes(self, image_id: str) -> bytes | None:
        return self.redis.hget(self.keys.image(image_id), "data")

    def succeed(self, job_id: str, result: dict[str, Any]) -> bool:
        return self._terminal(job_id, "succeeded", json.dumps(result), "")

    def fail(self, job_id: str, error: dict[str, str]) -> bool:
        return self._terminal(job_id, "failed", "", json.dumps(error))

    def _terminal(self, job_id: str, status: str, result: str, error: str) -> bool:
        keys = [self.keys.job(job_id), self.keys.result(job_id), self.keys.done(job_id)]
        return bool(self._finish(keys=keys, args=[status, result, error, time.time()]))

    def heartbeat(self, name: str, fields: dict[str, Any], ttl_s: float) -> None:
        key = self.keys.worker(name)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={**fields, "ts": time.time()})
        pipe.pexpire(key, int(ttl_s * 1000))
        pipe.execute()

    def forget_worker(self, name: str) -> None:
        self.redis.delete(self.keys.worker(name))
