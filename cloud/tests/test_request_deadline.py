"""Request deadlines: a request that runs out of time is answered 503 with Retry-After
and its work is cancelled on the database server, not left running. A statement held
by a row lock (taken here, on a connection of the test's own) is the slow query;
``pg_stat_activity`` is the server's own account of what still runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from cloud.tests.api_support import bearer, error_code, running_api, test_settings

from gridclear.devtools.waiting import until

_BLOCKED = "UPDATE users SET display_name%"


def _running(url: str) -> list[tuple[str, str | None]]:
    """(state, wait event type) of every other backend running the profile update."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state, wait_event_type FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND query LIKE %s AND state <> 'idle'",
            (_BLOCKED,),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


@contextmanager
def _row_locked(url: str, user_id: int) -> Iterator[None]:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user_id,))
        try:
            yield
        finally:
            conn.rollback()


async def test_a_request_past_its_deadline_is_503_and_its_query_is_cancelled(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    # The statement timeout is far away: only the deadline can stop the query.
    settings = test_settings(
        migrated_db,
        redis_url,
        redis_prefix,
        request_timeout_s=1.0,
        db_statement_timeout_ms=600_000,
    )
    async with running_api(settings) as api:
        session = await api.register("slow@example.org")
        user_id = int(session["user"]["id"])
        with _row_locked(migrated_db, user_id):
            request = asyncio.create_task(
                api.client.put(
                    "/api/users/profile",
                    json={"displayName": "never stored"},
                    headers=bearer(session["accessToken"]),
                )
            )
            # The query reached the server and waits there for the lock ...
            await until(
                lambda: _running(migrated_db) == [("active", "Lock")],
                timeout_s=30,
                what="the profile update waiting on the row lock",
            )
            response = await request
            assert (response.status_code, error_code(response)) == (503, "DEADLINE_EXCEEDED")
            assert response.headers["retry-after"] == "2"
            details = response.json()["error"]["details"]
            assert details == {"retryAfter": 2, "deadlineSeconds": 1.0}
            # ... and is gone from it while the lock is still held: cancelled, not left.
            await until(
                lambda: _running(migrated_db) == [],
                timeout_s=30,
                what="the cancelled update to leave the server",
            )
        assert api.count("SELECT count(*) FROM users WHERE display_name IS NOT NULL") == 0
        # The connection went back to the pool usable.
        fine = await api.client.get("/api/users/profile", headers=bearer(session["accessToken"]))
        assert fine.status_code == 200
        metrics = (await api.client.get("/metrics")).text
        assert 'code="DEADLINE_EXCEEDED"' in metrics


async def test_the_statement_timeout_stops_a_query_the_server_side(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    settings = test_settings(
        migrated_db,
        redis_url,
        redis_prefix,
        request_timeout_s=60.0,
        db_statement_timeout_ms=500,
    )
    async with running_api(settings) as api:
        session = await api.register("stuck@example.org")
        with _row_locked(migrated_db, int(session["user"]["id"])):
            response = await api.client.put(
                "/api/users/profile",
                json={"displayName": "never stored"},
                headers=bearer(session["accessToken"]),
            )
            assert (response.status_code, error_code(response)) == (503, "SERVICE_UNAVAILABLE")
            assert "retry-after" in response.headers
            assert _running(migrated_db) == []
