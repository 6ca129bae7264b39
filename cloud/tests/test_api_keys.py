"""API keys: shown once, stored hashed, scoped, revocable, audited."""

from __future__ import annotations

import hashlib

from cloud.tests.api_support import Api, Wallet, bearer, error_code


async def _create(api: Api, token: str, scopes: list[str]) -> dict[str, object]:
    response = await api.client.post(
        "/api/keys", json={"name": "billing export", "scopes": scopes}, headers=bearer(token)
    )
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()["data"]
    return data


async def test_key_is_shown_once_stored_hashed_and_listed_by_prefix(api: Api) -> None:
    session = await api.sign_in(Wallet())
    created = await _create(api, session["accessToken"], ["read"])
    key = str(created["key"])
    assert key.startswith(f"gck_{created['prefix']}_")
    listed = await api.client.get("/api/keys", headers=bearer(session["accessToken"]))
    entries = listed.json()["data"]
    assert [e["prefix"] for e in entries] == [created["prefix"]]
    assert key not in listed.text
    assert "key" not in entries[0]
    digest = hashlib.sha256(key.encode()).digest()
    assert api.count("SELECT count(*) FROM api_keys WHERE key_hash = %s", digest) == 1
    assert api.count("SELECT count(*) FROM api_keys WHERE prefix = %s", key) == 0


async def test_key_authenticates_by_bearer_and_header_within_its_scopes(api: Api) -> None:
    session = await api.sign_in(Wallet())
    key = str((await _create(api, session["accessToken"], ["read", "trading"]))["key"])
    for headers in (bearer(key), {"X-API-Key": key}):
        validate = await api.client.get("/api/auth/validate", headers=headers)
        assert validate.status_code == 200
        assert validate.json()["data"]["kind"] == "api_key"
        assert validate.json()["data"]["scopes"] == ["read", "trading"]
    # Keys cannot manage keys, accounts or sessions.
    for method, path in (("GET", "/api/keys"), ("POST", "/api/auth/logout")):
        response = await api.client.request(method, path, headers=bearer(key))
        assert response.status_code == 403
        assert error_code(response) == "FORBIDDEN"
    wrong = key[:-3] + ("aaa" if not key.endswith("aaa") else "bbb")
    assert error_code(await api.client.get("/api/auth/validate", headers=bearer(wrong))) == (
        "INVALID_TOKEN"
    )


async def test_revoked_key_is_refused_and_audited(api: Api) -> None:
    session = await api.sign_in(Wallet())
    created = await _create(api, session["accessToken"], ["meter-data"])
    key = str(created["key"])
    revoke = await api.client.delete(
        f"/api/keys/{created['id']}", headers=bearer(session["accessToken"])
    )
    assert revoke.status_code == 200
    assert revoke.json()["data"]["revokedAt"] is not None
    refused = await api.client.get("/api/auth/validate", headers={"X-API-Key": key})
    assert refused.status_code == 401
    assert error_code(refused) == "INVALID_TOKEN"
    events = api.count(
        "SELECT count(*) FROM audit_log WHERE subject = %s AND event IN"
        " ('apikey.create', 'apikey.revoke')",
        str(created["id"]),
    )
    assert events == 2


async def test_a_user_cannot_revoke_someone_elses_key(api: Api) -> None:
    owner = await api.sign_in(Wallet())
    created = await _create(api, owner["accessToken"], ["read"])
    other = await api.sign_in(Wallet())
    response = await api.client.delete(
        f"/api/keys/{created['id']}", headers=bearer(other["accessToken"])
    )
    assert response.status_code == 404
    assert error_code(response) == "NOT_FOUND"
    assert (
        await api.client.get("/api/auth/validate", headers={"X-API-Key": str(created["key"])})
    ).status_code == 200
