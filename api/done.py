"""Waiting for jobs to end: one subscription per API process, not one per request.

Workers publish on a job's `done` channel when it ends (shared/records.py). A request
that waits (`?wait=`) would otherwise open a pubsub connection of its own: a connect,
a handshake, a subscribe and a close, round trips on the interactive hot path. The
listener holds one connection, pattern-subscribed to every job's channel, and wakes
the requests waiting for the job that ended. A lost connection is opened again;
waiters re-read the job's record at least once a second all the same, so a message
missed meanwhile (or before the first subscription) costs at most that second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import redis.asyncio as aredis

from sam2fleet.shared.records import Keys

log = logging.getLogger(__name__)
RECONNECT_S = 0.5


class DoneListener:
    def __init__(self, client: aredis.Redis, keys: Keys) -> None:
        self._client = client
        self._pattern = keys.done("*")
        self._skip = len(keys.done(""))  # the channel name's prefix before the job id
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set when the job's end is heard, while in the block."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiters[job_id]
            waiting.discard(event)
            if not waiting:
                del self._waiters[job_id]

    async def _listen(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(self._pattern)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message["type"] == "pmessage":
                        job_id = message["channel"].decode()[self._skip :]
                        for event in self._waiters.get(job_id, ()):
                            event.set()
            except (aredis.RedisError, OSError) as exc:
                log.warning("job-end listener lost Redis (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(RECONNECT_S)
            finally:
                with contextlib.suppress(aredis.RedisError, OSError):
                    await pubsub.aclose()
