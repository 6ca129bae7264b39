"""Password accounts, password change, wallet linking, profiles."""

from __future__ import annotations

import uuid

from cloud.tests.api_support import Api, Wallet, bearer, error_code

PASSWORD = "correct horse battery"


def _email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@Example.ORG"


async def test_register_login_and_wrong_password(api: Api) -> None:
    email = _email()
    registered = await api.register(email, PASSWORD)
    assert registered["user"]["email"] == email.lower()
    assert registered["user"]["hasPassword"] is True
    login = await api.client.post(
        "/api/auth/login", json={"email": email.upper(), "password": PASSWORD}
    )
    assert login.status_code == 200
    assert login.json()["data"]["user"]["id"] == registered["user"]["id"]
    wrong = await api.client.post("/api/auth/login", json={"email": email, "password": "nope"})
    assert wrong.status_code == 401
    assert error_code(wrong) == "INVALID_CREDENTIALS"
    unknown = await api.client.post(
        "/api/auth/login", json={"email": _email(), "password": PASSWORD}
    )
    assert error_code(unknown) == "INVALID_CREDENTIALS"
    stored = api.count(
        "SELECT count(*) FROM users WHERE email = %s AND password_hash LIKE '$argon2id$%%'",
        email.lower(),
    )
    assert stored == 1


async def test_duplicate_email_and_weak_password_are_refused(api: Api) -> None:
    email = _email()
    await api.register(email)
    again = await api.client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert again.status_code == 409
    assert error_code(again) == "CONFLICT"
    short = await api.client.post(
        "/api/auth/register", json={"email": _email(), "password": "short"}
    )
    assert short.status_code == 422
    assert error_code(short) == "VALIDATION_ERROR"
    assert "short" not in short.text  # the input is never echoed back
    bad_email = await api.client.post(
        "/api/auth/register", json={"email": "not-an-email", "password": PASSWORD}
    )
    assert error_code(bad_email) == "VALIDATION_ERROR"


async def test_password_change_signs_out_other_sessions(api: Api) -> None:
    email = _email()
    first = await api.register(email)
    second = (
        await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    ).json()["data"]
    wrong = await api.client.put(
        "/api/auth/password",
        json={"currentPassword": "wrong password!", "newPassword": "a new long passphrase"},
        headers=bearer(first["accessToken"]),
    )
    assert error_code(wrong) == "INVALID_CREDENTIALS"
    changed = await api.client.put(
        "/api/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "a new long passphrase"},
        headers=bearer(first["accessToken"]),
    )
    assert changed.status_code == 200
    still = await api.client.get("/api/auth/profile", headers=bearer(first["accessToken"]))
    assert still.status_code == 200
    gone = await api.client.get("/api/auth/profile", headers=bearer(second["accessToken"]))
    assert error_code(gone) == "INVALID_TOKEN"
    old = await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert error_code(old) == "INVALID_CREDENTIALS"
    new = await api.client.post(
        "/api/auth/login", json={"email": email, "password": "a new long passphrase"}
    )
    assert new.status_code == 200


async def test_account_links_a_wallet_proven_by_signature(api: Api) -> None:
    account = await api.register(_email())
    headers = bearer(account["accessToken"])
    wallet = Wallet()
    challenge = await api.client.post(
        "/api/users/wallets/challenge", json={"walletAddress": wallet.address}, headers=headers
    )
    message = challenge.json()["data"]["message"]
    assert f"account {account['user']['id']}" in message
    forged = await api.client.post(
        "/api/users/wallets",
        json={
            "walletAddress": wallet.address,
            "signature": Wallet().sign(message),
            "message": message,
        },
        headers=headers,
    )
    assert error_code(forged) == "INVALID_SIGNATURE"
    # A link challenge cannot be used to sign in.
    sign_in = await api.client.post(
        "/api/auth/verify",
        json={
            "walletAddress": wallet.address,
            "signature": wallet.sign(message),
            "message": message,
        },
    )
    assert error_code(sign_in) == "NONCE_INVALID"
    linked = await api.client.post(
        "/api/users/wallets",
        json={
            "walletAddress": wallet.address,
            "signature": wallet.sign(message),
            "message": message,
        },
        headers=headers,
    )
    assert linked.status_code == 200
    assert linked.json()["data"]["wallets"] == [wallet.address]
    # Signing in with the wallet now reaches the same account.
    via_wallet = await api.sign_in(wallet)
    assert via_wallet["user"]["id"] == account["user"]["id"]


async def test_wallet_belonging_to_another_account_is_not_linked(api: Api) -> None:
    wallet = Wallet()
    await api.sign_in(wallet)
    account = await api.register(_email())
    headers = bearer(account["accessToken"])
    challenge = await api.client.post(
        "/api/users/wallets/challenge", json={"walletAddress": wallet.address}, headers=headers
    )
    message = challenge.json()["data"]["message"]
    response = await api.client.post(
        "/api/users/wallets",
        json={
            "walletAddress": wallet.address,
            "signature": wallet.sign(message),
            "message": message,
        },
        headers=headers,
    )
    assert response.status_code == 409
    assert error_code(response) == "CONFLICT"


async def test_wallet_user_adds_email_and_password_then_logs_in_with_them(api: Api) -> None:
    wallet = Wallet()
    session = await api.sign_in(wallet)
    email = _email()
    added = await api.client.post(
        "/api/users/credentials",
        json={"email": email, "password": PASSWORD},
        headers=bearer(session["accessToken"]),
    )
    assert added.status_code == 200
    assert added.json()["data"]["email"] == email.lower()
    twice = await api.client.post(
        "/api/users/credentials",
        json={"email": _email(), "password": PASSWORD},
        headers=bearer(session["accessToken"]),
    )
    assert error_code(twice) == "CONFLICT"
    login = await api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.json()["data"]["user"]["walletAddress"] == wallet.address


async def test_profile_read_and_update(api: Api) -> None:
    session = await api.sign_in(Wallet())
    headers = bearer(session["accessToken"])
    put = await api.client.put(
        "/api/users/profile", json={"displayName": "Rooftop 7"}, headers=headers
    )
    assert put.status_code == 200
    got = await api.client.get("/api/users/profile", headers=headers)
    assert got.json()["data"]["displayName"] == "Rooftop 7"
    unknown_field = await api.client.put(
        "/api/users/profile", json={"displayName": "x", "role": "admin"}, headers=headers
    )
    assert error_code(unknown_field) == "VALIDATION_ERROR"
    assert (await api.client.get("/api/users/profile", headers=headers)).json()["data"][
        "role"
    ] == "participant"
