"""The submit rate limit is a sliding window: at most N in *any* 60 seconds, across a
minute boundary too. The clock is handed to the Redis script, so these run in
milliseconds instead of waiting for minutes to turn."""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as aredis

from sam2fleet.api.ratelimit import WINDOW_MS, RateLimiter
from sam2fleet.shared.errors import RateLimited
from sam2fleet.shared.settings import Settings

LIMIT = 5
MINUTE = 1_700_000_040_000  # a whole minute since the epoch: where fixed windows reset


def hits(settings: Settings, calls: list[tuple[str, int]], limit: int = LIMIT) -> list[int | None]:
    """Each (owner, now_ms) in turn: None when admitted, else the Retry-After given."""

    async def go() -> list[int | None]:
        client = aredis.Redis.from_url(settings.redis_url)
        limiter = RateLimiter(settings.model_copy(update={"rate_limit_per_minute": limit}), client)
        out: list[int | None] = []
        try:
            for owner, now in calls:
                try:
                    await limiter.hit(owner, now_ms=now)
                    out.append(None)
                except RateLimited as exc:
                    out.append(exc.retry_after)
        finally:
            await client.aclose()
        return out

    return asyncio.run(go())


def test_a_full_window_before_the_minute_turns_still_counts_after_it(settings: Settings) -> None:
    burst = [("alice", MINUTE - 500 + i) for i in range(LIMIT)]  # the last half second
    answers = hits(
        settings,
        [
            *burst,
            ("alice", MINUTE + 500),  # a fixed-window counter would have reset here
            ("bob", MINUTE + 500),  # another key has its own window
            ("alice", MINUTE - 500 + WINDOW_MS - 1),  # the first is still inside
            ("alice", MINUTE - 500 + WINDOW_MS),  # now it has left: one slot
            ("alice", MINUTE - 500 + WINDOW_MS),  # and only one
        ],
    )
    assert answers[:LIMIT] == [None] * LIMIT
    # Refused until the oldest submit leaves the window: 59 s after MINUTE + 0.5 s.
    assert answers[LIMIT:] == [59, None, 1, None, 1]


def test_never_more_than_the_limit_in_any_window_and_no_refusal_without_cause(
    settings: Settings,
) -> None:
    rng = random.Random(7)
    times = sorted(MINUTE - 90_000 + rng.randrange(300_000) for _ in range(120))
    answers = hits(settings, [("carol", t) for t in times])
    admitted = [t for t, a in zip(times, answers, strict=True) if a is None]
    assert 0 < len(admitted) < len(times)
    for t, answer in zip(times, answers, strict=True):
        in_window = sum(1 for s in admitted if t - WINDOW_MS < s <= t)
        if answer is None:
            assert in_window <= LIMIT, t
        else:
            # Refused only with a full window, and told when its oldest leaves.
            assert in_window == LIMIT, t
            oldest = min(s for s in admitted if t - WINDOW_MS < s <= t)
            assert answer == max(1, -(-(oldest + WINDOW_MS - t) // 1000))


def test_a_limit_of_one_admits_one_submit_a_minute(settings: Settings) -> None:
    # The window is the documented 60 s, to the millisecond.
    times = [MINUTE, MINUTE + 1, MINUTE + 59_999, MINUTE + 60_000, MINUTE + 60_001]
    answers = hits(settings, [("erin", t) for t in times], limit=1)
    assert answers == [None, 60, 1, None, 60]


def test_no_limit_records_nothing(settings: Settings) -> None:
    async def go() -> None:
        client = aredis.Redis.from_url(settings.redis_url)
        limiter = RateLimiter(settings.model_copy(update={"rate_limit_per_minute": 0}), client)
        for _ in range(50):
            await limiter.hit("dave", now_ms=MINUTE)
        assert await client.keys(f"{settings.key_prefix}:*") == []
        await client.aclose()

    asyncio.run(go())
