"""What the API places orders with: the batching ``OrderPlacer`` and the configuration cache.

``OrderPlacer``: the API's order placements, batched across concurrent requests.

Each request still gets exactly what :func:`~gridclear.cloud.market.store.place_order`
would give it (its order, an idempotent replay, or its refusal); the requests
that arrive together share one statement and one pool connection
(:func:`~gridclear.cloud.market.store.place_orders`). Under load that turns the
database round trip, and the driver's per-statement cost, from one per order
into one per batch.

``ConfigCache``: the market's configuration as one API process uses it, read
again once it is a second old (:data:`CONFIG_TTL_S`) or forgotten after a change.

The API's lifespan builds both and closes the placer on shutdown.
"""

from __future__ import annotations

import time

from gridclear.cloud.batching import Coalescer
from gridclear.cloud.market.config import MarketConfig, load_config
from gridclear.cloud.market.store import OrderRecord, OrderRequest, place_orders
from gridclear.cloud.storage.pool import Pool

__all__ = ["CONFIG_TTL_S", "ConfigCache", "OrderPlacer"]

CONFIG_TTL_S = 1.0
"""How long one API instance may use the configuration it read: a change applies
to new orders within a second, and placing an order costs no extra query."""


class ConfigCache:
    """The market's configuration read through ``pool``, kept :data:`CONFIG_TTL_S`."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._cached: tuple[float, MarketConfig] | None = None

    async def get(self) -> MarketConfig:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CONFIG_TTL_S:
            return self._cached[1]
        async with self._pool.connection() as conn:
            config, _ = await load_config(conn)
        self._cached = (now, config)
        return config

    def forget(self) -> None:
        """Read the configuration again on next use (it was just changed here)."""
        self._cached = None


class OrderPlacer:
    """Places orders through ``pool``, batching the requests that arrive together."""

    def __init__(self, pool: Pool, *, max_batch: int = 256, max_concurrent: int = 1) -> None:
        self._pool = pool
        self._batches: Coalescer[OrderRequest, tuple[OrderRecord, bool]] = Coalescer(
            self._place, max_batch=max_batch, max_concurrent=max_concurrent
        )

    async def _place(
        self, requests: list[OrderRequest]
    ) -> list[tuple[OrderRecord, bool] | Exception]:
        async with self._pool.connection() as conn:
            return await place_orders(conn, requests)

    @property
    def statements(self) -> int:
        """Batches placed so far (each one statement when nothing is refused)."""
        return self._batches.batches

    async def place(self, request: OrderRequest) -> tuple[OrderRecord, bool]:
        """The order and whether it is new (False: an idempotent retry), or the refusal.

        Raises what :func:`~gridclear.cloud.market.store.place_order` raises.
        """
        return await self._batches.submit(request)

    @property
    def closed(self) -> bool:
        return self._batches.closed and self._batches.idle

    async def aclose(self) -> None:
        """Answer the placements queued, then refuse new ones."""
        await self._batches.aclose()
