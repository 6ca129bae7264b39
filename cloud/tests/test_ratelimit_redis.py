"""The rate limiter's Lua script against a real Redis: counting, refusing, revocation, batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gridclear.cloud.api.ratelimit import RateLimiter, RateLimitExceededError


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _limiter(redis: Redis, prefix: str, *, enabled: bool = True) -> RateLimiter:
    return RateLimiter(
        redis=redis,
        prefix=prefix,
        limits={"api": "3/minute", "stacked": "2/second;5/minute", "identity": "100/minute"},
        enabled=enabled,
    )


async def test_a_key_is_admitted_up_to_its_limit_then_refused_with_a_retry_time(
    redis: Redis, redis_prefix: str
) -> None:
    limiter = _limiter(redis, redis_prefix)
    for _ in range(3):
        await limiter.hit("api", "10.0.0.1")
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.hit("api", "10.0.0.1")
    assert refused.value.group == "api"
    assert 1 <= refused.value.retry_after_s <= 120
    await limiter.hit("api", "10.0.0.2")  # another key has its own budget
    await limiter.hit("unlimited", "10.0.0.1")  # a group without limits counts nothing


async def test_a_refused_request_is_not_counted(redis: Redis, redis_prefix: str) -> None:
    limiter = _limiter(redis, redis_prefix)
    for _ in range(3):
        await limiter.hit("api", "k")
    for _ in range(5):
        with pytest.raises(RateLimitExceededError):
            await limiter.hit("api", "k")
    counters = [key async for key in redis.scan_iter(match=f"{redis_prefix}rl:api:*")]
    assert len(counters) == 1
    assert await redis.get(counters[0]) == b"3"


async def test_stacked_limits_each_apply(redis: Redis, redis_prefix: str) -> None:
    limiter = _limiter(redis, redis_prefix)
    await limiter.hit("stacked", "k")
    await limiter.hit("stacked", "k")
    with pytest.raises(RateLimitExceededError):
        await limiter.hit("stacked", "k")  # the per-second limit


async def test_a_revoked_session_is_refused_before_anything_is_counted(
    redis: Redis, redis_prefix: str
) -> None:
    limiter = _limiter(redis, redis_prefix)
    revoked = f"{redis_prefix}revoked-session:s1"
    await redis.set(revoked, b"1")
    admission = await limiter.admit([("api", "k")], revoked_key=revoked)
    assert admission.revoked
    assert not admission.admitted
    fine = await limiter.admit([("api", "k")], revoked_key=f"{redis_prefix}revoked-session:s2")
    assert fine.admitted
    for _ in range(2):  # the revoked attempt did not use the budget of 3
        await limiter.hit("api", "k")


async def test_the_first_refusal_of_a_request_names_its_group(
    redis: Redis, redis_prefix: str
) -> None:
    limiter = _limiter(redis, redis_prefix)
    for _ in range(3):
        await limiter.hit("api", "1.2.3.4")
    admission = await limiter.admit([("identity", "user:1"), ("api", "1.2.3.4")])
    assert admission.limited_group == "api"
    assert admission.retry_after_s >= 1


async def test_switched_off_limits_count_nothing_but_revocation_still_holds(
    redis: Redis, redis_prefix: str
) -> None:
    limiter = _limiter(redis, redis_prefix, enabled=False)
    for _ in range(10):
        await limiter.hit("api", "k")
    revoked = f"{redis_prefix}revoked-session:s"
    await redis.set(revoked, b"1")
    assert (await limiter.admit([("api", "k")], revoked_key=revoked)).revoked


async def test_concurrent_requests_share_one_round_trip_and_exactly_the_budget_is_admitted(
    redis: Redis, redis_prefix: str
) -> None:
    limiter = _limiter(redis, redis_prefix)
    admissions = await asyncio.gather(*(limiter.admit([("api", "crowd")]) for _ in range(12)))
    assert [a.admitted for a in admissions] == [True] * 3 + [False] * 9
    assert limiter.round_trips == 1
