"""Wallet sign-in end to end: real Ed25519 keys, real Redis and PostgreSQL."""

from __future__ import annotations

import httpx
import psycopg
from cloud.tests.api_support import DOMAIN, Api, Wallet, bearer, error_code


async def _challenge(api: Api, wallet: Wallet) -> str:
    response = await api.client.post("/api/auth/init", json={"walletAddress": wallet.address})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert set(body["data"]) == {"nonce", "message", "expiresAt"}
    message: str = body["data"]["message"]
    return message


async def _verify(
    api: Api, wallet: Wallet, message: str, signature: str | None = None
) -> httpx.Response:
    return await api.client.post(
        "/api/auth/verify",
        json={
            "walletAddress": wallet.address,
            "signature": signature or wallet.sign(message),
            "message": message,
        },
    )


def _users(api: Api) -> int:
    return api.count("SELECT count(*) FROM users")


async def test_full_flow_sign_in_use_refresh_logout_then_refused(api: Api) -> None:
    wallet = Wallet()
    message = await _challenge(api, wallet)
    assert message.startswith(f"{DOMAIN} wants you to sign in with your Solana account:\n")
    assert f"\n{wallet.address}\n" in message
    response = await _verify(api, wallet, message)
    assert response.status_code == 200
    session = response.json()["data"]
    assert session["user"]["walletAddress"] == wallet.address
    assert session["user"]["role"] == "participant"
    assert session["expiresIn"] == api.settings.access_token_ttl_s

    profile = await api.client.get("/api/auth/profile", headers=bearer(session["accessToken"]))
    assert profile.status_code == 200
    assert profile.json() == {"success": True, "data": session["user"]}

    refreshed = await api.client.post(
        "/api/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert refreshed.status_code == 200
    new = refreshed.json()["data"]
    assert new["refreshToken"] != session["refreshToken"]
    assert (await api.client.get("/api/auth/validate", headers=bearer(new["accessToken"]))).json()[
        "data"
    ]["userId"] == session["user"]["id"]

    logout = await api.client.post("/api/auth/logout", headers=bearer(new["accessToken"]))
    assert logout.status_code == 200
    for token in (new["accessToken"], session["accessToken"]):
        after = await api.client.get("/api/auth/profile", headers=bearer(token))
        assert after.status_code == 401
        assert error_code(after) == "INVALID_TOKEN"
    again = await api.client.post("/api/auth/refresh", json={"refreshToken": new["refreshToken"]})
    assert again.status_code == 401
    assert error_code(again) == "INVALID_TOKEN"


async def test_second_sign_in_of_a_wallet_finds_the_same_account(api: Api) -> None:
    wallet = Wallet()
    first = await api.sign_in(wallet)
    second = await api.sign_in(wallet)
    assert first["user"]["id"] == second["user"]["id"]


async def test_reused_nonce_is_refused(api: Api) -> None:
    wallet = Wallet()
    message = await _challenge(api, wallet)
    assert (await _verify(api, wallet, message)).status_code == 200
    users = _users(api)
    replay = await _verify(api, wallet, message)
    assert replay.status_code == 401
    assert error_code(replay) == "NONCE_INVALID"
    assert _users(api) == users


async def test_expired_nonce_is_refused_and_nothing_is_created(api: Api) -> None:
    wallet = Wallet()
    message = await _challenge(api, wallet)
    api.clock.advance(api.settings.nonce_ttl_s + 1)
    response = await _verify(api, wallet, message)
    assert response.status_code == 401
    assert error_code(response) == "NONCE_EXPIRED"
    assert api.count("SELECT count(*) FROM wallets WHERE address = %s", wallet.address) == 0


async def test_message_altered_by_one_character_is_refused_and_nonce_survives(api: Api) -> None:
    wallet = Wallet()
    message = await _challenge(api, wallet)
    altered = message.replace("Sign in", "Sign In", 1)
    assert altered != message
    assert len(altered) == len(message)
    response = await _verify(api, wallet, altered)  # validly signed, but not what we issued
    assert response.status_code == 400
    assert error_code(response) == "INVALID_MESSAGE"
    assert response.json()["error"]["details"] == {"reason": "altered"}
    assert api.count("SELECT count(*) FROM wallets WHERE address = %s", wallet.address) == 0
    # The refusal changed nothing: the genuine message still signs in.
    assert (await _verify(api, wallet, message)).status_code == 200


async def test_message_for_another_domain_is_refused(api: Api) -> None:
    wallet = Wallet()
    message = await _challenge(api, wallet)
    phished = message.replace(DOMAIN, "evil.example", 1)
    response = await _verify(api, wallet, phished)
    assert response.status_code == 400
    assert error_code(response) == "INVALID_MESSAGE"
    assert response.json()["error"]["details"] == {"reason": "domain"}


async def test_signature_by_another_key_is_refused(api: Api) -> None:
    wallet, thief = Wallet(), Wallet()
    message = await _challenge(api, wallet)
    response = await _verify(api, wallet, message, signature=thief.sign(message))
    assert response.status_code == 401
    assert error_code(response) == "INVALID_SIGNATURE"
    assert api.count("SELECT count(*) FROM wallets WHERE address = %s", wallet.address) == 0
    assert (await _verify(api, wallet, message)).status_code == 200


async def test_message_issued_for_another_wallet_is_refused(api: Api) -> None:
    wallet, other = Wallet(), Wallet()
    message = await _challenge(api, other)
    response = await _verify(api, wallet, message)
    assert error_code(response) == "INVALID_MESSAGE"


async def test_garbage_message_and_bad_address_are_refused_clearly(api: Api) -> None:
    wallet = Wallet()
    response = await _verify(api, wallet, "hello")
    assert response.status_code == 400
    assert error_code(response) == "INVALID_MESSAGE"
    bad = await api.client.post("/api/auth/init", json={"walletAddress": "0OIl" * 10})
    assert bad.status_code == 422
    assert error_code(bad) == "VALIDATION_ERROR"


async def test_sign_ins_and_failures_are_audited(api: Api) -> None:
    wallet = Wallet()
    message = await _challenge(api, wallet)
    await _verify(api, wallet, message, signature=Wallet().sign(message))
    await _verify(api, wallet, message)
    with psycopg.connect(api.database_url) as conn:
        rows = conn.execute(
            "SELECT outcome, details->>'reason', ip FROM audit_log"
            " WHERE event = 'auth.wallet.sign_in' AND subject = %s ORDER BY id",
            (wallet.address,),
        ).fetchall()
    assert rows == [("failure", "signature", "127.0.0.1"), ("success", None, "127.0.0.1")]
