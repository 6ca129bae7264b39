"""Input at the edges of what the API's types allow: NUL characters, calendar-edge
date-times, booleans where a number is meant. Each is a 422 naming the field, refused
before any work is done; a refused request stores nothing; a stored row the client
libraries cannot represent never breaks a listing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
from cloud.tests.api_support import Api, bearer, error_code

from gridclear.shared.keys import DeviceKey

FAR_FUTURE = "9999-12-31T23:59:59-14:00"  # 10000-01-01T13:59:59Z: past Python's datetime
CALENDAR_EDGES = [
    "0001-01-01T00:30:00Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59Z",
    FAR_FUTURE,
]


def _locations(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 422, response.text
    assert error_code(response) == "VALIDATION_ERROR"
    return [item["location"] for item in response.json()["error"]["details"]]


async def _operator(api: Api) -> dict[str, str]:
    session = await api.register(f"op-{uuid.uuid4().hex[:6]}@example.org")
    api.make_admin(session["user"]["id"])
    return bearer(session["accessToken"])


async def _device_with_key(api: Api, operator: dict[str, str]) -> tuple[str, str]:
    device_id = f"gw-{uuid.uuid4().hex[:8]}"
    created = await api.client.post(
        "/api/devices",
        json={"deviceId": device_id, "publicKey": DeviceKey.generate().public.x},
        headers=operator,
    )
    assert created.status_code == 201, created.text
    kid: str = created.json()["data"]["key"]["kid"]
    return device_id, kid


async def test_nul_in_body_query_or_path_strings_is_a_validation_error_naming_it(
    api: Api,
) -> None:
    # Unauthenticated routes: refused before any password is hashed or row is read.
    for route in ("/api/auth/login", "/api/auth/register"):
        response = await api.client.post(
            route, json={"email": "nul\u0000@example.org", "password": "a long passphrase"}
        )
        assert _locations(response) == [["body", "email"]]
        assert "\u0000" not in response.text
    response = await api.client.post(
        "/api/auth/login", json={"email": "someone@example.org", "password": "pass\u0000word!!"}
    )
    assert _locations(response) == [["body", "password"]]

    operator = await _operator(api)
    profile = await api.client.put(
        "/api/users/profile", json={"displayName": "a\u0000b"}, headers=operator
    )
    assert _locations(profile) == [["body", "displayName"]]
    nested = await api.client.post(
        "/api/keys", json={"name": "ok", "scopes": ["read", "tr\u0000ding"]}, headers=operator
    )
    assert _locations(nested) == [["body", "scopes", "1"]]
    query = await api.client.get("/api/admin/audit?event=login%00", headers=operator)
    assert _locations(query) == [["query", "event"]]
    path = await api.client.get("/api/devices/gw%00x", headers=operator)
    assert _locations(path) == [["path"]]
    # An escaped backslash followed by "u0000" is text, not a NUL.
    fine = await api.client.put(
        "/api/users/profile", json={"displayName": "a\\u0000b"}, headers=operator
    )
    assert fine.status_code == 200, fine.text
    assert fine.json()["data"]["displayName"] == "a\\u0000b"
    audited = api.count("SELECT count(*) FROM audit_log WHERE subject LIKE %s", "nul%")
    assert audited == 0


async def test_calendar_edge_times_on_readings_and_intervals_are_validation_errors(
    api: Api,
) -> None:
    operator = await _operator(api)
    device_id, _ = await _device_with_key(api, operator)
    bound = await api.client.put(
        f"/api/devices/{device_id}/meters/m1", json={"role": "import"}, headers=operator
    )
    assert bound.status_code == 200, bound.text
    meter_id = bound.json()["data"]["id"]
    for edge in CALENDAR_EDGES:
        for series in ("readings", "intervals"):
            for name in ("from", "to"):
                response = await api.client.get(
                    f"/api/meters/{meter_id}/{series}", params={name: edge}, headers=operator
                )
                assert _locations(response) == [["query", name]], (series, name, edge)
    audit = await api.client.get(
        "/api/admin/audit", params={"since": "0001-01-01T00:00:00+14:00"}, headers=operator
    )
    assert _locations(audit) == [["query", "since"]]
    # Ordinary times still work, with or without an offset.
    ordinary = await api.client.get(
        f"/api/meters/{meter_id}/readings",
        params={"from": "2026-01-01T00:00:00", "to": "2026-01-01T01:00:00+01:00"},
        headers=operator,
    )
    assert ordinary.status_code == 422  # from is not before to (both are 00:00 UTC)
    ordinary = await api.client.get(
        f"/api/meters/{meter_id}/readings",
        params={"from": "2026-01-01T00:00:00", "to": "2026-01-01T01:00:00Z"},
        headers=operator,
    )
    assert ordinary.status_code == 200, ordinary.text


async def test_a_far_future_api_key_expiry_is_refused_and_stores_nothing(api: Api) -> None:
    session = await api.register(f"k-{uuid.uuid4().hex[:6]}@example.org")
    headers = bearer(session["accessToken"])
    for edge in CALENDAR_EDGES:
        response = await api.client.post(
            "/api/keys",
            json={"name": "edge", "scopes": ["read"], "expiresAt": edge},
            headers=headers,
        )
        assert _locations(response) == [["body", "expiresAt"]], edge
    stored = api.count("SELECT count(*) FROM api_keys WHERE user_id = %s", session["user"]["id"])
    assert stored == 0
    listed = await api.client.get("/api/keys", headers=headers)
    assert listed.status_code == 200
    assert listed.json()["data"] == []


async def test_a_far_future_key_revocation_is_refused_and_stores_nothing(api: Api) -> None:
    operator = await _operator(api)
    device_id, kid = await _device_with_key(api, operator)
    for edge in CALENDAR_EDGES:
        response = await api.client.post(
            f"/api/devices/keys/{kid}/revoke", json={"at": edge}, headers=operator
        )
        assert _locations(response) == [["body", "at"]], edge
    revoked = api.count(
        "SELECT count(*) FROM device_keys WHERE kid = %s AND revoked_at IS NOT NULL", kid
    )
    assert revoked == 0
    listed = await api.client.get(f"/api/devices/{device_id}/keys", headers=operator)
    assert listed.status_code == 200
    assert listed.json()["data"][0]["revokedAt"] is None


async def test_stored_times_beyond_the_calendar_never_break_a_listing(api: Api) -> None:
    """Rows written before the edge checks existed (or by hand) still list."""
    operator = await _operator(api)
    device_id, kid = await _device_with_key(api, operator)
    created = await api.client.post(
        "/api/keys", json={"name": "old", "scopes": ["read"]}, headers=operator
    )
    assert created.status_code == 201
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE device_keys SET revoked_at = '10000-01-01 13:59:59+00',"
            " valid_from = timestamptz '0001-01-01 00:00:00+00' - interval '1 day' WHERE kid = %s",
            (kid,),
        )
        conn.execute(
            "UPDATE api_keys SET expires_at = '10000-01-01 13:59:59+00' WHERE id = %s",
            (created.json()["data"]["id"],),
        )
    keys = await api.client.get(f"/api/devices/{device_id}/keys", headers=operator)
    assert keys.status_code == 200, keys.text
    shown: dict[str, Any] = keys.json()["data"][0]
    assert shown["revokedAt"].startswith("9999-12-30T00:00:00")
    assert shown["validFrom"].startswith("0001-01-02T00:00:00")
    own = await api.client.get("/api/keys", headers=operator)
    assert own.status_code == 200, own.text
    assert own.json()["data"][0]["expiresAt"].startswith("9999-12-30T00:00:00")


async def test_booleans_are_not_numbers(api: Api) -> None:
    operator = await _operator(api)
    device_id, _ = await _device_with_key(api, operator)
    owner = await api.client.put(
        f"/api/devices/{device_id}/meters/m1", json={"ownerId": True}, headers=operator
    )
    assert _locations(owner) == [["body", "ownerId"]]
    ttl = await api.client.post(
        "/api/devices",
        json={"deviceId": f"gw-{uuid.uuid4().hex[:8]}", "tokenTtlHours": True},
        headers=operator,
    )
    assert _locations(ttl) == [["body", "tokenTtlHours"]]
    # Whole numbers are still numbers where a float is meant.
    hours = await api.client.post(
        "/api/devices",
        json={"deviceId": f"gw-{uuid.uuid4().hex[:8]}", "tokenTtlHours": 2},
        headers=operator,
    )
    assert hours.status_code == 201, hours.text
