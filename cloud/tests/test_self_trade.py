"""Self-trade prevention: one side per account and slot, in the API, in the database and
in the engine, and ``market clear`` agreeing with the service on a slot's book."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import pytest
from cloud.tests.api_support import Api, error_code
from cloud.tests.market_support import make_slot, set_state, trader
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from gridclear.cloud.cli import main
from gridclear.cloud.market import store
from gridclear.cloud.market.book_json import book_to_json, parse_book, result_to_json
from gridclear.cloud.market.clearing import BookError, Order, OrderBook, Reason, Side, clear
from gridclear.cloud.market.config import MarketConfig
from gridclear.cloud.market.service import clear_slot


async def test_an_order_facing_the_same_accounts_other_side_is_refused(api: Api) -> None:
    prosumer = await trader(api, "both")
    slot = make_slot(api.database_url)
    other_slot = make_slot(api.database_url)
    bid = await api.client.post(
        "/api/bids",
        json={"timeslotId": slot, "quantityWh": 1000, "price": 300},
        headers=prosumer.headers,
    )
    assert bid.status_code == 201, bid.text
    supply = {"timeslotId": slot, "quantityWh": 1000, "price": 100}
    refused = await api.client.post("/api/supplies", json=supply, headers=prosumer.headers)
    assert (refused.status_code, error_code(refused)) == (409, "SELF_TRADE")
    assert refused.json()["error"]["details"] == {"reason": "self_trade"}
    # Another slot, and more on the same side, are fine.
    elsewhere = await api.client.post(
        "/api/supplies", json={**supply, "timeslotId": other_slot}, headers=prosumer.headers
    )
    assert elsewhere.status_code == 201, elsewhere.text
    second_bid = await api.client.post(
        "/api/bids",
        json={"timeslotId": slot, "quantityWh": 500, "price": 250},
        headers=prosumer.headers,
    )
    assert second_bid.status_code == 201
    # Once the bids are cancelled, the other side is free.
    for placed in (bid, second_bid):
        order = placed.json()["data"]
        cancelled = await api.client.delete(f"/api/bids/{order['id']}", headers=prosumer.headers)
        assert cancelled.status_code == 200
    accepted = await api.client.post("/api/supplies", json=supply, headers=prosumer.headers)
    assert accepted.status_code == 201, accepted.text
    metrics = (await api.client.get("/metrics")).text
    assert 'gridclear_market_order_refusals_total{reason="self_trade",side="sell"} 1.0' in metrics


async def test_two_sides_placed_at_once_leave_one(api: Api) -> None:
    prosumer = await trader(api, "both")
    slot = make_slot(api.database_url)
    answers = await asyncio.gather(
        *(
            api.client.post(
                f"/api/{'bids' if i % 2 else 'supplies'}",
                json={"timeslotId": slot, "quantityWh": 100, "price": 200},
                headers=prosumer.headers,
            )
            for i in range(20)
        )
    )
    placed = {a.json()["data"]["side"] for a in answers if a.status_code == 201}
    refused = [error_code(a) for a in answers if a.status_code != 201]
    assert len(placed) == 1
    assert refused
    assert set(refused) == {"SELF_TRADE"}
    assert (
        api.count(
            "SELECT count(DISTINCT side) FROM orders WHERE timeslot_id = %s AND status = 'active'",
            slot,
        )
        == 1
    )


async def test_concurrent_transactions_cannot_both_place_a_side(api: Api) -> None:
    """The race the statement alone cannot see: the other side placed in a transaction
    still open. The database holds the rule; the loser is placed again and refused."""
    prosumer = await trader(api, "both")
    slot = make_slot(api.database_url)
    config = MarketConfig()

    def request(side: Side) -> store.OrderRequest:
        return store.OrderRequest(
            config=config,
            user_id=prosumer.user_id,
            side=side,
            timeslot_id=slot,
            meter_id=prosumer.meter_id,
            quantity_wh=100,
            price=200,
        )

    async with (
        await psycopg.AsyncConnection.connect(
            api.database_url, autocommit=True, row_factory=dict_row
        ) as first,
        await psycopg.AsyncConnection.connect(
            api.database_url, autocommit=True, row_factory=dict_row
        ) as second,
    ):
        second_pid = second.info.backend_pid
        async with first.transaction():
            (outcome,) = await store.place_orders(first, [request(Side.BUY)])
            assert not isinstance(outcome, Exception)
            racing = asyncio.create_task(store.place_orders(second, [request(Side.SELL)]))
            # Wait until the second is blocked on the first's uncommitted row.
            async with asyncio.timeout(30):
                while True:
                    cur = await first.execute(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                        (second_pid,),
                    )
                    row = await cur.fetchone()
                    if row is not None and row["wait_event_type"] == "Lock":
                        break
                    assert not racing.done(), racing.result()
                    await asyncio.sleep(0.01)
        (lost,) = await racing
    assert isinstance(lost, store.SelfTradeError)


async def test_the_database_refuses_both_sides_even_behind_the_api(api: Api) -> None:
    prosumer = await trader(api, "both")
    prosumer_slot = make_slot(api.database_url)
    user, meter = prosumer.user_id, prosumer.meter_id
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        insert = (
            "INSERT INTO orders (timeslot_id, user_id, meter_id, side, quantity_wh, price)"
            " VALUES (%s, %s, %s, %s, 10, 10)"
        )
        conn.execute(insert, (prosumer_slot, user, meter, "buy"))
        with pytest.raises(psycopg.errors.ExclusionViolation):
            conn.execute(insert, (prosumer_slot, user, meter, "sell"))


# The engine: owners in the book.


@st.composite
def owned_books(draw: st.DrawFn) -> list[Order]:
    n = draw(st.integers(0, 12))
    return [
        Order(
            id=i,
            side=draw(st.sampled_from(Side)),
            quantity_wh=draw(st.integers(1, 20)),
            price=draw(st.integers(0, 10)),
            submitted_at=draw(st.integers(0, 3)),
            owner=draw(st.integers(1, 4)),
        )
        for i in range(n)
    ]


@settings(max_examples=150, deadline=None)
@given(owned_books())
def test_the_engine_refuses_a_book_where_an_owner_faces_itself(orders: list[Order]) -> None:
    buyers = {o.owner for o in orders if o.side is Side.BUY}
    sellers = {o.owner for o in orders if o.side is Side.SELL}
    book = OrderBook.from_orders(orders)
    if buyers & sellers:
        with pytest.raises(BookError) as refused:
            clear(book, price_cap=10)
        assert refused.value.code == Reason.SELF_TRADE
        first = refused.value.index
        assert first is not None
        assert orders[first].owner in buyers & sellers
        assert all(o.owner not in buyers & sellers for o in orders[:first])
        return
    # One side per owner: owners change nothing, and no trade pairs an owner with itself.
    result = clear(book, price_cap=10)
    anonymous = clear(
        OrderBook.from_orders(
            [Order(o.id, o.side, o.quantity_wh, o.price, o.submitted_at) for o in orders]
        ),
        price_cap=10,
    )
    assert (result.price, result.volume_wh) == (anonymous.price, anonymous.volume_wh)
    assert result.filled_wh.tolist() == anonymous.filled_wh.tolist()
    for buy, sell in zip(result.trade_buy.tolist(), result.trade_sell.tolist(), strict=True):
        assert orders[buy].owner != orders[sell].owner
    # The JSON book keeps its owners, and reads back to the same result.
    text = json.dumps(book_to_json(book, price_floor=0, price_cap=10))
    again = parse_book(text)
    owners = again.book.owners
    assert (owners.tolist() if owners is not None else []) == [o.owner for o in orders]
    assert clear(again.book, price_cap=10).filled_wh.tolist() == result.filled_wh.tolist()


def test_market_clear_refuses_a_self_trading_book(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = {
        "orders": [
            {"id": 1, "side": "buy", "quantity_wh": 10, "price": 5, "submitted_at": 0, "owner": 7},
            {"id": 2, "side": "sell", "quantity_wh": 10, "price": 1, "submitted_at": 0, "owner": 8},
            {"id": 3, "side": "sell", "quantity_wh": 10, "price": 2, "submitted_at": 0, "owner": 7},
        ]
    }
    path = tmp_path / "book.json"
    path.write_text(json.dumps(book))
    code = main(["market", "clear", "--input", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "order #0 (id 1)" in err
    assert "[self_trade]" in err
    # Half the orders naming an owner is not a book.
    del book["orders"][1]["owner"]
    path.write_text(json.dumps(book))
    assert main(["market", "clear", "--input", str(path)]) == 2
    assert "[malformed]" in capsys.readouterr().err


async def test_market_clear_and_the_service_agree_on_a_slot(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buyers = [await trader(api, "import") for _ in range(2)]
    sellers = [await trader(api, "export") for _ in range(2)]
    slot = make_slot(api.database_url)
    for i, who in enumerate(buyers):
        placed = await api.client.post(
            "/api/bids",
            json={"timeslotId": slot, "quantityWh": 1000 + i, "price": 300 - i},
            headers=who.headers,
        )
        assert placed.status_code == 201
    for i, who in enumerate(sellers):
        placed = await api.client.post(
            "/api/supplies",
            json={"timeslotId": slot, "quantityWh": 700 + i, "price": 100 + i},
            headers=who.headers,
        )
        assert placed.status_code == 201
    set_state(api.database_url, slot, "closed")
    async with await psycopg.AsyncConnection.connect(
        api.database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        cleared = await clear_slot(conn, slot)
        assert cleared is not None
        cur = await conn.execute(
            "SELECT id, user_id, side, quantity_wh, price, filled_wh, amount,"
            " floor(extract(epoch FROM submitted_at) * 1000)::bigint AS submitted_ms"
            " FROM orders WHERE timeslot_id = %s ORDER BY id",
            (slot,),
        )
        rows = await cur.fetchall()
    # The book as an auditor rebuilds it, owners included, through the command.
    book = OrderBook.from_orders(
        Order(
            id=r["id"],
            side=Side(r["side"]),
            quantity_wh=r["quantity_wh"],
            price=r["price"],
            submitted_at=r["submitted_ms"],
            owner=r["user_id"],
        )
        for r in rows
    )
    path = tmp_path / "slot.json"
    path.write_text(json.dumps(book_to_json(book, price_floor=0, price_cap=1_000_000)))
    assert main(["market", "clear", "--input", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["price"] == cleared[0].price
    assert {f["id"]: (f["filled_wh"], f["amount"]) for f in result["fills"]} == {
        r["id"]: (r["filled_wh"], r["amount"]) for r in rows
    }
    expected = result_to_json(
        book, clear(book, price_cap=1_000_000), price_floor=0, price_cap=1_000_000
    )
    assert result == expected


async def test_the_service_refuses_to_clear_a_self_trading_book_as_market_clear_does(
    api: Api,
) -> None:
    """A book the API cannot build (written behind its back, before migration 0051, say):
    the service's clearing refuses it with the engine's reason and changes nothing."""
    prosumer = await trader(api, "both")
    slot = make_slot(api.database_url, "closed")
    async with await psycopg.AsyncConnection.connect(
        api.database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        try:
            await conn.execute("BEGIN")
            await conn.execute(
                "ALTER TABLE orders DROP CONSTRAINT orders_one_side_per_account_and_slot"
            )
            for side, price in (("buy", 300), ("sell", 100)):
                await conn.execute(
                    "INSERT INTO orders (timeslot_id, user_id, meter_id, side, quantity_wh, price)"
                    " VALUES (%s, %s, %s, %s, 1000, %s)",
                    (slot, prosumer.user_id, prosumer.meter_id, side, price),
                )
            with pytest.raises(BookError) as refused:
                await clear_slot(conn, slot)
            assert refused.value.code == Reason.SELF_TRADE
            cur = await conn.execute("SELECT state FROM timeslots WHERE id = %s", (slot,))
            assert await cur.fetchone() == {"state": "closed"}
        finally:
            await conn.execute("ROLLBACK")
