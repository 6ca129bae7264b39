"""What an API process opens is built in its lifespan and closed on shutdown: the
order placer, the user loader and the rate limiter (each batching on a task of
its own) exist before the first request, nothing is added on first use, and after
shutdown each has answered what was queued and refuses new work. Through the
real app, PostgreSQL and Redis."""

from __future__ import annotations

import pytest
from cloud.tests.api_support import running_api, test_settings
from cloud.tests.market_support import make_slot, trader

from gridclear.cloud.api.services import Services
from gridclear.cloud.market.clearing import Side
from gridclear.cloud.market.config import MarketConfig
from gridclear.cloud.market.store import OrderRequest


async def test_the_lifespan_builds_every_batching_service_and_closes_each_on_shutdown(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    async with running_api(test_settings(migrated_db, redis_url, redis_prefix)) as api:
        services: Services = api.app.state.services
        batching = {
            "orders": services.orders,
            "users": services.users,
            "limiter": services.limiter,
        }
        assert not any(part.closed for part in batching.values())
        built = set(api.app.state._state)

        # Requests that use each of them add nothing to the app.
        buyer = await trader(api, "import")
        slot = make_slot(api.database_url)
        placed = await api.client.post(
            "/api/bids",
            json={"timeslotId": slot, "meterId": buyer.meter_id, "quantityWh": 1000, "price": 200},
            headers=buyer.headers,
        )
        assert placed.status_code == 201, placed.text
        assert set(api.app.state._state) == built
        assert api.app.state.services.orders is batching["orders"]
        assert services.orders.statements >= 1

    assert all(part.closed for part in batching.values())
    with pytest.raises(RuntimeError, match="closed"):
        await services.orders.place(
            OrderRequest(
                config=MarketConfig(),
                user_id=buyer.user_id,
                side=Side.BUY,
                timeslot_id=slot,
                meter_id=buyer.meter_id,
                quantity_wh=1000,
                price=200,
            )
        )
    with pytest.raises(RuntimeError, match="closed"):
        await services.users.get(buyer.user_id)
    with pytest.raises(RuntimeError, match="closed"):
        await services.limiter.hit("api", "127.0.0.1")
