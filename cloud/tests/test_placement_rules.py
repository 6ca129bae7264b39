"""The order-placement rules have one definition: a request breaking any rule gets
the same refusal (class, code and message) placed alone (``place_order``) as in a
batch with others (``place_orders``), and the rules are judged in the documented
order. Against the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import psycopg
import pytest
from cloud.tests.api_support import Api
from cloud.tests.market_support import make_slot, set_state, trader
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from gridclear.cloud.market import store
from gridclear.cloud.market.clearing import Side
from gridclear.cloud.market.config import MarketConfig


@pytest.fixture
async def conn(migrated_db: str) -> AsyncIterator[AsyncConnection[DictRow]]:
    async with await AsyncConnection.connect(
        migrated_db, autocommit=True, row_factory=dict_row
    ) as connection:
        await connection.execute("DELETE FROM market_clock")
        yield connection


def _outcome(result: object) -> tuple[str, str, str] | tuple[str, bool]:
    if isinstance(result, store.MarketError):
        return type(result).__name__, result.code, str(result)
    assert isinstance(result, tuple), result
    order, created = result
    assert isinstance(order, store.OrderRecord)
    return "placed", created


async def _alone(conn: AsyncConnection[DictRow], request: store.OrderRequest) -> object:
    try:
        return await store.place_order(
            conn,
            config=request.config,
            user_id=request.user_id,
            side=request.side,
            timeslot_id=request.timeslot_id,
            meter_id=request.meter_id,
            quantity_wh=request.quantity_wh,
            price=request.price,
            idempotency_key=request.idempotency_key,
            request_hash=request.request_hash,
        )
    except store.MarketError as exc:
        return exc


async def test_each_rule_refuses_alike_alone_and_in_a_batch(
    api: Api, conn: AsyncConnection[DictRow]
) -> None:
    buyer = await trader(api, "import")
    seller = await trader(api, "export")
    disabled = await trader(api, "import")
    with psycopg.connect(api.database_url, autocommit=True) as db:
        db.execute("UPDATE users SET disabled = true WHERE id = %s", (disabled.user_id,))
    open_slot = make_slot(api.database_url, price_cap=500)
    closed_slot = make_slot(api.database_url)
    set_state(api.database_url, closed_slot, "closed")
    config = MarketConfig(quantity_step_wh=10)
    good = store.OrderRequest(
        config=config,
        user_id=buyer.user_id,
        side=Side.BUY,
        timeslot_id=open_slot,
        meter_id=buyer.meter_id,
        quantity_wh=1000,
        price=200,
    )
    first = await _alone(conn, replace(good, idempotency_key="k1", request_hash=b"a"))
    assert _outcome(first) == ("placed", True)
    prosumer = await trader(api, "both")
    prosumer_bid = replace(good, user_id=prosumer.user_id, meter_id=prosumer.meter_id)
    assert _outcome(await _alone(conn, prosumer_bid)) == ("placed", True)

    cases = {
        "terms": replace(good, quantity_wh=1005),
        # An inactive account is refused even with a used key and a closed slot.
        "account": replace(
            good, user_id=disabled.user_id, meter_id=disabled.meter_id, timeslot_id=closed_slot
        ),
        # A used key is answered before the slot is judged.
        "replay": replace(good, idempotency_key="k1", request_hash=b"a", timeslot_id=open_slot),
        "key reused": replace(good, idempotency_key="k1", request_hash=b"b"),
        "no slot": replace(good, timeslot_id=2**62),
        "closed": replace(good, timeslot_id=closed_slot, meter_id=seller.meter_id),
        "slot price": replace(good, price=600),
        "meter": replace(good, meter_id=seller.meter_id),
        "self trade": replace(prosumer_bid, side=Side.SELL),
        "good": good,
    }
    expected = {
        "terms": ("TermsOutOfBoundsError", "out_of_bounds", "quantity must be a multiple of 10 Wh"),
        "account": ("AccountInactiveError", "account_inactive", "The account is not active"),
        "replay": ("placed", False),
        "key reused": (
            "IdempotencyMismatchError",
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        ),
        "no slot": ("SlotNotFoundError", "slot_not_found", f"no timeslot {2**62}"),
        "closed": (
            "SlotNotOpenError",
            "slot_not_open",
            f"timeslot {closed_slot} is closed, not open",
        ),
        "slot price": (
            "TermsOutOfBoundsError",
            "out_of_bounds",
            "price must be 0 to 500 base units per kWh in this timeslot",
        ),
        "meter": (
            "MeterNotAllowedError",
            "meter_not_allowed",
            f"meter {seller.meter_id} is not yours or cannot import: a bid needs a meter you"
            " own with role import or both",
        ),
        "self trade": (
            "SelfTradeError",
            "self_trade",
            f"you have an active bid in timeslot {open_slot}: an account's orders in one"
            " timeslot are all on one side (cancel it first)",
        ),
        "good": ("placed", True),
    }
    alone = {name: _outcome(await _alone(conn, request)) for name, request in cases.items()}
    assert alone == expected
    batched = await store.place_orders(conn, list(cases.values()))
    assert dict(zip(cases, map(_outcome, batched), strict=True)) == expected
