"""Access and refresh tokens refused as a security reviewer expects; roles enforced."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import timedelta

from cloud.tests.api_support import Api, Clock, Wallet, bearer, error_code
from cryptography.hazmat.primitives import serialization

from gridclear.cloud.identity.tokens import AccessTokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def _refused(api: Api, token: str, code: str = "INVALID_TOKEN") -> None:
    response = await api.client.get("/api/auth/profile", headers=bearer(token))
    assert response.status_code == 401
    assert error_code(response) == code
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_token_with_alg_none_is_refused(api: Api) -> None:
    session = await api.sign_in(Wallet())
    claims = _claims_of(session["accessToken"])
    forged = _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(json.dumps(claims).encode()) + "."
    await _refused(api, forged)


async def test_hs256_signed_with_the_public_key_is_refused(api: Api) -> None:
    session = await api.sign_in(Wallet())
    claims = _claims_of(session["accessToken"])
    claims["role"] = "admin"
    public_pem = (
        api.settings.signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = (
        _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps(claims).encode())
    ).encode()
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    await _refused(api, signing_input.decode() + "." + _b64(signature))


async def test_expired_token_is_refused_as_expired(api: Api) -> None:
    session = await api.sign_in(Wallet())
    past = Clock()
    past.advance(-2 * api.settings.access_token_ttl_s)
    old = AccessTokens(
        private_key=api.settings.signing_key(),
        issuer=api.settings.jwt_issuer,
        audience=api.settings.jwt_audience,
        ttl=timedelta(seconds=api.settings.access_token_ttl_s),
        clock=past,
    )
    token, _ = old.issue(
        user_id=session["user"]["id"],
        role="participant",
        session_id=uuid.UUID(str(_claims_of(session["accessToken"])["sid"])),
    )
    await _refused(api, token, "TOKEN_EXPIRED")


async def test_a_token_accepted_before_is_refused_once_it_expires(api: Api) -> None:
    # Verified tokens are cached by their text: the cache must not outlive the token.
    session = await api.sign_in(Wallet())
    token = session["accessToken"]
    profile = await api.client.get("/api/auth/profile", headers=bearer(token))
    assert profile.status_code == 200, profile.text
    api.clock.advance(api.settings.access_token_ttl_s + 1)
    await _refused(api, token, "TOKEN_EXPIRED")


async def test_tampered_token_is_refused(api: Api) -> None:
    session = await api.sign_in(Wallet())
    header, payload, signature = session["accessToken"].split(".")
    claims = _claims_of(session["accessToken"])
    claims["sub"] = str(int(str(claims["sub"])) + 1)
    await _refused(api, f"{header}.{_b64(json.dumps(claims).encode())}.{signature}")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    await _refused(api, f"{header}.{payload}.{flipped}")
    await _refused(api, "not-a-jwt")


async def test_token_of_another_issuer_key_is_refused(api: Api) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    session = await api.sign_in(Wallet())
    stranger = AccessTokens(
        private_key=Ed25519PrivateKey.generate(),
        issuer=api.settings.jwt_issuer,
        audience=api.settings.jwt_audience,
        ttl=timedelta(minutes=5),
        clock=Clock(),
    )
    token, _ = stranger.issue(user_id=session["user"]["id"], role="admin", session_id=uuid.uuid4())
    await _refused(api, token)


async def test_missing_credentials_ask_for_authentication(api: Api) -> None:
    response = await api.client.get("/api/auth/profile")
    assert response.status_code == 401
    assert error_code(response) == "AUTHENTICATION_REQUIRED"
    basic = await api.client.get("/api/auth/profile", headers={"Authorization": "Basic eDp5"})
    assert error_code(basic) == "INVALID_TOKEN"


async def test_reused_refresh_token_revokes_the_whole_family(api: Api) -> None:
    session = await api.sign_in(Wallet())
    first = await api.client.post(
        "/api/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert first.status_code == 200
    rotated = first.json()["data"]

    replay = await api.client.post(
        "/api/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert replay.status_code == 401
    assert error_code(replay) == "REFRESH_TOKEN_REUSED"

    # The legitimate successor dies with the family, and so do its access tokens.
    successor = await api.client.post(
        "/api/auth/refresh", json={"refreshToken": rotated["refreshToken"]}
    )
    assert error_code(successor) == "INVALID_TOKEN"
    await _refused(api, rotated["accessToken"])
    await _refused(api, session["accessToken"])
    user_id = session["user"]["id"]
    live = "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL AND user_id = %s"
    assert api.count(live, user_id) == 0
    reuse = "SELECT count(*) FROM audit_log WHERE event = 'auth.refresh.reuse' AND actor_id = %s"
    assert api.count(reuse, user_id) == 1
    # Other sessions of the same user are untouched.
    again = await api.sign_in(Wallet())
    ok = await api.client.get("/api/auth/profile", headers=bearer(again["accessToken"]))
    assert ok.status_code == 200


async def test_expired_refresh_token_is_refused(api: Api) -> None:
    session = await api.sign_in(Wallet())
    api.clock.advance(api.settings.refresh_token_ttl_s + 1)
    response = await api.client.post(
        "/api/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert response.status_code == 401
    assert error_code(response) == "INVALID_TOKEN"


async def test_participant_is_refused_admin_routes_and_admin_is_let_in(api: Api) -> None:
    participant = await api.sign_in(Wallet())
    for method, path, body in (
        ("GET", "/api/admin/users", None),
        ("GET", "/api/admin/audit", None),
        ("PUT", f"/api/admin/users/{participant['user']['id']}/role", {"role": "admin"}),
    ):
        response = await api.client.request(
            method, path, json=body, headers=bearer(participant["accessToken"])
        )
        assert response.status_code == 403, path
        assert error_code(response) == "FORBIDDEN"
    role = "SELECT count(*) FROM users WHERE id = %s AND role = 'participant'"
    assert api.count(role, participant["user"]["id"]) == 1

    admin = await api.sign_in(Wallet())
    api.make_admin(admin["user"]["id"])
    headers = bearer(admin["accessToken"])  # the role is read per request: no new token needed
    promoted = await api.client.put(
        f"/api/admin/users/{participant['user']['id']}/role",
        json={"role": "operator"},
        headers=headers,
    )
    assert promoted.status_code == 200
    assert promoted.json()["data"]["role"] == "operator"
    audit = await api.client.get(
        "/api/admin/audit",
        params={"event": "user.role.change", "actorId": admin["user"]["id"]},
        headers=headers,
    )
    entries = audit.json()["data"]
    assert len(entries) == 1
    assert entries[0]["actorId"] == admin["user"]["id"]
    assert entries[0]["details"] == {"from": "participant", "to": "operator"}
    assert entries[0]["ip"] == "127.0.0.1"


async def test_the_last_admin_cannot_be_demoted(api: Api) -> None:
    admin = await api.sign_in(Wallet())
    api.count(
        "WITH d AS (UPDATE users SET role = 'participant' RETURNING 1) SELECT count(*) FROM d"
    )
    api.make_admin(admin["user"]["id"])
    demote = await api.client.put(
        f"/api/admin/users/{admin['user']['id']}/role",
        json={"role": "participant"},
        headers=bearer(admin["accessToken"]),
    )
    assert demote.status_code == 409
    assert error_code(demote) == "CONFLICT"
    assert api.count("SELECT count(*) FROM users WHERE role = 'admin'") == 1
