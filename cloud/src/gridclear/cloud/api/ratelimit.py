"""Rate limits and session revocation checks in Redis, in one round trip per batch.

Limits are per route group and key (client address, user, key, wallet), written
per group in the ``limits`` library's notation (``"30/minute"``;
``"5/second;100/minute"`` stacks several) and parsed by it. Each is a sliding
window counter, the algorithm of ``limits``' ``SlidingWindowCounterRateLimiter``:
the current fixed window's count plus the previous window's, weighted by how
much of it still overlaps the sliding window. Counters live in Redis, so every
API instance shares one budget.

Why not ``limits``' own Redis storage: it costs one round trip per limit, and an
authenticated request needs three checks (its address, its identity, its
session's revocation). Here every check of every request queued at the same
moment goes to Redis as one Lua script (see :mod:`gridclear.cloud.batching`):
under load, one round trip serves dozens of requests. Within a request the
checks run in order and stop at the first refusal, so a revoked session or an
exhausted limit counts nothing further.

The script derives its counter keys from Redis' own clock (``TIME``), so API
instances with skewed clocks still agree on windows. It names keys it was not
passed, which a single Redis (what gridclear runs) allows and a Redis Cluster
would not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from limits import parse_many
from redis.asyncio import Redis

from gridclear.cloud.batching import Coalescer
from gridclear.cloud.errors import GridclearCloudError

__all__ = ["Admission", "RateLimitExceededError", "RateLimiter"]


class RateLimitExceededError(GridclearCloudError):
    """A limit is exhausted; retry after ``retry_after_s`` seconds."""

    code = "rate_limited"

    def __init__(self, group: str, retry_after_s: int) -> None:
        super().__init__(f"rate limit of {group!r} exceeded")
        self.group = group
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class _Limit:
    amount: int
    window_s: int


@dataclass(frozen=True)
class Admission:
    """What Redis said of one request's checks: admitted, revoked, or limited."""

    revoked: bool = False
    limited_group: str | None = None
    retry_after_s: int = 0

    @property
    def admitted(self) -> bool:
        return not self.revoked and self.limited_group is None


# ARGV: the number of requests, then per request its number of checks, then per
# check: kind ("r": refuse if the key exists; "l": a sliding-window limit), key,
# amount, window seconds. Returns per request: status (0 admitted, 1 revoked,
# 2 limited), the 1-based index of the refusing check, and the retry-after seconds.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
local i = 2
for _ = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[i])
  i = i + 1
  local status, at, retry = 0, 0, 0
  for c = 1, n do
    local kind, key = ARGV[i], ARGV[i + 1]
    local amount, window = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
    i = i + 4
    if status == 0 then
      if kind == 'r' then
        if redis.call('EXISTS', key) == 1 then
          status, at = 1, c
        end
      else
        local index = math.floor(now / window)
        local current_key = key .. ':' .. index
        local current = tonumber(redis.call('GET', current_key) or '0')
        local previous = tonumber(redis.call('GET', key .. ':' .. (index - 1)) or '0')
        local elapsed = now - index * window
        local left = window - elapsed
        if previous * left / window + current + 1 > amount then
          status, at = 2, c
          local wait
          if current + 1 > amount then
            -- past this window, and until this window's weight has decayed enough
            wait = left + window * (1 - (amount - 1) / current)
          else
            wait = left - (amount - 1 - current) * window / previous
          end
          retry = math.max(1, math.ceil(wait))
        else
          redis.call('INCR', current_key)
          redis.call('EXPIRE', current_key, window * 2)
        end
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = at
  out[#out + 1] = retry
end
return out
"""

_Check = tuple[str, str, int, int]
"""kind, key, amount, window seconds."""


class RateLimiter:
    """Counts hits per ``(group, key)`` and checks revoked sessions, batched per moment."""

    def __init__(
        self, *, redis: Redis, prefix: str, limits: dict[str, str], enabled: bool = True
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}rl:"
        self._limits: dict[str, list[_Limit]] = {
            group: [_Limit(item.amount, item.get_expiry()) for item in parse_many(spec)]
            for group, spec in limits.items()
        }
        self.enabled = enabled
        self._script = redis.register_script(_SCRIPT)
        self._batches: Coalescer[list[_Check], tuple[int, int, int]] = Coalescer(
            self._run, max_batch=512
        )

    @property
    def closed(self) -> bool:
        return self._batches.closed and self._batches.idle

    async def aclose(self) -> None:
        """Answer the checks queued, then refuse new ones (the Redis pool is its owner's)."""
        await self._batches.aclose()

    @property
    def round_trips(self) -> int:
        """Scripts run so far: each served every request queued at that moment."""
        return self._batches.batches

    async def _run(self, requests: list[list[_Check]]) -> Sequence[tuple[int, int, int]]:
        argv: list[str | int] = [len(requests)]
        for checks in requests:
            argv.append(len(checks))
            for check in checks:
                argv.extend(check)
        flat = await self._script(args=argv)
        return [(int(flat[i]), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def admit(
        self, hits: Sequence[tuple[str, str]] = (), *, revoked_key: str | None = None
    ) -> Admission:
        """Check ``revoked_key`` (refused if it exists), then count one hit per ``(group, key)``.

        A group with no configured limit, or limits switched off, counts nothing.
        """
        checks: list[_Check] = []
        groups: list[str] = []
        if revoked_key is not None:
            checks.append(("r", revoked_key, 0, 0))
            groups.append("")
        if self.enabled:
            for group, key in hits:
                for limit in self._limits.get(group, ()):
                    checks.append(
                        ("l", f"{self._prefix}{group}:{limit.amount}/{limit.window_s}:{key}",
                         limit.amount, limit.window_s)
                    )  # fmt: skip
                    groups.append(group)
        if not checks:
            return Admission()
        status, at, retry = await self._batches.submit(checks)
        if status == 1:
            return Admission(revoked=True)
        if status == 2:
            return Admission(limited_group=groups[at - 1], retry_after_s=retry)
        return Admission()

    async def hit(self, group: str, key: str) -> None:
        """Count one request of ``key`` in ``group``; raises past the limit."""
        admission = await self.admit([(group, key)])
        if admission.limited_group is not None:
            raise RateLimitExceededError(admission.limited_group, admission.retry_after_s)
