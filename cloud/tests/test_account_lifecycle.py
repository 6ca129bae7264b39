"""Account lifecycle against real servers: links mailed over real SMTP (an aiosmtpd
server the harness starts), used once; disabling, unlinking a wallet, deleting an
account. PostgreSQL and Redis are real; the API runs in process."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import psycopg
import pytest
from cloud.tests.api_support import (
    Api,
    Wallet,
    bearer,
    error_code,
    running_api,
    test_settings,
)
from cloud.tests.market_support import make_slot, set_state, trader

from gridclear.devtools.smtp import MailSink

PASSWORD = "correct horse battery"
_TOKEN = re.compile(r"\?token=([A-Za-z0-9_-]+)")


@pytest.fixture
async def api(
    migrated_db: str, redis_url: str, redis_prefix: str, smtp_server: MailSink
) -> AsyncIterator[Api]:
    settings = test_settings(
        migrated_db,
        redis_url,
        redis_prefix,
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_tls="none",
        mail_from="gridclear <no-reply@gridclear.test>",
        account_link_ttl_s=600,
    )
    async with running_api(settings) as running:
        yield running


def _token(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    match = _TOKEN.search(body.get_content())
    assert match, body.get_content()
    return match.group(1)


async def _link(smtp: MailSink, to: str, subject: str, count: int = 1) -> str:
    """The token of the ``count``-th message to ``to`` whose subject mentions ``subject``."""
    mails = await smtp.arrival(
        lambda ms: sum(subject in str(m["Subject"]) for m in ms) >= count, to=to
    )
    return _token([m for m in mails if subject in str(m["Subject"])][count - 1])


async def _login(api: Api, email: str, password: str = PASSWORD) -> Any:
    return await api.client.post("/api/auth/login", json={"email": email, "password": password})


def _rows(api: Api, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(api.database_url) as conn:
        return conn.execute(query, params).fetchall()


# ---------------------------------------------------------------- mailed links


async def test_a_reset_link_arrives_works_once_and_signs_every_session_out(
    api: Api, smtp_server: MailSink
) -> None:
    session = await api.register("rosa@example.org")
    asked = await api.client.post(
        "/api/auth/password/reset-request", json={"email": "Rosa@Example.org"}
    )
    assert asked.status_code == 202, asked.text
    token = await _link(smtp_server, "rosa@example.org", "Reset")
    assert token.startswith("gcp_")
    # Only a digest is stored.
    assert api.count("SELECT count(*) FROM account_tokens WHERE token_hash = %s", token) == 0

    reset = await api.client.post(
        "/api/auth/password/reset", json={"token": token, "newPassword": "a brand new secret"}
    )
    assert reset.status_code == 200, reset.text
    assert reset.json()["data"]["emailVerified"] is True
    assert (await _login(api, "rosa@example.org")).status_code == 401
    assert (await _login(api, "rosa@example.org", "a brand new secret")).status_code == 200
    stale = await api.client.post(
        "/api/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert stale.status_code == 401
    profile = await api.client.get("/api/auth/profile", headers=bearer(session["accessToken"]))
    assert (profile.status_code, error_code(profile)) == (401, "INVALID_TOKEN")

    again = await api.client.post(
        "/api/auth/password/reset", json={"token": token, "newPassword": "yet another secret"}
    )
    assert (again.status_code, error_code(again)) == (409, "LINK_USED")
    assert (await _login(api, "rosa@example.org", "a brand new secret")).status_code == 200
    user_id = session["user"]["id"]
    assert (
        api.count(
            "SELECT count(*) FROM audit_log WHERE event = 'auth.password.reset' AND actor_id = %s",
            user_id,
        )
        == 1
    )


async def test_expired_replaced_and_unknown_links_are_refused_with_their_codes(
    api: Api, smtp_server: MailSink
) -> None:
    await api.register("sam@example.org")
    verification = await _link(smtp_server, "sam@example.org", "Confirm")
    for _ in range(2):
        asked = await api.client.post(
            "/api/auth/password/reset-request", json={"email": "sam@example.org"}
        )
        assert asked.status_code == 202
    first = await _link(smtp_server, "sam@example.org", "Reset", count=1)
    second = await _link(smtp_server, "sam@example.org", "Reset", count=2)
    assert first != second

    async def reset(token: str) -> Any:
        return await api.client.post(
            "/api/auth/password/reset", json={"token": token, "newPassword": "another password"}
        )

    replaced = await reset(first)
    assert (replaced.status_code, error_code(replaced)) == (409, "LINK_USED")
    unknown = await reset("gcp_" + "A" * 43)
    assert (unknown.status_code, error_code(unknown)) == (400, "LINK_INVALID")
    wrong_kind = await reset(verification)
    assert (wrong_kind.status_code, error_code(wrong_kind)) == (400, "LINK_INVALID")
    malformed = await reset("not a token!")
    assert (malformed.status_code, error_code(malformed)) == (422, "VALIDATION_ERROR")

    api.clock.advance(601)
    expired = await reset(second)
    assert (expired.status_code, error_code(expired)) == (410, "LINK_EXPIRED")
    late = await api.client.post("/api/auth/email/verify", json={"token": verification})
    assert (late.status_code, error_code(late)) == (410, "LINK_EXPIRED")
    assert (await _login(api, "sam@example.org")).status_code == 200


async def test_reset_requests_do_not_reveal_whether_an_email_is_registered(
    api: Api, smtp_server: MailSink
) -> None:
    await api.register("known@example.org")
    await _link(smtp_server, "known@example.org", "Confirm")
    (before,) = _rows(api, "SELECT COALESCE(max(id), 0) FROM audit_log")[0]
    unknown = await api.client.post(
        "/api/auth/password/reset-request", json={"email": "nobody@example.org"}
    )
    known = await api.client.post(
        "/api/auth/password/reset-request", json={"email": "known@example.org"}
    )
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()
    assert unknown.headers.keys() - {"x-request-id"} == known.headers.keys() - {"x-request-id"}
    await _link(smtp_server, "known@example.org", "Reset")
    # The unknown address was handled before the known one, and no mail went to it.
    assert smtp_server.to("nobody@example.org") == []
    outcomes = _rows(
        api,
        "SELECT outcome, details->>'reason' FROM audit_log"
        " WHERE event = 'auth.password.reset_request' AND id > %s ORDER BY id",
        before,
    )
    assert outcomes == [("failure", "no_active_account"), ("success", None)]

    # The mail limit answers the same for both, before any lookup.
    for email in ("known@example.org", "nobody@example.org"):
        answers = [
            (
                await api.client.post("/api/auth/password/reset-request", json={"email": email})
            ).status_code
            for _ in range(5)
        ]
        assert answers[-1] == 429, (email, answers)


async def test_an_email_is_verified_by_its_link_once(api: Api, smtp_server: MailSink) -> None:
    session = await api.register("vera@example.org")
    assert session["user"]["emailVerified"] is False
    token = await _link(smtp_server, "vera@example.org", "Confirm")
    assert token.startswith("gcv_")
    verified = await api.client.post("/api/auth/email/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    assert verified.json()["data"]["emailVerified"] is True
    again = await api.client.post("/api/auth/email/verify", json={"token": token})
    assert (again.status_code, error_code(again)) == (409, "LINK_USED")
    resend = await api.client.post(
        "/api/users/email/verification", headers=bearer(session["accessToken"])
    )
    assert (resend.status_code, error_code(resend)) == (409, "CONFLICT")


async def test_a_verification_link_resent_voids_the_first(api: Api, smtp_server: MailSink) -> None:
    session = await api.register("wren@example.org")
    first = await _link(smtp_server, "wren@example.org", "Confirm")
    resent = await api.client.post(
        "/api/users/email/verification", headers=bearer(session["accessToken"])
    )
    assert resent.status_code == 202, resent.text
    second = await _link(smtp_server, "wren@example.org", "Confirm", count=2)
    old = await api.client.post("/api/auth/email/verify", json={"token": first})
    assert (old.status_code, error_code(old)) == (409, "LINK_USED")
    new = await api.client.post("/api/auth/email/verify", json={"token": second})
    assert new.status_code == 200


# ---------------------------------------------------------------- disabling


async def _admin(api: Api) -> dict[str, str]:
    session = await api.register("admin-lifecycle@example.org")
    api.make_admin(int(session["user"]["id"]))
    login = await _login(api, "admin-lifecycle@example.org")
    return bearer(login.json()["data"]["accessToken"])


async def test_a_disabled_account_cannot_sign_in_any_way_and_loses_its_open_orders(
    api: Api,
) -> None:
    admin = await _admin(api)
    wallet = Wallet()
    signed = await api.sign_in(wallet)
    user_id = int(signed["user"]["id"])
    headers = bearer(signed["accessToken"])
    added = await api.client.post(
        "/api/users/credentials",
        json={"email": "dora@example.org", "password": PASSWORD},
        headers=headers,
    )
    assert added.status_code == 200, added.text
    key = await api.client.post(
        "/api/keys", json={"name": "bot", "scopes": ["trading"]}, headers=headers
    )
    assert key.status_code == 201, key.text
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        device = conn.execute(
            "INSERT INTO devices (device_id) VALUES ('gw-dora') RETURNING id"
        ).fetchone()
        assert device is not None
        meter = conn.execute(
            "INSERT INTO meters (device_pk, name, owner_id, role) VALUES (%s, 'm', %s, 'both')"
            " RETURNING id",
            (device[0], user_id),
        ).fetchone()
        assert meter is not None
    open_slot = make_slot(api.database_url, "open")
    placed = await api.client.post(
        "/api/bids",
        json={"timeslotId": open_slot, "meterId": meter[0], "quantityWh": 500, "price": 100},
        headers=headers,
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["data"]["id"]
    # An order in a slot past its gate closure stays: its owner traded.
    closed_slot = make_slot(api.database_url, "open")
    kept = await api.client.post(
        "/api/bids",
        json={"timeslotId": closed_slot, "meterId": meter[0], "quantityWh": 500, "price": 100},
        headers=headers,
    )
    assert kept.status_code == 201, kept.text
    set_state(api.database_url, closed_slot, "closed")

    disabled = await api.client.put(
        f"/api/admin/users/{user_id}/disabled", json={"disabled": True}, headers=admin
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["data"]["disabled"] is True

    statuses = dict(_rows(api, "SELECT id, status FROM orders WHERE user_id = %s", user_id))
    assert statuses == {order_id: "cancelled", kept.json()["data"]["id"]: "active"}
    cancel = _rows(
        api,
        "SELECT actor_id, details->>'reason' FROM audit_log"
        " WHERE event = 'order.cancel' AND subject = %s",
        str(order_id),
    )
    admin_id = (await api.client.get("/api/auth/profile", headers=admin)).json()["data"]["id"]
    assert cancel == [(admin_id, "account_disabled")]

    profile = await api.client.get("/api/auth/profile", headers=headers)
    assert (profile.status_code, error_code(profile)) == (401, "INVALID_TOKEN")
    refreshed = await api.client.post(
        "/api/auth/refresh", json={"refreshToken": signed["refreshToken"]}
    )
    assert refreshed.status_code == 401
    password = await _login(api, "dora@example.org")
    assert (password.status_code, error_code(password)) == (401, "INVALID_CREDENTIALS")
    by_key = await api.client.get("/api/my/bids", headers={"X-API-Key": key.json()["data"]["key"]})
    assert (by_key.status_code, error_code(by_key)) == (401, "INVALID_TOKEN")
    init = await api.client.post("/api/auth/init", json={"walletAddress": wallet.address})
    message = init.json()["data"]["message"]
    by_wallet = await api.client.post(
        "/api/auth/verify",
        json={
            "walletAddress": wallet.address,
            "signature": wallet.sign(message),
            "message": message,
        },
    )
    assert (by_wallet.status_code, error_code(by_wallet)) == (403, "FORBIDDEN")

    # Enabled again, it signs in anew; the sessions revoked stay revoked.
    enabled = await api.client.put(
        f"/api/admin/users/{user_id}/disabled", json={"disabled": False}, headers=admin
    )
    assert enabled.status_code == 200
    assert (await _login(api, "dora@example.org")).status_code == 200
    still = await api.client.post(
        "/api/auth/refresh", json={"refreshToken": signed["refreshToken"]}
    )
    assert still.status_code == 401
    assert [
        event
        for (event,) in _rows(
            api,
            "SELECT event FROM audit_log WHERE subject = %s AND event LIKE 'user.%%' ORDER BY id",
            str(user_id),
        )
    ] == ["user.disable", "user.enable"]


# ---------------------------------------------------------------- wallets and deletion


def _trade(api: Api, slot_id: int, buyer: tuple[int, int], seller: tuple[int, int]) -> int:
    """A trade of 1 kWh at 100 between ``(user, meter)`` pairs in ``slot_id``; its id."""
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        ids = []
        for side, (user, meter) in (("buy", buyer), ("sell", seller)):
            row = conn.execute(
                "INSERT INTO orders (timeslot_id, user_id, meter_id, side, quantity_wh, price,"
                " status, filled_wh, amount) VALUES (%s, %s, %s, %s, 1000, 100, 'filled', 1000,"
                " 100) RETURNING id",
                (slot_id, user, meter, side),
            ).fetchone()
            assert row is not None
            ids.append(row[0])
        trade = conn.execute(
            "INSERT INTO trades (timeslot_id, seq, buy_order_id, sell_order_id, buyer_id,"
            " seller_id, quantity_wh, price, amount) VALUES (%s, 1, %s, %s, %s, %s, 1000, 100,"
            " 100) RETURNING id",
            (slot_id, ids[0], ids[1], buyer[0], seller[0]),
        ).fetchone()
    assert trade is not None
    return int(trade[0])


async def test_a_wallet_is_unlinked_unless_it_is_the_only_way_in_or_trades_are_unsettled(
    api: Api,
) -> None:
    wallet = Wallet()
    signed = await api.sign_in(wallet)
    user_id = int(signed["user"]["id"])
    headers = bearer(signed["accessToken"])
    only = await api.client.delete(f"/api/users/wallets/{wallet.address}", headers=headers)
    assert (only.status_code, error_code(only)) == (409, "LAST_SIGN_IN_METHOD")
    missing = await api.client.delete(f"/api/users/wallets/{Wallet().address}", headers=headers)
    assert (missing.status_code, error_code(missing)) == (404, "NOT_FOUND")

    await api.client.post(
        "/api/users/credentials",
        json={"email": "ulla@example.org", "password": PASSWORD},
        headers=headers,
    )
    seller = await trader(api, "export")
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        device = conn.execute("INSERT INTO devices (device_id) VALUES ('gw-ulla') RETURNING id")
        row = device.fetchone()
        assert row is not None
        meter = conn.execute(
            "INSERT INTO meters (device_pk, name, owner_id, role) VALUES (%s, 'm', %s, 'import')"
            " RETURNING id",
            (row[0], user_id),
        ).fetchone()
        assert meter is not None
    slot = make_slot(api.database_url, "cleared")
    _trade(api, slot, (user_id, meter[0]), (seller.user_id, seller.meter_id))
    unsettled = await api.client.delete(f"/api/users/wallets/{wallet.address}", headers=headers)
    assert (unsettled.status_code, error_code(unsettled)) == (409, "UNSETTLED_TRADES")
    assert api.count("SELECT count(*) FROM wallets WHERE user_id = %s", user_id) == 1

    set_state(api.database_url, slot, "settled")
    unlinked = await api.client.delete(f"/api/users/wallets/{wallet.address}", headers=headers)
    assert unlinked.status_code == 200, unlinked.text
    assert unlinked.json()["data"]["wallets"] == []
    assert (
        api.count(
            "SELECT count(*) FROM audit_log WHERE event = 'user.wallet.unlink' AND subject = %s",
            wallet.address,
        )
        == 1
    )


async def test_deleting_an_account_removes_the_person_and_keeps_settled_records_consistent(
    api: Api, smtp_server: MailSink
) -> None:
    leaver = await trader(api, "import")
    seller = await trader(api, "export")
    email = _rows(api, "SELECT email FROM users WHERE id = %s", leaver.user_id)[0][0]
    wallet = Wallet()
    challenge = await api.client.post(
        "/api/users/wallets/challenge",
        json={"walletAddress": wallet.address},
        headers=leaver.headers,
    )
    message = challenge.json()["data"]["message"]
    linked = await api.client.post(
        "/api/users/wallets",
        json={
            "walletAddress": wallet.address,
            "signature": wallet.sign(message),
            "message": message,
        },
        headers=leaver.headers,
    )
    assert linked.status_code == 200, linked.text
    await api.client.post(
        "/api/keys", json={"name": "k", "scopes": ["read"]}, headers=leaver.headers
    )
    settled_slot = make_slot(api.database_url, "settling")
    trade_id = _trade(
        api, settled_slot, (leaver.user_id, leaver.meter_id), (seller.user_id, seller.meter_id)
    )
    open_slot = make_slot(api.database_url, "open")
    bid = await api.client.post(
        "/api/bids",
        json={"timeslotId": open_slot, "meterId": leaver.meter_id, "quantityWh": 10, "price": 5},
        headers=leaver.headers,
    )
    assert bid.status_code == 201, bid.text

    refused = await api.client.delete("/api/users/me", headers=leaver.headers)
    assert (refused.status_code, error_code(refused)) == (409, "UNSETTLED_TRADES")
    assert (
        api.count("SELECT count(*) FROM users WHERE id = %s AND deleted_at IS NULL", leaver.user_id)
        == 1
    )

    set_state(api.database_url, settled_slot, "settled")
    trades_before = _rows(api, "SELECT * FROM trades ORDER BY id")
    deleted = await api.client.delete("/api/users/me", headers=leaver.headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["data"] == {
        "deleted": True,
        "userId": leaver.user_id,
        "cancelledOrders": [bid.json()["data"]["id"]],
    }

    # The person is gone ...
    person = _rows(
        api,
        "SELECT email, password_hash, display_name, disabled, deleted_at IS NOT NULL"
        " FROM users WHERE id = %s",
        leaver.user_id,
    )
    assert person == [(None, None, None, True, True)]
    for table in ("wallets", "api_keys", "refresh_tokens", "account_tokens"):
        assert api.count(f"SELECT count(*) FROM {table} WHERE user_id = %s", leaver.user_id) == 0
    assert api.count("SELECT count(*) FROM meters WHERE owner_id = %s", leaver.user_id) == 0
    assert (
        api.count("SELECT count(*) FROM audit_log WHERE subject = ANY(%s)", [email, wallet.address])
        == 0
    )
    assert (
        api.count(
            "SELECT count(*) FROM audit_log WHERE actor_id = %s AND ip IS NOT NULL", leaver.user_id
        )
        == 0
    )
    # ... the settled records stay, unchanged and consistent, under the pseudonymous id.
    assert _rows(api, "SELECT * FROM trades ORDER BY id") == trades_before
    assert _rows(api, "SELECT buyer_id FROM trades WHERE id = %s", trade_id) == [(leaver.user_id,)]
    assert (
        api.count(
            "SELECT count(*) FROM trades t JOIN orders b ON b.id = t.buy_order_id"
            " WHERE t.buyer_id <> b.user_id OR t.amount <> t.quantity_wh * t.price / 1000"
        )
        == 0
    )
    assert (
        api.count(
            "SELECT count(*) FROM audit_log WHERE event = 'user.delete' AND subject = %s",
            str(leaver.user_id),
        )
        == 1
    )
    # Signed out everywhere; the address is free for a new account.
    gone = await api.client.get("/api/auth/profile", headers=leaver.headers)
    assert gone.status_code == 401
    assert (await _login(api, email)).status_code == 401
    again = await api.register(email)
    assert again["user"]["id"] != leaver.user_id
