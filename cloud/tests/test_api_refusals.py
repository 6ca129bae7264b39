"""The API answers the service's own refusals by their stable code, and nothing else
with a 4xx: a ``ValueError`` (a bug, or data this release does not understand) is
a 500 ``INTERNAL_ERROR``, counted, never a 422 that blames the client. Through
the real app, PostgreSQL and Redis."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from cloud.tests.api_support import Api, error_code, running_api, test_settings
from cloud.tests.market_support import make_slot, set_state, trader

from gridclear.cloud.market.store import SlotNotOpenError
from gridclear.cloud.storage.migrations import MigrationError


def _internal_errors(metrics: str) -> float:
    match = re.search(
        r'^gridclear_http_errors_total\{code="INTERNAL_ERROR"\} (\S+)$', metrics, re.M
    )
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def unknown_states(migrated_db: str) -> Iterator[None]:
    """Slots may hold a state this release does not know (a newer release's, mid-upgrade)."""
    with psycopg.connect(migrated_db, autocommit=True) as db:
        db.execute("ALTER TABLE timeslots DROP CONSTRAINT timeslots_state_check")
    try:
        yield
    finally:
        with psycopg.connect(migrated_db, autocommit=True) as db:
            db.execute("UPDATE timeslots SET state = 'cancelled' WHERE state = 'paused'")
            db.execute(
                "ALTER TABLE timeslots ADD CONSTRAINT timeslots_state_check CHECK (state IN"
                " ('scheduled', 'open', 'closed', 'cleared', 'settling', 'settled', 'cancelled'))"
            )


@pytest.mark.usefixtures("unknown_states")
async def test_a_slot_in_a_state_this_release_does_not_know_is_never_a_validation_error(
    api: Api,
) -> None:
    buyer = await trader(api, "import")
    slot = make_slot(api.database_url)
    placed = await api.client.post(
        "/api/bids",
        json={"timeslotId": slot, "meterId": buyer.meter_id, "quantityWh": 1000, "price": 200},
        headers=buyer.headers,
    )
    assert placed.status_code == 201, placed.text
    order = placed.json()["data"]
    set_state(api.database_url, slot, "paused")

    # Placing and amending: the slot is not open, whatever its state is called.
    again = await api.client.post(
        "/api/bids",
        json={"timeslotId": slot, "meterId": buyer.meter_id, "quantityWh": 1000, "price": 200},
        headers=buyer.headers,
    )
    assert (again.status_code, error_code(again)) == (409, "TIMESLOT_EXPIRED"), again.text
    assert again.json()["error"]["details"] == {"reason": "slot_not_open"}
    amended = await api.client.put(
        f"/api/bids/{order['id']}",
        json={"version": order["version"], "price": 210},
        headers=buyer.headers,
    )
    assert (amended.status_code, error_code(amended)) == (409, "TIMESLOT_EXPIRED"), amended.text

    # Reading it: the server cannot represent the slot, which is its fault (500), counted.
    before = _internal_errors((await api.client.get("/metrics")).text)
    shown = await api.client.get(f"/api/timeslots/{slot}", headers=buyer.headers)
    assert (shown.status_code, error_code(shown)) == (500, "INTERNAL_ERROR"), shown.text
    assert "paused" not in shown.text
    assert _internal_errors((await api.client.get("/metrics")).text) == before + 1


async def test_a_value_error_in_a_route_is_a_500_and_a_refusal_is_answered_by_its_code(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    async with running_api(test_settings(migrated_db, redis_url, redis_prefix)) as api:

        async def value_error() -> None:
            int("not a number")  # a bug: the client sent nothing wrong

        async def not_open() -> None:
            raise SlotNotOpenError("timeslot 7 is closed, not open")

        async def unmapped() -> None:
            raise MigrationError("not meant for a client")

        for path, route in (
            ("/api/test/value-error", value_error),
            ("/api/test/not-open", not_open),
            ("/api/test/unmapped", unmapped),
        ):
            api.app.add_api_route(path, route, methods=["GET"])

        before = _internal_errors((await api.client.get("/metrics")).text)
        bug = await api.client.get("/api/test/value-error")
        assert (bug.status_code, error_code(bug)) == (500, "INTERNAL_ERROR")
        assert "not a number" not in bug.text
        refused = await api.client.get("/api/test/not-open")
        assert (refused.status_code, error_code(refused)) == (409, "TIMESLOT_EXPIRED")
        assert refused.json()["error"]["details"] == {"reason": "slot_not_open"}
        hidden = await api.client.get("/api/test/unmapped")
        assert (hidden.status_code, error_code(hidden)) == (500, "INTERNAL_ERROR")
        assert "not meant" not in hidden.text
        after = _internal_errors((await api.client.get("/metrics")).text)
        assert after == before + 2
