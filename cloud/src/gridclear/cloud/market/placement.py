"""``OrderPlacer``: the API's order placements, batched across concurrent requests.

Each request still gets exactly what :func:`~gridclear.cloud.market.store.place_order`
would give it (its order, an idempotent replay, or its refusal); the requests
that arrive together share one statement and one pool connection
(:func:`~gridclear.cloud.market.store.place_orders`). Under load that turns the
database round trip, and the driver's per-statement cost, from one per order
into one per batch.
"""

from __future__ import annotations

from gridclear.cloud.batching import Coalescer
from gridclear.cloud.market.store import OrderRecord, OrderRequest, place_orders
from gridclear.cloud.storage.pool import Pool

__all__ = ["OrderPlacer"]


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

    async def aclose(self) -> None:
        await self._batches.aclose()
