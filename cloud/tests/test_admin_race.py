"""The last active admin cannot be demoted, even by two admins demoting each other at once."""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
from cloud.tests.api_support import Api, bearer, fresh_database, running_api, test_settings

from gridclear.cloud.storage.migrations import migrate


async def _admin(api: Api) -> tuple[int, dict[str, str]]:
    session = await api.register(f"adm-{uuid.uuid4().hex[:8]}@example.org")
    api.make_admin(session["user"]["id"])
    return session["user"]["id"], bearer(session["accessToken"])


def _wait_for_blocked(url: str, count: int) -> None:
    """Poll until ``count`` other backends wait on a row lock (deadline 20 s)."""
    deadline = time.monotonic() + 20
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            assert row is not None
            if row[0] >= count:
                return
            assert time.monotonic() < deadline, f"{row[0]} of {count} requests blocked"
            time.sleep(0.01)


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    postgres_admin_url: str, redis_url: str, redis_prefix: str
) -> None:
    with fresh_database(postgres_admin_url) as url:
        migrate(url)
        await _race(url, redis_url, redis_prefix)


async def _race(fresh_db_url: str, redis_url: str, redis_prefix: str) -> None:
    settings = test_settings(fresh_db_url, redis_url, redis_prefix)
    async with running_api(settings) as api:
        a_id, a = await _admin(api)
        b_id, b = await _admin(api)
        # Hold both accounts' rows while the two demotions arrive, so that each has
        # made whatever checks it makes before either writes: the widest race window.
        with psycopg.connect(fresh_db_url) as holder:
            holder.execute("SELECT id FROM users WHERE id IN (%s, %s) FOR UPDATE", (a_id, b_id))
            demote_b = asyncio.create_task(
                api.client.put(
                    f"/api/admin/users/{b_id}/role", json={"role": "participant"}, headers=a
                )
            )
            demote_a = asyncio.create_task(
                api.client.put(
                    f"/api/admin/users/{a_id}/role", json={"role": "participant"}, headers=b
                )
            )
            await asyncio.to_thread(_wait_for_blocked, fresh_db_url, 2)
            holder.rollback()
            answers = sorted([(await demote_a).status_code, (await demote_b).status_code])
        assert answers == [200, 409]
        admins = api.count("SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled")
        assert admins == 1
