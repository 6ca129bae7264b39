"""Bids and supplies over the real app, database and Redis: placing, amending and
cancelling until gate closure, optimistic concurrency, idempotent retries, the
meter and bound checks, and the events an app receives."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
from cloud.tests.api_support import Api, error_code
from cloud.tests.market_support import RecordedEvents, make_slot, set_state, trader


def _bid(slot: int, meter: int, quantity: int = 1000, price: int = 200) -> dict[str, int]:
    return {"timeslotId": slot, "meterId": meter, "quantityWh": quantity, "price": price}


async def test_place_amend_cancel_a_bid_and_see_it_in_my_bids(api: Api) -> None:
    events = RecordedEvents()
    api.app.state.events = events
    buyer = await trader(api, "import")
    slot = make_slot(api.database_url)

    placed = await api.client.post(
        "/api/bids", json=_bid(slot, buyer.meter_id), headers=buyer.headers
    )
    assert placed.status_code == 201, placed.text
    bid = placed.json()["data"]
    assert (bid["side"], bid["status"], bid["version"]) == ("buy", "active", 1)
    assert (bid["quantityWh"], bid["price"], bid["userId"]) == (1000, 200, buyer.user_id)

    amended = await api.client.put(
        f"/api/bids/{bid['id']}", json={"version": 1, "price": 250}, headers=buyer.headers
    )
    assert amended.status_code == 200, amended.text
    assert (amended.json()["data"]["price"], amended.json()["data"]["version"]) == (250, 2)

    mine = await api.client.get("/api/my/bids", headers=buyer.headers)
    assert [b["id"] for b in mine.json()["data"]] == [bid["id"]]
    one = await api.client.get(f"/api/bids/{bid['id']}", headers=buyer.headers)
    assert one.json()["data"]["price"] == 250

    cancelled = await api.client.delete(f"/api/bids/{bid['id']}?version=2", headers=buyer.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["data"]["status"] == "cancelled"
    again = await api.client.put(
        f"/api/bids/{bid['id']}", json={"version": 3, "price": 1}, headers=buyer.headers
    )
    assert (again.status_code, error_code(again)) == (409, "CONFLICT")

    # Each change: the public copy to the slot's room, then the whole order to its owner.
    sent = [(d["action"], d["userId"], r, u) for d, r, u in events.named("bid_update")]
    assert sent == [
        copy
        for a in ("created", "updated", "cancelled")
        for copy in ((a, None, f"timeslot:{slot}", None), (a, buyer.user_id, None, buyer.user_id))
    ]


async def test_orders_are_refused_once_the_slot_has_closed(api: Api) -> None:
    seller = await trader(api, "export")
    slot = make_slot(api.database_url)
    placed = await api.client.post(
        "/api/supplies", json=_bid(slot, seller.meter_id), headers=seller.headers
    )
    assert placed.status_code == 201, placed.text
    supply = placed.json()["data"]
    assert supply["side"] == "sell"

    set_state(api.database_url, slot, "closed")  # gate closure
    late = await api.client.post(
        "/api/supplies", json=_bid(slot, seller.meter_id), headers=seller.headers
    )
    assert (late.status_code, error_code(late)) == (409, "TIMESLOT_EXPIRED")
    amend = await api.client.put(
        f"/api/supplies/{supply['id']}", json={"version": 1, "price": 1}, headers=seller.headers
    )
    assert (amend.status_code, error_code(amend)) == (409, "TIMESLOT_EXPIRED")
    cancel = await api.client.delete(f"/api/supplies/{supply['id']}", headers=seller.headers)
    assert (cancel.status_code, error_code(cancel)) == (409, "TIMESLOT_EXPIRED")
    unchanged = await api.client.get(f"/api/supplies/{supply['id']}", headers=seller.headers)
    assert unchanged.json()["data"] == supply

    scheduled = make_slot(api.database_url, "scheduled")
    early = await api.client.post(
        "/api/supplies", json=_bid(scheduled, seller.meter_id), headers=seller.headers
    )
    assert (early.status_code, error_code(early)) == (409, "TIMESLOT_EXPIRED")


async def test_two_concurrent_amendments_one_wins_one_conflicts(api: Api) -> None:
    buyer = await trader(api, "both")
    slot = make_slot(api.database_url)
    placed = await api.client.post(
        "/api/bids", json=_bid(slot, buyer.meter_id), headers=buyer.headers
    )
    bid_id = placed.json()["data"]["id"]

    first, second = await asyncio.gather(
        api.client.put(
            f"/api/bids/{bid_id}", json={"version": 1, "price": 300}, headers=buyer.headers
        ),
        api.client.put(
            f"/api/bids/{bid_id}", json={"version": 1, "price": 400}, headers=buyer.headers
        ),
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 409], (first.text, second.text)
    winner, loser = (first, second) if first.status_code == 200 else (second, first)
    assert error_code(loser) == "CONFLICT"
    assert loser.json()["error"]["details"]["currentVersion"] == 2
    now = await api.client.get(f"/api/bids/{bid_id}", headers=buyer.headers)
    assert now.json()["data"]["price"] == winner.json()["data"]["price"]
    assert now.json()["data"]["version"] == 2


async def test_a_retried_post_with_the_same_idempotency_key_places_one_order(api: Api) -> None:
    buyer = await trader(api, "import")
    slot = make_slot(api.database_url)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = _bid(slot, buyer.meter_id, quantity=750)

    first = await api.client.post("/api/bids", json=body, headers={**buyer.headers, **key})
    retry = await api.client.post("/api/bids", json=body, headers={**buyer.headers, **key})
    assert first.status_code == retry.status_code == 201
    assert retry.json()["data"] == first.json()["data"]
    assert retry.headers["Idempotent-Replayed"] == "true"

    racing = await asyncio.gather(
        *(
            api.client.post(
                "/api/bids", json=body, headers={**buyer.headers, "Idempotency-Key": "race"}
            )
            for _ in range(5)
        )
    )
    assert {r.status_code for r in racing} == {201}
    assert len({r.json()["data"]["id"] for r in racing}) == 1

    other = await api.client.post(
        "/api/bids", json={**body, "price": 999}, headers={**buyer.headers, **key}
    )
    assert (other.status_code, error_code(other)) == (422, "IDEMPOTENCY_KEY_REUSED")
    count = api.count("SELECT count(*) FROM orders WHERE user_id = %s", buyer.user_id)
    assert count == 2


async def test_meter_roles_ownership_and_bounds_are_checked(api: Api) -> None:
    consumer = await trader(api, "import")
    producer = await trader(api, "export")
    slot = make_slot(api.database_url, price_cap=500)

    selling_from_import = await api.client.post(
        "/api/supplies", json=_bid(slot, consumer.meter_id), headers=consumer.headers
    )
    assert (selling_from_import.status_code, error_code(selling_from_import)) == (
        403,
        "FORBIDDEN",
    )
    buying_with_export = await api.client.post(
        "/api/bids", json=_bid(slot, producer.meter_id), headers=producer.headers
    )
    assert error_code(buying_with_export) == "FORBIDDEN"
    someone_elses_meter = await api.client.post(
        "/api/bids", json=_bid(slot, consumer.meter_id), headers=producer.headers
    )
    assert error_code(someone_elses_meter) == "FORBIDDEN"

    above_cap = await api.client.post(
        "/api/bids", json=_bid(slot, consumer.meter_id, price=501), headers=consumer.headers
    )
    assert (above_cap.status_code, error_code(above_cap)) == (422, "VALIDATION_ERROR")
    too_big = await api.client.post(
        "/api/bids",
        json=_bid(slot, consumer.meter_id, quantity=2_000_000),
        headers=consumer.headers,
    )
    assert error_code(too_big) == "VALIDATION_ERROR"
    fractional = await api.client.post(
        "/api/bids",
        json={**_bid(slot, consumer.meter_id), "quantityWh": 10.5},
        headers=consumer.headers,
    )
    assert error_code(fractional) == "VALIDATION_ERROR"
    no_slot = await api.client.post(
        "/api/bids", json=_bid(2**40, consumer.meter_id), headers=consumer.headers
    )
    assert (no_slot.status_code, error_code(no_slot)) == (404, "NOT_FOUND")
    assert api.count("SELECT count(*) FROM orders WHERE timeslot_id = %s", slot) == 0

    exposed = (await api.client.get("/metrics")).text
    counted = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in exposed.splitlines()
        if line.startswith("gridclear_market_order_refusals_total{")
    }
    assert counted == {
        'gridclear_market_order_refusals_total{reason="meter_not_allowed",side="sell"}': 1.0,
        'gridclear_market_order_refusals_total{reason="meter_not_allowed",side="buy"}': 2.0,
        'gridclear_market_order_refusals_total{reason="out_of_bounds",side="buy"}': 2.0,
        'gridclear_market_order_refusals_total{reason="slot_not_found",side="buy"}': 1.0,
    }


async def test_other_peoples_orders_are_hidden_or_anonymous(api: Api) -> None:
    alice = await trader(api, "import")
    bob = await trader(api, "import")
    slot = make_slot(api.database_url)
    placed = await api.client.post(
        "/api/bids", json=_bid(slot, alice.meter_id), headers=alice.headers
    )
    bid_id = placed.json()["data"]["id"]

    direct = await api.client.get(f"/api/bids/{bid_id}", headers=bob.headers)
    assert (direct.status_code, error_code(direct)) == (404, "NOT_FOUND")
    amend = await api.client.put(
        f"/api/bids/{bid_id}", json={"version": 1, "price": 1}, headers=bob.headers
    )
    assert error_code(amend) == "NOT_FOUND"
    listing = await api.client.get(f"/api/timeslots/{slot}/bids", headers=bob.headers)
    (seen,) = listing.json()["data"]
    assert (seen["id"], seen["userId"], seen["meterId"]) == (bid_id, None, None)
    # The slot's listing is public data: the owner sees the same projection as
    # anyone (and anonymous callers); her own orders, whole, are under /api/my.
    own = await api.client.get(f"/api/timeslots/{slot}/bids", headers=alice.headers)
    assert own.json()["data"][0]["userId"] is None
    mine = await api.client.get("/api/my/bids", headers=alice.headers)
    assert mine.json()["data"][0]["userId"] == alice.user_id
    assert (await api.client.get("/api/bids", headers=bob.headers)).json()["data"] == []


async def test_orders_placed_at_the_same_moment_share_statements_yet_each_gets_its_own_answer(
    api: Api,
) -> None:
    buyer = await trader(api, "import")
    seller = await trader(api, "export")
    slot = make_slot(api.database_url)
    closed = make_slot(api.database_url, "closed")
    same = {**buyer.headers, "Idempotency-Key": uuid.uuid4().hex}
    requests = (
        [("/api/bids", _bid(slot, buyer.meter_id, 100 + i), buyer.headers) for i in range(12)]
        + [("/api/bids", _bid(slot, buyer.meter_id, 100), buyer.headers)] * 3  # identical
        + [("/api/supplies", _bid(slot, seller.meter_id, 50 + i), seller.headers) for i in range(5)]
        + [("/api/bids", _bid(slot, seller.meter_id), buyer.headers)] * 2  # not the buyer's meter
        + [("/api/bids", _bid(closed, buyer.meter_id), buyer.headers)] * 2  # gate closed
        + [("/api/bids", _bid(slot, buyer.meter_id, 777), same)] * 4  # one order, retried
    )  # fmt: skip
    answers = await asyncio.gather(
        *(api.client.post(path, json=body, headers=headers) for path, body, headers in requests)
    )

    statuses = [a.status_code for a in answers]
    assert statuses == [201] * 20 + [403] * 2 + [409] * 2 + [201] * 4
    assert {error_code(a) for a in answers[20:24]} == {"FORBIDDEN", "TIMESLOT_EXPIRED"}
    placed = [a.json()["data"] for a in answers[:20]]
    for (_, body, _), order in zip(requests[:20], placed, strict=True):
        assert (order["timeslotId"], order["meterId"]) == (body["timeslotId"], body["meterId"])
        assert (order["quantityWh"], order["price"]) == (body["quantityWh"], body["price"])
    assert len({o["id"] for o in placed}) == 20  # the identical three are three orders
    retried = [a.json()["data"]["id"] for a in answers[24:]]
    assert len(set(retried)) == 1
    assert sorted(a.headers.get("idempotent-replayed", "") for a in answers[24:]) == [
        "", "true", "true", "true"
    ]  # fmt: skip
    with psycopg.connect(api.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM orders WHERE timeslot_id IN (%s, %s)", (slot, closed)
        ).fetchone()
    assert row == (21,)
    # Far fewer statements than requests: that is the point of batching.
    assert api.app.state.order_placer.statements < len(requests) // 2


async def test_who_may_place_an_order(api: Api) -> None:
    # Placing reads no account row up front (the order's statement checks it), so
    # every way in is checked here: a disabled account, a revoked session, API keys.
    buyer = await trader(api, "import")
    slot = make_slot(api.database_url)
    body = _bid(slot, buyer.meter_id)

    keys = {}
    for scopes in (["trading"], ["read"]):
        created = await api.client.post(
            "/api/keys", json={"name": "bot", "scopes": scopes}, headers=buyer.headers
        )
        assert created.status_code == 201, created.text
        keys[scopes[0]] = created.json()["data"]["key"]
    by_key = await api.client.post("/api/bids", json=body, headers={"X-API-Key": keys["trading"]})
    assert by_key.status_code == 201, by_key.text
    assert by_key.json()["data"]["userId"] == buyer.user_id
    read_only = await api.client.post("/api/bids", json=body, headers={"X-API-Key": keys["read"]})
    assert (read_only.status_code, error_code(read_only)) == (403, "FORBIDDEN")

    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET disabled = true WHERE id = %s", (buyer.user_id,))
    for headers in (buyer.headers, {**buyer.headers, "Idempotency-Key": "k1"}):
        refused = await api.client.post("/api/bids", json=body, headers=headers)
        assert (refused.status_code, error_code(refused)) == (401, "INVALID_TOKEN"), refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET disabled = false WHERE id = %s", (buyer.user_id,))
        stored = conn.execute(
            "SELECT count(*) FROM orders WHERE user_id = %s", (buyer.user_id,)
        ).fetchone()
    assert stored == (1,)  # only the API key's

    await api.client.post("/api/auth/logout", headers=buyer.headers)
    revoked = await api.client.post("/api/bids", json=body, headers=buyer.headers)
    assert (revoked.status_code, error_code(revoked)) == (401, "INVALID_TOKEN")
    nobody = await api.client.post("/api/bids", json=body)
    assert (nobody.status_code, error_code(nobody)) == (401, "AUTHENTICATION_REQUIRED")
