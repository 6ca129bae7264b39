"""The audit log covers orders and the market's configuration, written in the change's
own transaction, and admins (only) search it by actor, action, subject and time, page
by page. Real PostgreSQL and Redis; the API in process."""

from __future__ import annotations

from typing import Any

import psycopg
from cloud.tests.api_support import Api, bearer, error_code
from cloud.tests.market_support import make_slot, set_state, trader


async def _admin(api: Api, email: str) -> tuple[int, dict[str, str]]:
    session = await api.register(email)
    user_id = int(session["user"]["id"])
    api.make_admin(user_id)
    login = await api.client.post(
        "/api/auth/login", json={"email": email, "password": "correct horse battery"}
    )
    return user_id, bearer(login.json()["data"]["accessToken"])


async def _search(api: Api, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = await api.client.get("/api/admin/audit", params=params, headers=headers)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


async def test_orders_placed_amended_and_cancelled_are_audited_with_their_change(
    api: Api,
) -> None:
    _, admin = await _admin(api, "auditor@example.org")
    buyer = await trader(api, "import")
    slot = make_slot(api.database_url, "open")
    placed = await api.client.post(
        "/api/bids",
        json={"timeslotId": slot, "meterId": buyer.meter_id, "quantityWh": 1000, "price": 40},
        headers=buyer.headers,
    )
    assert placed.status_code == 201, placed.text
    order = placed.json()["data"]
    amended = await api.client.put(
        f"/api/bids/{order['id']}",
        json={"price": 45, "version": order["version"]},
        headers=buyer.headers,
    )
    assert amended.status_code == 200, amended.text
    cancelled = await api.client.delete(f"/api/bids/{order['id']}", headers=buyer.headers)
    assert cancelled.status_code == 200, cancelled.text
    # A refused change (the slot past its gate) commits nothing, so no entry either.
    closed = make_slot(api.database_url, "open")
    set_state(api.database_url, closed, "closed")
    refused = await api.client.post(
        "/api/bids",
        json={"timeslotId": closed, "meterId": buyer.meter_id, "quantityWh": 1000, "price": 40},
        headers=buyer.headers,
    )
    assert refused.status_code == 409, refused.text

    entries = await _search(api, admin, subject=str(order["id"]), action="order.*")
    assert [(e["event"], e["actorId"]) for e in entries] == [
        ("order.cancel", buyer.user_id),
        ("order.amend", buyer.user_id),
        ("order.place", buyer.user_id),
    ]
    assert entries[1]["details"]["price"] == [40, 45]
    assert entries[2]["details"] == {
        "side": "buy",
        "timeslotId": slot,
        "meterId": buyer.meter_id,
        "quantityWh": 1000,
        "price": 40,
        "owner": buyer.user_id,
    }
    mine = await _search(api, admin, actor=buyer.user_id, action="order.place")
    assert [e["subject"] for e in mine] == [str(order["id"])]


async def test_a_market_configuration_change_is_audited_with_what_changed(api: Api) -> None:
    admin_id, admin = await _admin(api, "market-admin@example.org")
    changed = await api.client.put("/api/market/config", json={"priceCap": 900_000}, headers=admin)
    assert changed.status_code == 200, changed.text
    entries = await _search(api, admin, action="market.config.change", actor=admin_id)
    assert len(entries) == 1
    assert entries[0]["details"]["changed"] == {"price_cap": [1_000_000, 900_000]}


async def test_admins_page_through_the_log_by_cursor_and_time(api: Api) -> None:
    admin_id, admin = await _admin(api, "pager@example.org")
    for _ in range(5):
        await api.client.post(
            "/api/auth/login", json={"email": "pager@example.org", "password": "wrong one"}
        )
    everything = await _search(api, admin, actor=admin_id, limit=1000)
    assert len(everything) >= 6
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"actor": admin_id, "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        response = await api.client.get("/api/admin/audit", params=params, headers=admin)
        assert response.status_code == 200, response.text
        pages.append(response.json()["data"])
        cursor = response.headers.get("x-next-cursor")
        if cursor is None:
            break
    assert [e["id"] for page in pages for e in page] == [e["id"] for e in everything]
    assert all(len(page) == 2 for page in pages[:-1])

    newest, oldest = everything[0], everything[-1]
    window = await _search(api, admin, actor=admin_id, **{"from": oldest["at"], "to": newest["at"]})
    assert [e["id"] for e in window] == [e["id"] for e in everything[1:]]
    failures = await _search(api, admin, actor=admin_id, outcome="failure")
    assert {e["event"] for e in failures} == {"auth.password.sign_in"}
    bad = await api.client.get("/api/admin/audit", params={"cursor": "12ab"}, headers=admin)
    assert (bad.status_code, error_code(bad)) == (422, "VALIDATION_ERROR")


async def test_only_admins_read_the_audit_log(api: Api) -> None:
    participant = await api.register("curious@example.org")
    as_participant = await api.client.get(
        "/api/admin/audit", headers=bearer(participant["accessToken"])
    )
    assert (as_participant.status_code, error_code(as_participant)) == (403, "FORBIDDEN")
    operator = await api.register("operator-audit@example.org")
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET role = 'operator' WHERE id = %s", (operator["user"]["id"],))
    as_operator = await api.client.get("/api/admin/audit", headers=bearer(operator["accessToken"]))
    assert (as_operator.status_code, error_code(as_operator)) == (403, "FORBIDDEN")
    _, admin = await _admin(api, "keyholder@example.org")
    key = await api.client.post("/api/keys", json={"name": "k", "scopes": ["read"]}, headers=admin)
    assert key.status_code == 201, key.text
    by_key = await api.client.get(
        "/api/admin/audit", headers={"X-API-Key": key.json()["data"]["key"]}
    )
    assert (by_key.status_code, error_code(by_key)) == (403, "FORBIDDEN")
    anonymous = await api.client.get("/api/admin/audit")
    assert (anonymous.status_code, error_code(anonymous)) == (401, "AUTHENTICATION_REQUIRED")
