"""Public market data: read without signing in, limited per client address, no owners.

Timeslots, a slot's book, result, bids and supplies, and the price history answer
anyone; anonymous reads count per client address in the ``public`` group. A
slot's orders show price, quantity, status and times, never who placed them:
not to strangers, not to operators, not to the owner (who has ``/api/my/...``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from cloud.tests.api_support import Api, error_code, running_api, test_settings
from cloud.tests.market_support import make_slot, set_state, trader
from psycopg.rows import dict_row

from gridclear.cloud.market.service import clear_slot
from gridclear.cloud.settings import Settings

PUBLIC_LIMIT = 6


@pytest.fixture
def settings(migrated_db: str, redis_url: str, redis_prefix: str) -> Settings:
    return test_settings(
        migrated_db, redis_url, redis_prefix, rate_limits={"public": f"{PUBLIC_LIMIT}/minute"}
    )


@pytest.fixture
async def stranger(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings, client_ip="192.0.2.10") as api:
        yield api


async def test_market_data_is_public_and_owners_are_hidden_from_everyone(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    roomy = test_settings(migrated_db, redis_url, redis_prefix)  # the default public limit
    async with running_api(roomy, client_ip="192.0.2.20") as api:
        buyer = await trader(api, "import")
        seller = await trader(api, "export")
        slot = make_slot(api.database_url)
        for path, who, price in (("/api/bids", buyer, 300), ("/api/supplies", seller, 100)):
            placed = await api.client.post(
                path, json={"timeslotId": slot, "quantityWh": 1000, "price": price},
                headers=who.headers,
            )  # fmt: skip
            assert placed.status_code == 201, placed.text
        set_state(api.database_url, slot, "closed")
        async with await psycopg.AsyncConnection.connect(
            api.database_url, autocommit=True, row_factory=dict_row
        ) as conn:
            assert await clear_slot(conn, slot) is not None

        for path in (
            "/api/timeslots",
            f"/api/timeslots/{slot}",
            f"/api/timeslots/{slot}/book",
            f"/api/timeslots/{slot}/result",
            "/api/market/prices",
        ):
            answer = await api.client.get(path)
            assert answer.status_code == 200, (path, answer.text)
        active = await api.client.get("/api/timeslots/active")
        assert active.status_code == 200
        history = (await api.client.get("/api/market/prices")).json()["data"]
        assert [(p["timeslotId"], p["price"], p["volumeWh"]) for p in history] == [
            (slot, 200, 1000)
        ]
        assert history[0]["priceTokens"] == 0.0002

        listings = {}
        for caller, headers in (
            ("anonymous", {}),
            ("owner", buyer.headers),
            ("other", seller.headers),
        ):
            for side in ("bids", "supplies"):
                answer = await api.client.get(f"/api/timeslots/{slot}/{side}", headers=headers)
                assert answer.status_code == 200
                (order,) = answer.json()["data"]
                assert (order["userId"], order["meterId"]) == (None, None)
                assert order["quantityWh"] == 1000
                assert order["status"] == "filled"
                assert {"price", "quantity", "priceTokens", "createdAt", "submittedAt"} <= set(
                    order
                )
                listings[caller, side] = order
        # Everyone sees the one public projection.
        assert listings["anonymous", "bids"] == listings["owner", "bids"]
        assert listings["anonymous", "supplies"] == listings["other", "supplies"]
        result = (await api.client.get(f"/api/timeslots/{slot}/result")).json()["data"]
        assert "userId" not in str(result)
        assert all(set(t) >= {"buyOrderId", "sellOrderId"} for t in result["trades"])

        # What is about a person still needs the token.
        for path in ("/api/my/bids", "/api/my/supplies", "/api/my/trades", "/api/bids"):
            refused = await api.client.get(path)
            assert error_code(refused) == "AUTHENTICATION_REQUIRED", path
        # A token that is sent is checked, even where none is needed.
        broken = await api.client.get(
            "/api/timeslots", headers={"Authorization": "Bearer not-a-token"}
        )
        assert (broken.status_code, error_code(broken)) == (401, "INVALID_TOKEN")


async def test_anonymous_reads_are_limited_per_client_address(
    settings: Settings, stranger: Api
) -> None:
    slot = make_slot(stranger.database_url)
    paths = ["/api/timeslots", f"/api/timeslots/{slot}", f"/api/timeslots/{slot}/bids"]
    for i in range(PUBLIC_LIMIT):
        answer = await stranger.client.get(paths[i % len(paths)])
        assert answer.status_code == 200, answer.text
    limited = await stranger.client.get(f"/api/timeslots/{slot}/supplies")
    assert (limited.status_code, error_code(limited)) == (429, "RATE_LIMIT_EXCEEDED")
    assert limited.json()["error"]["details"]["group"] == "public"
    assert int(limited.headers["Retry-After"]) >= 1
    # Another address has its own budget; a signed-in caller counts as itself.
    async with running_api(settings, client_ip="192.0.2.99") as neighbour:
        assert (await neighbour.client.get("/api/timeslots")).status_code == 200
    reader = await trader(stranger, "import")
    for _ in range(PUBLIC_LIMIT + 1):
        signed_in = await stranger.client.get("/api/timeslots", headers=reader.headers)
        assert signed_in.status_code == 200
