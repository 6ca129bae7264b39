"""Timeslots, the book, results, trades and the market configuration over the real
app: what an app shows before and after a slot clears."""

from __future__ import annotations

import psycopg
from cloud.tests.api_support import Api, bearer, error_code
from cloud.tests.market_support import make_slot, set_state, trader
from psycopg.rows import dict_row

from gridclear.cloud.market.service import tick


async def _clear(url: str, slot_id: int) -> None:
    set_state(url, slot_id, "closed")
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        cur = await conn.execute("SELECT closes_at FROM timeslots WHERE id = %s", (slot_id,))
        row = await cur.fetchone()
        assert row is not None
        await tick(conn, row["closes_at"])


async def test_a_slot_shows_its_book_then_its_result_and_each_side_its_trades(api: Api) -> None:
    buyer = await trader(api, "import")
    seller = await trader(api, "export")
    slot = make_slot(api.database_url)
    for headers, path, meter, quantity, price in (
        (buyer.headers, "/api/bids", buyer.meter_id, 2000, 300),
        (buyer.headers, "/api/bids", buyer.meter_id, 1000, 150),
        (seller.headers, "/api/supplies", seller.meter_id, 1500, 100),
        (seller.headers, "/api/supplies", seller.meter_id, 1000, 400),
    ):
        response = await api.client.post(
            path,
            json={"timeslotId": slot, "meterId": meter, "quantityWh": quantity, "price": price},
            headers=headers,
        )
        assert response.status_code == 201, response.text

    active = await api.client.get("/api/timeslots/active", headers=buyer.headers)
    assert slot in [s["id"] for s in active.json()["data"]]
    book = (await api.client.get(f"/api/timeslots/{slot}/book", headers=buyer.headers)).json()
    assert [(b["price"], b["cumulativeWh"]) for b in book["data"]["bids"]] == [
        (300, 2000),
        (150, 3000),
    ]
    assert [(o["price"], o["cumulativeWh"]) for o in book["data"]["offers"]] == [
        (100, 1500),
        (400, 2500),
    ]
    early = await api.client.get(f"/api/timeslots/{slot}/result", headers=buyer.headers)
    assert (early.status_code, error_code(early)) == (409, "CONFLICT")

    await _clear(api.database_url, slot)

    one = (await api.client.get(f"/api/timeslots/{slot}", headers=seller.headers)).json()["data"]
    assert one["state"] == "cleared"
    # 2000 Wh bid at 300 against 1500 Wh at 100: the bid is rationed, price 300.
    assert (one["result"]["price"], one["result"]["volumeWh"]) == (300, 1500)
    result = (await api.client.get(f"/api/timeslots/{slot}/result", headers=buyer.headers)).json()
    data = result["data"]
    assert (data["price"], data["volumeWh"], data["totalAmount"]) == (300, 1500, 450)
    assert sorted((f["side"], f["filledWh"], f["status"]) for f in data["fills"]) == [
        ("buy", 0, "unfilled"),
        ("buy", 1500, "partially_filled"),
        ("sell", 0, "unfilled"),
        ("sell", 1500, "filled"),
    ]
    assert [(t["quantityWh"], t["amount"]) for t in data["trades"]] == [(1500, 450)]
    assert "buyerId" not in data["trades"][0]

    mine = (await api.client.get("/api/my/trades", headers=seller.headers)).json()["data"]
    assert [(t["role"], t["amount"]) for t in mine] == [("seller", 450)]
    bought = (await api.client.get("/api/my/trades", headers=buyer.headers)).json()["data"]
    assert [(t["role"], t["quantityWh"]) for t in bought] == [("buyer", 1500)]
    listed = await api.client.get(
        "/api/timeslots", params={"state": "cleared"}, headers=buyer.headers
    )
    assert slot in [s["id"] for s in listed.json()["data"]]


async def test_operators_change_the_market_configuration_participants_cannot(api: Api) -> None:
    participant = await trader(api, "import")
    operator = await api.register("market-operator@example.org")
    api.make_admin(operator["user"]["id"])
    admin = bearer(operator["accessToken"])

    seen = await api.client.get("/api/market/config", headers=participant.headers)
    assert seen.json()["data"]["slotLengthS"] == 900
    refused = await api.client.put(
        "/api/market/config", json={"priceCap": 5}, headers=participant.headers
    )
    assert (refused.status_code, error_code(refused)) == (403, "FORBIDDEN")
    bad = await api.client.put("/api/market/config", json={"slotLengthS": 700}, headers=admin)
    assert (bad.status_code, error_code(bad)) == (422, "VALIDATION_ERROR")
    assert bad.json()["error"]["details"] == {"field": "slot_length_s"}

    changed = await api.client.put(
        "/api/market/config", json={"quantityStepWh": 100, "priceCap": 500}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["data"]["quantityStepWh"], changed.json()["data"]["priceCap"]) == (
        100,
        500,
    )
    slot = make_slot(api.database_url)
    odd = await api.client.post(
        "/api/bids",
        json={"timeslotId": slot, "meterId": participant.meter_id, "quantityWh": 150, "price": 1},
        headers=participant.headers,
    )
    assert error_code(odd) == "VALIDATION_ERROR"
    assert "multiple of 100" in odd.json()["error"]["message"]
    await api.client.put(
        "/api/market/config", json={"quantityStepWh": 1, "priceCap": 1_000_000}, headers=admin
    )
