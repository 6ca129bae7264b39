"""Password guessing through a stolen session, and what registration reveals.

``PUT /api/auth/password`` checks the current password: it is limited like login,
per account (sharing login's budget) and per client address, before any hash is
computed. Registration answers 409 for an email that has an account (the policy in
docs/API.md); it is limited per client address by its own group and every refusal
is audited.
"""

from __future__ import annotations

import uuid

from cloud.tests.api_support import Api, bearer, error_code, running_api, test_settings

PASSWORD = "correct horse battery"


def _email() -> str:
    return f"limit-{uuid.uuid4().hex[:8]}@example.org"


async def _change(api: Api, token: str, current: str) -> tuple[int, str, str | None]:
    response = await api.client.put(
        "/api/auth/password",
        json={"currentPassword": current, "newPassword": "a brand new passphrase"},
        headers=bearer(token),
    )
    body = response.json()
    group = body["error"]["details"]["group"] if response.status_code == 429 else None
    return response.status_code, error_code(response) if not body["success"] else "", group


async def test_password_change_guesses_are_limited_per_account(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    settings = test_settings(
        migrated_db, redis_url, redis_prefix, rate_limits={"account": "3/minute"}
    )
    email = _email()
    async with running_api(settings, client_ip="10.20.0.1") as api:
        token = (await api.register(email))["accessToken"]
        # A failed login for the account spends the same budget.
        login = await api.client.post("/api/auth/login", json={"email": email, "password": "x"})
        assert login.status_code == 401
    # From other addresses, so that only the account's budget is in play.
    for n, address in enumerate(("10.20.0.2", "10.20.0.3", "10.20.0.4")):
        async with running_api(settings, client_ip=address) as api:
            status, code, group = await _change(api, token, f"wrong guess {n}")
            if n < 2:
                assert (status, code) == (401, "INVALID_CREDENTIALS")
            else:
                assert (status, code, group) == (429, "RATE_LIMIT_EXCEEDED", "account")
                # Past the limit even the right password is refused, and nothing changed.
                assert (await _change(api, token, PASSWORD))[0] == 429
                still = await api.client.post(
                    "/api/auth/login", json={"email": email, "password": PASSWORD}
                )
                assert still.status_code == 429  # the account's budget, shared with login
    failures = api.count(
        "SELECT count(*) FROM audit_log WHERE event = 'auth.password.change'"
        " AND outcome = 'failure' AND actor_id = (SELECT id FROM users WHERE email = %s)",
        email,
    )
    assert failures == 2


async def test_password_change_guesses_are_limited_per_client_address(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    settings = test_settings(migrated_db, redis_url, redis_prefix, rate_limits={"auth": "2/minute"})
    async with running_api(settings, client_ip="10.21.0.1") as api:
        tokens = [(await api.register(_email()))["accessToken"] for _ in range(2)]
    async with running_api(settings, client_ip="10.21.0.2") as api:
        first = await _change(api, tokens[0], "wrong guess")
        second = await _change(api, tokens[1], "wrong guess")
        third = await _change(api, tokens[1], "wrong guess again")
    assert first[:2] == second[:2] == (401, "INVALID_CREDENTIALS")
    assert third == (429, "RATE_LIMIT_EXCEEDED", "auth")


async def test_registration_reveals_existence_only_at_a_limited_rate(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    settings = test_settings(
        migrated_db, redis_url, redis_prefix, rate_limits={"register": "3/minute"}
    )
    taken = _email()
    async with running_api(settings, client_ip="10.22.0.1") as api:
        await api.register(taken)
    async with running_api(settings, client_ip="10.22.0.2") as api:
        statuses = []
        for email in (taken, _email(), taken, _email()):
            response = await api.client.post(
                "/api/auth/register", json={"email": email, "password": PASSWORD}
            )
            statuses.append(response.status_code)
        assert statuses == [409, 201, 409, 429]
        assert response.json()["error"]["details"]["group"] == "register"
        # Each probe of an existing email is in the audit log, with the address it came from.
        probes = api.count(
            "SELECT count(*) FROM audit_log WHERE event = 'auth.register'"
            " AND outcome = 'failure' AND subject = %s AND ip = '10.22.0.2'",
            taken,
        )
        assert probes == 2
