"""The devices and meters API over the real app, database and Redis: operators enrol
gateways and bind meters; owners see their own meters, readings and interval energy and
nobody else's; the one-time token works once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
from cloud.tests.api_support import Api, bearer, error_code
from cloud.tests.ingest_support import RECENT_MS

from gridclear.cloud.ingest.keys import KeyCache
from gridclear.cloud.ingest.verify import classify
from gridclear.cloud.ingest.writer import BatchWriter
from gridclear.cloud.intervals import refresh_intervals
from gridclear.shared.keys import DeviceKey
from gridclear.shared.protocol import ClockState, ReadingsPayload, sign_readings
from gridclear.shared.readings import Quality, Reading
from gridclear.shared.topics import readings_topic

T0 = RECENT_MS  # a slot boundary, half a day ago
SLOT = 15 * 60 * 1000


def _ingest(url: str, device_id: str, key: DeviceKey, meter: str) -> None:
    """Store 31 minutes of a flat 2000 W meter (one sample a minute) through the writer."""
    flagged = {20: frozenset({Quality.ESTIMATED}), 22: frozenset({Quality.CLOCK_UNSYNCED})}
    readings = tuple(
        Reading(
            meter=meter,
            ts_ms=T0 + m * 60_000,
            import_wh=2000 * m // 60,
            power_w=2000,
            quality=flagged.get(m, frozenset()),
        )
        for m in range(31)
    )
    payload = ReadingsPayload(
        device_id=device_id,
        seq=1,
        signed_ms=T0 + 31 * 60_000,
        prev=None,
        clock=ClockState(synced=True),
        readings=readings,
    )
    token = sign_readings(payload, key).token.encode()
    with psycopg.connect(url, autocommit=True) as conn:
        keys = KeyCache().refresh(conn)
        item = classify(readings_topic(device_id), token, keys=keys, received_ms=T0 + 32 * 60_000)
        writer = BatchWriter(url)
        result = writer.write([item])
        writer.close()
        assert result.stored_readings == 31
        refresh_intervals(conn)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


async def _operator(api: Api) -> str:
    session = await api.register(f"op-{uuid.uuid4().hex[:6]}@example.org")
    api.make_admin(session["user"]["id"])
    token: str = session["accessToken"]
    return token


async def test_operators_enrol_gateways_and_owners_see_only_their_meters(api: Api) -> None:
    operator = bearer(await _operator(api))
    owner_session = await api.register(f"owner-{uuid.uuid4().hex[:6]}@example.org")
    owner = bearer(owner_session["accessToken"])
    stranger = bearer((await api.register(f"x-{uuid.uuid4().hex[:6]}@example.org"))["accessToken"])
    device_id = f"gw-{uuid.uuid4().hex[:8]}"
    key = DeviceKey.generate()

    created = await api.client.post(
        "/api/devices", json={"deviceId": device_id, "site": "co-op"}, headers=operator
    )
    assert created.status_code == 201, created.text
    token = created.json()["data"]["enrollment"]["token"]
    assert created.json()["data"]["device"]["activeKeys"] == 0
    # Participants cannot manage gateways.
    refused = await api.client.get("/api/devices", headers=owner)
    assert refused.status_code == 403
    assert error_code(refused) == "FORBIDDEN"

    enrol = {"token": token, "publicKey": key.public.x, "deviceId": device_id}
    enrolled = await api.client.post("/api/devices/enroll", json=enrol)
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json()["data"]["kid"] == key.kid
    again = await api.client.post("/api/devices/enroll", json=enrol)
    assert again.status_code == 401
    assert error_code(again) == "INVALID_TOKEN"

    _ingest(api.database_url, device_id, key, "m1")
    meters = (await api.client.get("/api/meters", headers=operator)).json()["data"]
    (meter,) = [m for m in meters if m["deviceId"] == device_id]
    assert meter["ownerId"] is None
    assert (await api.client.get("/api/my/meters", headers=owner)).json()["data"] == []

    bound = await api.client.put(
        f"/api/devices/{device_id}/meters/m1",
        json={"ownerId": owner_session["user"]["id"], "role": "both", "model": "sdm630"},
        headers=operator,
    )
    assert bound.status_code == 200, bound.text
    mine = (await api.client.get("/api/my/meters", headers=owner)).json()["data"]
    assert [(m["id"], m["role"], m["importWh"]) for m in mine] == [(meter["id"], "both", 1000)]

    window = {"from": _iso(T0), "to": _iso(T0 + 4 * SLOT)}
    raw = await api.client.get(f"/api/meters/{meter['id']}/readings", params=window, headers=owner)
    assert raw.status_code == 200, raw.text
    assert len(raw.json()["data"]) == 31
    samples = raw.json()["data"]
    assert [(s["quality"], s["qualityFlags"]) for s in samples[19:23]] == [
        (0, []),
        (1, ["estimated"]),
        (0, []),
        (8, ["clock_unsynced"]),
    ]
    buckets = await api.client.get(
        f"/api/meters/{meter['id']}/readings", params={**window, "bucket": "15m"}, headers=owner
    )
    assert [(b["samples"], b["importWh"]) for b in buckets.json()["data"]] == [
        (15, 466),
        (15, 966),
        (1, 1000),
    ]
    assert [b["qualityFlags"] for b in buckets.json()["data"]] == [
        [],
        ["estimated", "clock_unsynced"],
        [],
    ]
    intervals = await api.client.get(
        f"/api/meters/{meter['id']}/intervals", params=window, headers=owner
    )
    assert [(i["importWh"], i["complete"]) for i in intervals.json()["data"]] == [
        (500, True),
        (500, True),
    ]
    # Someone else's meter does not exist, as far as a stranger can tell.
    hidden = await api.client.get(f"/api/meters/{meter['id']}", headers=stranger)
    assert hidden.status_code == 404
    assert error_code(hidden) == "NOT_FOUND"
    hidden_readings = await api.client.get(
        f"/api/meters/{meter['id']}/readings", params=window, headers=stranger
    )
    assert hidden_readings.status_code == 404

    devices = (await api.client.get("/api/devices", headers=operator)).json()["data"]
    (mine_device,) = [d for d in devices if d["deviceId"] == device_id]
    assert (mine_device["activeKeys"], mine_device["lastSeq"], mine_device["site"]) == (
        1,
        1,
        "co-op",
    )


async def test_keys_rotate_and_revoke_and_bad_input_is_refused_clearly(api: Api) -> None:
    operator = bearer(await _operator(api))
    device_id = f"gw-{uuid.uuid4().hex[:8]}"
    first, second = DeviceKey.generate(), DeviceKey.generate()
    created = await api.client.post(
        "/api/devices",
        json={"deviceId": device_id, "publicKey": first.public.x},
        headers=operator,
    )
    assert created.status_code == 201, created.text
    assert created.json()["data"]["key"]["kid"] == first.kid
    duplicate = await api.client.post(
        "/api/devices", json={"deviceId": device_id}, headers=operator
    )
    assert duplicate.status_code == 409
    assert error_code(duplicate) == "CONFLICT"
    bad = await api.client.post("/api/devices", json={"deviceId": "no/slash"}, headers=operator)
    assert bad.status_code == 422

    rotated = await api.client.post(
        f"/api/devices/{device_id}/keys", json={"publicKey": second.public.x}, headers=operator
    )
    assert rotated.status_code == 201, rotated.text
    revoked = await api.client.post(
        f"/api/devices/keys/{second.kid}/revoke", json={"reason": "lost"}, headers=operator
    )
    assert revoked.status_code == 200, revoked.text
    keys = (await api.client.get(f"/api/devices/{device_id}/keys", headers=operator)).json()
    states = {
        k["kid"]: (k["validUntil"] is not None, k["revokedAt"] is not None) for k in keys["data"]
    }
    assert states == {first.kid: (True, False), second.kid: (False, True)}
    unknown = await api.client.post(
        "/api/devices/enroll", json={"token": "gce_" + "x" * 43, "publicKey": first.public.x}
    )
    assert unknown.status_code == 401
    stats = await api.client.get("/api/devices/quarantine", headers=operator)
    assert stats.status_code == 200
    assert isinstance(stats.json()["data"], list)


async def test_without_a_window_readings_and_intervals_end_at_the_markets_time(
    api: Api,
) -> None:
    # An accelerated demo's market (and its gateways) run half a day off the wall clock:
    # the default windows follow the market's clock, so they show what is traded now.
    operator = bearer(await _operator(api))
    device_id = f"gw-{uuid.uuid4().hex[:8]}"
    key = DeviceKey.generate()
    created = await api.client.post(
        "/api/devices", json={"deviceId": device_id, "site": "demo"}, headers=operator
    )
    token = created.json()["data"]["enrollment"]["token"]
    enrol = {"token": token, "publicKey": key.public.x, "deviceId": device_id}
    assert (await api.client.post("/api/devices/enroll", json=enrol)).status_code == 201
    _ingest(api.database_url, device_id, key, "m1")
    meters = (await api.client.get("/api/meters", headers=operator)).json()["data"]
    (meter,) = [m for m in meters if m["deviceId"] == device_id]

    def defaults() -> tuple[int, int]:
        return len(readings.json()["data"]), len(intervals.json()["data"])

    readings = await api.client.get(f"/api/meters/{meter['id']}/readings", headers=operator)
    intervals = await api.client.get(f"/api/meters/{meter['id']}/intervals", headers=operator)
    assert defaults() == (0, 2)  # half a day ago: outside the last hour, inside the last day
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO market_clock (market_at, db_at, speed) VALUES (%s, clock_timestamp(), 1)",
            (datetime.fromtimestamp((T0 + 40 * 60_000) / 1000, tz=UTC),),
        )
    try:
        readings = await api.client.get(f"/api/meters/{meter['id']}/readings", headers=operator)
        intervals = await api.client.get(f"/api/meters/{meter['id']}/intervals", headers=operator)
        assert readings.status_code == 200, readings.text
        # The market's last hour holds all 31 samples, its last day both slots.
        assert defaults() == (31, 2)
    finally:
        with psycopg.connect(api.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM market_clock")
