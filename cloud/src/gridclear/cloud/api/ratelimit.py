"""Rate limits in Redis, per route group and key (client address, user, key, wallet).

Built on the ``limits`` library's async Redis storage (redis-py flavour) with
its sliding-window-counter strategy: two counters per key and window, atomic
Lua on the server, so every API instance shares one budget. The storage is
handed our own connection pool, so its lifecycle is the app's.

Limits are strings in ``limits``' notation per group, from the settings
(``"30/minute"``; ``"5/second;100/minute"`` stacks several).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import ConnectionPool

__all__ = ["RateLimitExceededError", "RateLimiter"]


class RateLimitExceededError(Exception):
    """A limit is exhausted; retry after ``retry_after_s`` seconds."""

    def __init__(self, group: str, retry_after_s: int) -> None:
        super().__init__(f"rate limit of {group!r} exceeded")
        self.group = group
        self.retry_after_s = retry_after_s


class RateLimiter:
    """Counts hits per ``(group, key)``; raises :class:`RateLimitExceededError` past the limit."""

    def __init__(
        self, *, pool: ConnectionPool, prefix: str, limits: dict[str, str], enabled: bool = True
    ) -> None:
        self._storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=f"{prefix}rl",
            connection_pool=pool,  # type: ignore[arg-type]  # passed on to redis-py as-is
        )
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)
        self._limits: dict[str, list[RateLimitItem]] = {
            group: parse_many(spec) for group, spec in limits.items()
        }
        self.enabled = enabled

    async def hit(self, group: str, key: str) -> None:
        """Count one request of ``key`` in ``group`` (a no-op for an unconfigured group)."""
        if not self.enabled:
            return
        for item in self._limits.get(group, ()):
            if not await self._strategy.hit(item, group, key):
                stats = await self._strategy.get_window_stats(item, group, key)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimitExceededError(group, retry)
