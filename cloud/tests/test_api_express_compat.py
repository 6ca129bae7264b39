"""An app written for the Express predecessor, replayed against a real gridclear server.

Each request is the predecessor's documented client flow (its API reference and
its JavaScript client): wallet sign-in, public timeslot reads without a token, a
bid in its body shape ``{timeslotId, price: 0.05, quantity: 100}``, an amendment
and a cancellation without a version, ``/api/my/bids``, a supply with its
``reservePrice``, joining a timeslot's room over Socket.IO with its
``join_timeslot`` payload, and health. Every answer is checked field by field
where the predecessor's app reads it (``data.bid.price`` as a JSON number of
tokens, ``data.bid.quantity`` in kWh), and beside it gridclear's own integers.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
import socketio
from cloud.tests.api_support import Clock, Wallet, bearer, error_code, test_settings
from cloud.tests.market_support import make_slot
from cloud.tests.test_realtime import EVENTS, WAIT_S, Listener, Served, serving

from gridclear.cloud.settings import Settings


@pytest.fixture
def settings(migrated_db: str, redis_url: str, redis_prefix: str) -> Settings:
    return test_settings(migrated_db, redis_url, redis_prefix)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    async with serving(settings, Clock()) as running:
        yield running


def _bind_meter(served: Served, user_id: int, role: str) -> int:
    """What an operator does once per participant: bind a meter to the account."""
    with psycopg.connect(served.api.database_url, autocommit=True) as conn:
        device = conn.execute(
            "INSERT INTO devices (device_id) VALUES (%s) RETURNING id",
            (f"gw-{uuid.uuid4().hex[:10]}",),
        ).fetchone()
        assert device is not None
        meter = conn.execute(
            "INSERT INTO meters (device_pk, name, owner_id, role) VALUES (%s, 'm1', %s, %s)"
            " RETURNING id",
            (device[0], user_id, role),
        ).fetchone()
        assert meter is not None
        return int(meter[0])


@contextlib.asynccontextmanager
async def _predecessor_socket(url: str, token: str, wallet: str) -> AsyncIterator[Listener]:
    """``io(url, {auth: {token, walletAddress}})``, the predecessor's connection."""
    client = socketio.AsyncClient(reconnection=False)
    listener = Listener(client)
    for name in EVENTS:

        async def queue(data: Any = None, name: str = name) -> None:
            await listener.received.put((name, data))

        client.on(name, queue)
    await client.connect(
        url,
        auth={"token": token, "walletAddress": wallet},
        transports=["websocket"],
        wait_timeout=WAIT_S,
    )
    try:
        yield listener
    finally:
        await client.disconnect()


async def _wallet_sign_in(served: Served, wallet: Wallet) -> dict[str, Any]:
    """The predecessor's ``authenticate()``: init, sign the message, verify."""
    http = served.api.client
    init = await http.post("/api/auth/init", json={"walletAddress": wallet.address})
    assert init.status_code == 200, init.text
    body = init.json()
    assert body["success"] is True
    data = body["data"]
    assert isinstance(data["nonce"], str)
    assert data["nonce"]
    assert isinstance(data["message"], str)
    assert data["nonce"] in data["message"]
    datetime.fromisoformat(data["expiresAt"])
    verify = await http.post(
        "/api/auth/verify",
        json={
            "walletAddress": wallet.address,
            "signature": wallet.sign(data["message"]),
            "message": data["message"],
        },
    )
    assert verify.status_code == 200, verify.text
    session: dict[str, Any] = verify.json()["data"]
    assert isinstance(session["accessToken"], str)
    assert isinstance(session["expiresIn"], int)
    assert session["user"]["walletAddress"] == wallet.address
    assert isinstance(session["user"]["id"], int)
    datetime.fromisoformat(session["user"]["createdAt"])
    return session


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_public_order(order: dict[str, Any]) -> None:
    assert order["userId"] is None
    assert order["meterId"] is None
    for field in ("price", "quantity", "quantityWh", "priceTokens"):
        assert _is_number(order[field]), field
    for field in ("status", "createdAt", "updatedAt", "submittedAt"):
        assert order[field], field


async def test_the_predecessors_client_flows_work_verbatim(served: Served) -> None:
    http = served.api.client
    slot = make_slot(served.api.database_url)

    # Public market data: no token.
    listing = await http.get("/api/timeslots")
    assert listing.status_code == 200, listing.text
    assert slot in [s["id"] for s in listing.json()["data"]]
    active = await http.get("/api/timeslots/active")
    assert active.status_code == 200
    one = await http.get(f"/api/timeslots/{slot}")
    assert one.status_code == 200
    timeslot = one.json()["data"]
    assert (timeslot["id"], timeslot["state"]) == (slot, "open")
    for field in ("startTime", "endTime", "closesAt"):
        datetime.fromisoformat(timeslot[field])
    for path in (f"/api/timeslots/{slot}/bids", f"/api/timeslots/{slot}/supplies"):
        empty = await http.get(path)
        assert (empty.status_code, empty.json()) == (200, {"success": True, "data": []})

    # Sign in with a wallet, as the predecessor's client does; an operator binds a meter.
    buyer_wallet = Wallet()
    session = await _wallet_sign_in(served, buyer_wallet)
    buyer = bearer(session["accessToken"])
    _bind_meter(served, session["user"]["id"], "import")

    # Join the timeslot's room as the predecessor's app does: the id as a string.
    async with _predecessor_socket(
        served.url, session["accessToken"], buyer_wallet.address
    ) as socket:
        joined = await socket.call("join_timeslot", str(slot))
        assert joined == {
            "success": True,
            "data": {"room": f"timeslot:{slot}", "timeslotId": slot},
        }

        # A bid in the predecessor's body, byte for byte.
        placed = await http.post(
            "/api/bids",
            content=f'{{"timeslotId": "{slot}", "price": 0.05, "quantity": 100}}',
            headers={**buyer, "Content-Type": "application/json"},
        )
        assert placed.status_code == 201, placed.text
        bid = placed.json()["data"]
        # Where the predecessor's app reads it: data.bid, decimals as JSON numbers.
        assert bid["bid"]["price"] == 0.05
        assert '"price":0.05' in placed.text
        assert bid["bid"]["quantity"] == 100
        assert bid["bid"]["id"] == bid["id"]
        assert bid["bid"]["timeslotId"] == slot
        assert bid["bid"]["status"] == "PENDING"
        assert bid["bid"]["txSignature"] is None
        datetime.fromisoformat(bid["bid"]["createdAt"])
        # gridclear's integers beside them: Wh and base units (6 decimals).
        assert (bid["quantityWh"], bid["price"], bid["quantity"], bid["priceTokens"]) == (
            100_000,
            50_000,
            100,
            0.05,
        )
        assert (bid["status"], bid["version"], bid["side"]) == ("active", 1, "buy")
        assert placed.headers["ETag"] == '"1"'

        # The room heard it without the owner; then the owner's own copy.
        event, public = await socket.next()
        assert (event, public["action"], public["id"]) == ("bid_update", "created", bid["id"])
        assert public["userId"] is None
        event, own = await socket.next()
        assert (event, own["userId"]) == ("bid_update", session["user"]["id"])

        # Amend without a version: last writer wins.
        amended = await http.put(
            f"/api/bids/{bid['id']}", json={"price": 0.06, "quantity": 150}, headers=buyer
        )
        assert amended.status_code == 200, amended.text
        data = amended.json()["data"]
        assert (data["bid"]["price"], data["bid"]["quantity"]) == (0.06, 150)
        assert (data["price"], data["quantityWh"], data["version"]) == (60_000, 150_000, 2)
        assert (await socket.next())[1]["action"] == "updated"
        await socket.next()

    # The slot's public listing shows it, owner hidden, to anyone.
    public_bids = await http.get(f"/api/timeslots/{slot}/bids")
    (shown,) = public_bids.json()["data"]
    _check_public_order(shown)
    assert (shown["quantity"], shown["priceTokens"]) == (150, 0.06)

    # My bids.
    mine = await http.get("/api/my/bids", headers=buyer)
    assert mine.status_code == 200
    (listed,) = mine.json()["data"]
    assert (listed["id"], listed["quantity"], listed["priceTokens"], listed["price"]) == (
        bid["id"],
        150,
        0.06,
        60_000,
    )
    assert listed["userId"] == session["user"]["id"]

    # A supply in the predecessor's body, from another wallet: reservePrice.
    seller_wallet = Wallet()
    seller_session = await _wallet_sign_in(served, seller_wallet)
    seller = bearer(seller_session["accessToken"])
    _bind_meter(served, seller_session["user"]["id"], "export")
    supplied = await http.post(
        "/api/supplies",
        json={"timeslotId": str(slot), "quantity": 500, "reservePrice": 0.03},
        headers=seller,
    )
    assert supplied.status_code == 201, supplied.text
    supply = supplied.json()["data"]
    assert (supply["supply"]["reservePrice"], supply["supply"]["quantity"]) == (0.03, 500)
    assert supply["supply"]["status"] == "COMMITTED"
    assert (supply["price"], supply["quantityWh"], supply["reservePrice"]) == (
        30_000,
        500_000,
        0.03,
    )
    amended_supply = await http.put(
        f"/api/supplies/{supply['id']}", json={"quantity": 600, "reservePrice": 0.035},
        headers=seller,
    )  # fmt: skip
    assert amended_supply.json()["data"]["supply"]["reservePrice"] == 0.035

    # Cancel without a version.
    cancelled = await http.delete(f"/api/bids/{bid['id']}", headers=buyer)
    assert cancelled.status_code == 200, cancelled.text
    gone = cancelled.json()["data"]
    assert (gone["bid"]["id"], gone["bid"]["status"], gone["status"]) == (
        bid["id"],
        "CANCELLED",
        "cancelled",
    )
    datetime.fromisoformat(gone["bid"]["updatedAt"])

    # Health, in the predecessor's fields (and gridclear's), inside the envelope.
    health = await http.get("/api/health")
    assert health.status_code == 200
    data = health.json()["data"]
    assert data["status"] == "ok"
    datetime.fromisoformat(data["timestamp"])
    assert _is_number(data["uptime"])
    assert data["uptime"] >= 0
    assert (data["database"], data["redis"], data["blockchain"]) == (
        "connected",
        "connected",
        "not_configured",
    )
    assert data["environment"] == "development"
    root = await http.get("/health")
    assert set(root.json()["data"]) == set(data)

    # GET /api/: what this is and where its documentation is.
    for path in ("/api/", "/api"):
        info = await http.get(path)
        assert info.status_code == 200, path
        described = info.json()["data"]
        assert described["name"] == "gridclear API"
        assert described["status"] == "active"
        assert described["documentation"]["openapi"] == "/openapi.json"
        assert (await http.get(described["documentation"]["openapi"])).status_code == 200
        assert described["documentation"]["migrating"].endswith("MIGRATING.md")


async def test_optimistic_concurrency_stays_available(served: Served) -> None:
    http = served.api.client
    slot = make_slot(served.api.database_url)
    session = await _wallet_sign_in(served, Wallet())
    headers = bearer(session["accessToken"])
    _bind_meter(served, session["user"]["id"], "both")
    placed = await http.post(
        "/api/bids", json={"timeslotId": slot, "quantityWh": 1000, "price": 500}, headers=headers
    )
    order = placed.json()["data"]
    assert order["meterId"] is not None  # the one meter that fits, chosen for the caller

    stale_body = await http.put(
        f"/api/bids/{order['id']}", json={"version": 2, "price": 600}, headers=headers
    )
    assert (stale_body.status_code, error_code(stale_body)) == (409, "CONFLICT")
    assert stale_body.json()["error"]["details"]["currentVersion"] == 1
    stale_header = await http.put(
        f"/api/bids/{order['id']}", json={"price": 600}, headers={**headers, "If-Match": '"7"'}
    )
    assert (stale_header.status_code, error_code(stale_header)) == (409, "CONFLICT")
    fresh = await http.put(
        f"/api/bids/{order['id']}",
        json={"price": 600},
        headers={**headers, "If-Match": placed.headers["ETag"]},
    )
    assert (fresh.status_code, fresh.json()["data"]["version"]) == (200, 2)
    disagree = await http.put(
        f"/api/bids/{order['id']}",
        json={"version": 2, "price": 700},
        headers={**headers, "If-Match": '"3"'},
    )
    assert error_code(disagree) == "VALIDATION_ERROR"
    stale_cancel = await http.delete(
        f"/api/bids/{order['id']}", headers={**headers, "If-Match": '"1"'}
    )
    assert error_code(stale_cancel) == "CONFLICT"
    cancelled = await http.delete(f"/api/bids/{order['id']}?version=2", headers=headers)
    assert cancelled.json()["data"]["status"] == "cancelled"
