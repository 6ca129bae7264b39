"""Property test of the whole OpenAPI schema with schemathesis, against a real server.

A real ``gridclear-cloud serve`` process on real PostgreSQL and Redis; every
operation gets generated requests (valid and not), each with a fresh session of
an admin, an operator or a participant, so that protected routes are reached as
each role. Some cases carry a value at the edge of what the types allow in one of
their strings: a U+0000 character, or a calendar-edge date-time (years 1 and 9999,
with offsets that push them past the calendar). Every answer must be documented,
below 500 and wear the envelope.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from cloud.tests.api_support import fresh_database
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gridclear.cloud.identity.bootstrap import create_admin
from gridclear.cloud.settings import Settings, generate_signing_key_pem
from gridclear.cloud.storage.migrations import migrate
from gridclear.devtools.ledger import LedgerNodeProcess
from gridclear.devtools.net import free_port

ADMIN = ("fuzz-admin@example.org", "a long fuzzing passphrase")
CALLERS = {
    "admin": ADMIN,
    "operator": ("fuzz-operator@example.org", "a long fuzzing passphrase"),
    "participant": ("fuzz-participant@example.org", "a long fuzzing passphrase"),
}
EDGE_VALUES = [
    "\u0000",
    "a\u0000b",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:30:00Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999+00:00",
    "9999-12-31T23:59:59-14:00",
]
"""Values at the edges of the API's types, put in place of one generated string."""


async def _set_up_settlement(url: str, rpc_url: str, key_dir: Path) -> None:
    """``ledger init`` on the fuzzed database: the blockchain routes answer as in service."""
    from psycopg import AsyncConnection
    from psycopg.rows import dict_row

    from gridclear.cloud.ledger.client import LedgerClient
    from gridclear.cloud.ledger.keys import create_key_file
    from gridclear.cloud.settlement.setup import init_ledger

    oracle = create_key_file(key_dir / "oracle.json").keypair
    authority = create_key_file(key_dir / "settlement.json").keypair
    async with (
        LedgerClient(rpc_url) as ledger,
        await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn,
    ):
        await init_ledger(conn, ledger, oracle=oracle, authority=authority, airdrop=True)


@pytest.fixture(scope="module")
def fuzz_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerNodeProcess]:
    node = LedgerNodeProcess(workdir=tmp_path_factory.mktemp("fuzz-ledger")).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def fuzz_server(
    postgres_admin_url: str,
    redis_url: str,
    fuzz_ledger: LedgerNodeProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    with fresh_database(postgres_admin_url) as url:
        env = {
            **os.environ,
            "GRIDCLEAR_DATABASE_URL": url,
            "GRIDCLEAR_REDIS_URL": redis_url,
            "GRIDCLEAR_REDIS_KEY_PREFIX": f"test:fuzz:{os.getpid()}:",
            "GRIDCLEAR_ARGON2_TIME_COST": "1",
            "GRIDCLEAR_ARGON2_MEMORY_KIB": "1024",
            "GRIDCLEAR_RATE_LIMITS_ENABLED": "false",
            "GRIDCLEAR_LOG_LEVEL": "WARNING",
            "GRIDCLEAR_JWT_PRIVATE_KEY": generate_signing_key_pem(),
            "GRIDCLEAR_SOLANA_RPC_URL": fuzz_ledger.url,
        }
        migrate(url)
        asyncio.run(_set_up_settlement(url, fuzz_ledger.url, tmp_path_factory.mktemp("keys")))
        for role, (email, password) in CALLERS.items():
            create_admin(
                settings=Settings(database_url=url, argon2_time_cost=1, argon2_memory_kib=1024),
                email=email,
                password=password,
            )
            with psycopg.connect(url) as conn:
                conn.execute("UPDATE users SET role = %s WHERE email = %s", (role, email))
        port = free_port()
        # The same server `gridclear-cloud serve` runs: uvicorn on the app factory.
        server = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "gridclear.cloud.api.app:create_app_from_env",
                "--factory", "--port", str(port), "--log-level", "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120  # a hang guard: start-up is slow on a busy machine
            while True:
                try:
                    if httpx.get(f"{base}/api/health/live", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.1)
            yield base
        finally:
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=20)
        # Nothing the fuzzer sent may have reached the catch-all error handler.
        assert b"unhandled error" not in stderr, stderr.decode()[-4000:]


def _schema() -> Any:
    # The schema is the app's own, built without starting it (no I/O until the lifespan).
    from pydantic import SecretStr

    from gridclear.cloud.api.app import create_app

    app = create_app(
        Settings(
            database_url="postgresql://unused",
            redis_url="redis://unused",
            jwt_private_key=SecretStr(generate_signing_key_pem()),
        )
    )
    return schemathesis.openapi.from_dict(app.openapi())


schema = _schema()


def _string_slots(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Where ``value`` (a generated body, query or path parameters) holds a string."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _string_slots(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _string_slots(v, (*path, i))]
    return []


def _put(container: Any, path: tuple[object, ...], value: str) -> None:
    for step in path[:-1]:
        container = container[step]
    container[path[-1]] = value


@schema.hook
def flatmap_case(context: Any, case: Any) -> Any:
    """Half the cases as generated; the rest with one string an edge value, or NUL added."""
    slots = [
        (part, path)
        for part in ("body", "query", "path_parameters")
        for path in _string_slots(getattr(case, part))
        if path
    ]
    if not slots:
        return st.just(case)

    def edged(choice: tuple[int, str | None]) -> Any:
        part, path = slots[choice[0]]
        container = getattr(case, part)
        before = container
        for step in path:
            before = before[step]
        _put(container, path, choice[1] if choice[1] is not None else f"{before}\u0000")
        return case

    edges = st.tuples(
        st.integers(0, len(slots) - 1), st.one_of(st.none(), st.sampled_from(EDGE_VALUES))
    )
    return st.one_of(st.just(case), edges.map(edged))


def _caller(case: Any) -> tuple[str, str]:
    """The role a case is sent as: one of the three, fixed by the case's content.

    A function of the case rather than a third parameter of the test, so that each
    role gets a share of the examples and the run costs no more than one role's.
    """
    content = repr((case.operation.label, case.path_parameters, case.query, case.body))
    roles = sorted(CALLERS)
    return CALLERS[roles[zlib.crc32(content.encode()) % len(roles)]]


def _token(base: str, caller: tuple[str, str]) -> str:
    email, password = caller
    response = httpx.post(
        f"{base}/api/auth/login", json={"email": email, "password": password}, timeout=10
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["data"]["accessToken"]
    return token


def _throwaway_token(base: str) -> str:
    """A session of a new participant account, for operations that end the caller's."""
    response = httpx.post(
        f"{base}/api/auth/register",
        json={"email": f"fuzz-{uuid.uuid4().hex}@example.org", "password": "a long passphrase"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["data"]["accessToken"]
    return token


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_documented_enveloped_and_below_500(
    case: Any, fuzz_server: str
) -> None:
    if case.operation.label == "DELETE /api/users/me":
        # It deletes the caller: sent as a throwaway account, so the roles' stay.
        token = _throwaway_token(fuzz_server)
    else:
        token = _token(fuzz_server, _caller(case))
    response = case.call_and_validate(
        base_url=fuzz_server,
        headers={"Authorization": f"Bearer {token}"},
        # Some valid-looking input is refused on meaning the schema cannot express
        # (a base58 string of the right length that is not a 32-byte key, an expiry in
        # the past); such refusals are documented 4xx answers, checked below.
        excluded_checks=[positive_data_acceptance],
    )
    assert response.status_code < 500
    body = response.json()
    assert isinstance(body, dict)
    assert isinstance(body.get("success"), bool), body
    if body["success"]:
        assert set(body) == {"success", "data"}
    else:
        assert set(body) == {"success", "error"}
        assert set(body["error"]) == {"message", "code", "details"}
