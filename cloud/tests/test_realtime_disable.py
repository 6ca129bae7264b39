"""Losing access closes real-time connections at once, on every API instance: an
account disabled by an admin, a logout, a password change (which signs the other
sessions out). An account disabled behind the API's back (in the database) is
closed by the periodic sweep. Real uvicorn, a second ``gridclear-cloud serve``
process, Redis, PostgreSQL and ``socketio.AsyncClient`` connections; the periodic
sweep runs every 30 s, so a close within the tests' deadline is the prompt path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from cloud.tests.api_support import Clock, bearer, error_code, test_settings
from cloud.tests.test_realtime import (
    Served,
    _until_ready,
    cli_server,
    listening,
    refusal,
    serving,
    signed_in,
)

from gridclear.cloud.api.realtime import RealtimeServer
from gridclear.cloud.settings import Settings


@pytest.fixture
def settings(migrated_db: str, redis_url: str, redis_prefix: str) -> Settings:
    return test_settings(migrated_db, redis_url, redis_prefix)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    async with serving(settings, Clock()) as running:
        yield running


async def _admin(served: Served, email: str) -> dict[str, str]:
    admin_id, token = await signed_in(served.api, email)
    served.api.make_admin(admin_id)
    return bearer(token)


async def test_disabling_an_account_closes_its_connections_on_every_instance(
    served: Served, settings: Settings
) -> None:
    api = served.api
    admin = await _admin(served, "root@example.org")
    victim, token = await signed_in(api, "mallory@example.org")
    _, other = await signed_in(api, "olive@example.org")
    with cli_server(settings) as other_url:
        await _until_ready(other_url)
        async with (
            listening(served.url, token) as here,
            listening(other_url, token) as there,
            listening(other_url, other) as bystander,
        ):
            disabled = await api.client.put(
                f"/api/admin/users/{victim}/disabled", json={"disabled": True}, headers=admin
            )
            assert disabled.status_code == 200, disabled.text
            await here.gone()
            await there.gone()
            assert bystander.client.connected
            await served.events.emit("sentinel", {"still": "here"})
            assert await bystander.next() == ("sentinel", {"still": "here"})
    again = await refusal(served.url, auth={"token": token})
    assert again["data"]["code"] == "INVALID_TOKEN"
    metrics = (await api.client.get("/metrics")).text
    assert 'gridclear_realtime_disconnects_total{reason="account_disabled"} 1.0' in metrics

    # Enabled again, the account connects again (with a new session: REST refused the old).
    enabled = await api.client.put(
        f"/api/admin/users/{victim}/disabled", json={"disabled": False}, headers=admin
    )
    assert enabled.status_code == 200, enabled.text
    login = await api.client.post(
        "/api/auth/login",
        json={"email": "mallory@example.org", "password": "correct horse battery"},
    )
    assert login.status_code == 200, login.text
    async with listening(served.url, login.json()["data"]["accessToken"]) as back:
        assert back.client.connected


async def test_only_admins_disable_accounts_and_never_the_last_admin(served: Served) -> None:
    api = served.api
    admin_id, admin_token = await signed_in(api, "solo-admin@example.org")
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET role = 'participant' WHERE role = 'admin'")
    api.make_admin(admin_id)  # the only admin
    admin = bearer(admin_token)
    user, token = await signed_in(api, "plain@example.org")

    forbidden = await api.client.put(
        f"/api/admin/users/{admin_id}/disabled", json={"disabled": True}, headers=bearer(token)
    )
    assert (forbidden.status_code, error_code(forbidden)) == (403, "FORBIDDEN")
    last = await api.client.put(
        f"/api/admin/users/{admin_id}/disabled", json={"disabled": True}, headers=admin
    )
    assert (last.status_code, error_code(last)) == (409, "CONFLICT")
    missing = await api.client.put(
        "/api/admin/users/999999999/disabled", json={"disabled": True}, headers=admin
    )
    assert (missing.status_code, error_code(missing)) == (404, "NOT_FOUND")
    bad = await api.client.put(
        f"/api/admin/users/{user}/disabled", json={"disabled": "yes"}, headers=admin
    )
    assert (bad.status_code, error_code(bad)) == (422, "VALIDATION_ERROR")
    audit = await api.client.get(
        "/api/admin/audit", params={"event": "user.disable", "actorId": admin_id}, headers=admin
    )
    assert audit.json()["data"] == []


async def test_an_account_disabled_in_the_database_is_closed_by_the_sweep(
    served: Served,
) -> None:
    api = served.api
    victim, token = await signed_in(api, "trent@example.org")
    _, other = await signed_in(api, "peggy@example.org")
    server: RealtimeServer = served.app.state.realtime
    async with listening(served.url, token) as closed, listening(served.url, other) as kept:
        with psycopg.connect(api.database_url, autocommit=True) as conn:
            conn.execute("UPDATE users SET disabled = true WHERE id = %s", (victim,))
        assert await server.sweep() == 1
        await closed.gone()
        assert kept.client.connected


async def test_logout_and_a_password_change_close_connections_at_once(served: Served) -> None:
    api = served.api
    _, first = await signed_in(api, "victor@example.org")
    login = await api.client.post(
        "/api/auth/login", json={"email": "victor@example.org", "password": "correct horse battery"}
    )
    assert login.status_code == 200, login.text
    second = login.json()["data"]["accessToken"]
    _, leaving = await signed_in(api, "walter@example.org")

    async with (
        listening(served.url, first) as signed_out,
        listening(served.url, second) as current,
        listening(served.url, leaving) as logged_out,
    ):
        changed = await api.client.put(
            "/api/auth/password",
            json={"currentPassword": "correct horse battery", "newPassword": "another long one"},
            headers=bearer(second),
        )
        assert changed.status_code == 200, changed.text
        await signed_out.gone()  # the other session's connection
        assert current.client.connected  # the session that changed it stays

        assert (await api.client.post("/api/auth/logout", headers=bearer(leaving))).is_success
        await logged_out.gone()
        assert current.client.connected
