"""What a running API holds: settings, pool, Redis, token keys, stores, limiter, metrics.

Built by the app's lifespan and reached by dependencies through
``request.app.state.services``; nothing global, and nothing made on first use.
What holds a task or a connection (the pools, the batching user loader, rate
limiter and order placer) is closed by the lifespan on shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from redis.asyncio import Redis

from gridclear.cloud.api.metrics import ApiMetrics
from gridclear.cloud.api.ratelimit import RateLimiter
from gridclear.cloud.identity.accounts import UserLoader
from gridclear.cloud.identity.mail import MailOutbox
from gridclear.cloud.identity.nonces import NonceStore
from gridclear.cloud.identity.passwords import Passwords
from gridclear.cloud.identity.sessions import SessionRevocations
from gridclear.cloud.identity.tokens import AccessTokens
from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.market.metrics import MarketMetrics
from gridclear.cloud.market.placement import ConfigCache, OrderPlacer
from gridclear.cloud.settings import Settings
from gridclear.cloud.storage.pool import Pool

__all__ = ["Clock", "ReadinessCheck", "Services"]

Clock = Callable[[], datetime]
ReadinessCheck = Callable[[], Awaitable[bool]]
"""A named dependency check for readiness: True when the dependency answers."""


@dataclass
class Services:
    settings: Settings
    clock: Clock
    pool: Pool
    redis: Redis
    tokens: AccessTokens
    nonces: NonceStore
    revocations: SessionRevocations
    passwords: Passwords
    limiter: RateLimiter
    users: UserLoader
    metrics: ApiMetrics
    market_metrics: MarketMetrics
    market_config: ConfigCache
    orders: OrderPlacer
    """Places orders, batching the requests that arrive together."""
    mail: MailOutbox
    """Sends account mail (verification and reset links) in the background."""
    ledger: LedgerClient | None = None
    """The ledger settlement uses; None while GRIDCLEAR_SOLANA_RPC_URL is unset."""
    started_monotonic: float = field(default_factory=time.monotonic)
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
