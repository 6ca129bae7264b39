"""Enrolment tokens over the real app, database and Redis: only a device's newest token
works, one enrolment consumes every token, a device that has a key changes it only through
an operator's rotation, concurrent enrolments cannot both win, and guessing is limited."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloud.tests.api_support import Api, bearer, error_code
from cloud.tests.server_support import CLI, serving
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from gridclear.cloud import devices
from gridclear.edge.cli import main as edge_main
from gridclear.shared.keys import DeviceKey


async def _operator(api: Api) -> dict[str, str]:
    session = await api.register(f"op-{uuid.uuid4().hex[:6]}@example.org")
    api.make_admin(session["user"]["id"])
    return bearer(session["accessToken"])


async def _device(api: Api, operator: dict[str, str]) -> tuple[str, str]:
    """A new gateway and the enrolment token that came with it."""
    device_id = f"gw-{uuid.uuid4().hex[:8]}"
    created = await api.client.post("/api/devices", json={"deviceId": device_id}, headers=operator)
    assert created.status_code == 201, created.text
    token: str = created.json()["data"]["enrollment"]["token"]
    return device_id, token


async def _token(api: Api, operator: dict[str, str], device_id: str, **body: Any) -> httpx.Response:
    return await api.client.post(
        f"/api/devices/{device_id}/enrollment-token", json=body, headers=operator
    )


async def _enrol(api: Api, token: str, key: DeviceKey, device_id: str) -> httpx.Response:
    return await api.client.post(
        "/api/devices/enroll",
        json={"token": token, "publicKey": key.public.x, "deviceId": device_id},
    )


async def _current_keys(api: Api, operator: dict[str, str], device_id: str) -> list[str]:
    keys = await api.client.get(f"/api/devices/{device_id}/keys", headers=operator)
    assert keys.status_code == 200, keys.text
    return [
        k["kid"] for k in keys.json()["data"] if k["validUntil"] is None and k["revokedAt"] is None
    ]


async def test_a_stale_token_cannot_take_over_an_enrolled_device(api: Api) -> None:
    operator = await _operator(api)
    device_id, first = await _device(api, operator)
    second = await _token(api, operator, device_id)
    assert second.status_code == 201, second.text
    genuine, attacker = DeviceKey.generate(), DeviceKey.generate()

    enrolled = await _enrol(api, second.json()["data"]["token"], genuine, device_id)
    assert enrolled.status_code == 201, enrolled.text
    stale = await _enrol(api, first, attacker, device_id)
    assert stale.status_code == 401, stale.text
    assert error_code(stale) == "INVALID_TOKEN"
    assert await _current_keys(api, operator, device_id) == [genuine.kid]


async def test_a_newer_token_replaces_the_unused_older_one(api: Api) -> None:
    operator = await _operator(api)
    device_id, first = await _device(api, operator)
    second = await _token(api, operator, device_id)
    assert second.status_code == 201, second.text
    key = DeviceKey.generate()
    refused = await _enrol(api, first, key, device_id)
    assert refused.status_code == 401
    assert error_code(refused) == "INVALID_TOKEN"
    assert await _current_keys(api, operator, device_id) == []
    enrolled = await _enrol(api, second.json()["data"]["token"], key, device_id)
    assert enrolled.status_code == 201, enrolled.text


async def test_a_device_with_a_key_changes_it_only_through_a_rotation(api: Api) -> None:
    operator = await _operator(api)
    device_id, token = await _device(api, operator)
    old, new = DeviceKey.generate(), DeviceKey.generate()
    assert (await _enrol(api, token, old, device_id)).status_code == 201

    # A plain token for a device that already has a key is refused when asked for ...
    plain = await _token(api, operator, device_id)
    assert plain.status_code == 409, plain.text
    assert error_code(plain) == "CONFLICT"
    assert "rotat" in plain.json()["error"]["message"]
    # ... and only a rotation token lets the gateway enrol a new key.
    rotation = await _token(api, operator, device_id, rotate=True)
    assert rotation.status_code == 201, rotation.text
    assert rotation.json()["data"]["rotate"] is True
    enrolled = await _enrol(api, rotation.json()["data"]["token"], new, device_id)
    assert enrolled.status_code == 201, enrolled.text
    assert await _current_keys(api, operator, device_id) == [new.kid]
    keys = (await api.client.get(f"/api/devices/{device_id}/keys", headers=operator)).json()
    (retired,) = [k for k in keys["data"] if k["kid"] == old.kid]
    assert retired["validUntil"] is not None


async def test_a_rotation_token_is_void_once_the_operator_registers_a_key_directly(
    api: Api,
) -> None:
    operator = await _operator(api)
    device_id, token = await _device(api, operator)
    assert (await _enrol(api, token, DeviceKey.generate(), device_id)).status_code == 201
    rotation = await _token(api, operator, device_id, rotate=True)
    assert rotation.status_code == 201, rotation.text
    direct = DeviceKey.generate()
    rotated = await api.client.post(
        f"/api/devices/{device_id}/keys", json={"publicKey": direct.public.x}, headers=operator
    )
    assert rotated.status_code == 201, rotated.text
    late = await _enrol(api, rotation.json()["data"]["token"], DeviceKey.generate(), device_id)
    assert late.status_code == 401
    assert await _current_keys(api, operator, device_id) == [direct.kid]


async def test_concurrent_enrolments_with_two_tokens_let_one_win(api: Api) -> None:
    operator = await _operator(api)
    device_id, first = await _device(api, operator)
    second = (await _token(api, operator, device_id)).json()["data"]["token"]
    keys = [DeviceKey.generate() for _ in range(4)]
    answers = await asyncio.gather(
        _enrol(api, first, keys[0], device_id),
        _enrol(api, second, keys[1], device_id),
        _enrol(api, second, keys[2], device_id),
        _enrol(api, first, keys[3], device_id),
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 401, 401, 401], [a.text for a in answers]
    (winner,) = [a.json()["data"]["kid"] for a in answers if a.status_code == 201]
    assert await _current_keys(api, operator, device_id) == [winner]


async def test_enrolment_attempts_are_limited_per_client_address(api: Api) -> None:
    key = DeviceKey.generate()
    statuses = []
    for _ in range(11):
        guess = await api.client.post(
            "/api/devices/enroll",
            json={"token": "gce_" + uuid.uuid4().hex * 2, "publicKey": key.public.x},
        )
        statuses.append(guess.status_code)
    assert statuses == [401] * 10 + [429]


async def test_the_gateway_enrol_command_works_and_says_why_a_stale_token_is_refused(
    postgres_admin_url: str, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(postgres_admin_url, redis_url) as (host, port, url):
        async with await AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            await devices.create_device(conn, device_id="gw-stale")
            first = await devices.issue_enrolment_token(conn, device_id="gw-stale")
            second = await devices.issue_enrolment_token(conn, device_id="gw-stale")
        cloud = f"http://{host}:{port}"
        genuine, attacker = _gateway(tmp_path / "genuine"), _gateway(tmp_path / "attacker")

        assert (
            edge_main(["enrol", "--url", cloud, "--token", second.token, "--config", genuine]) == 0
        )
        assert "enrolled gw-stale" in capsys.readouterr().out
        assert (
            edge_main(["enrol", "--url", cloud, "--token", first.token, "--config", attacker]) == 1
        )
        refusal = capsys.readouterr().err
        assert "INVALID_TOKEN" in refusal
        assert "only the newest one" in refusal


def _gateway(folder: Path) -> str:
    folder.mkdir()
    config = folder / "gateway.toml"
    config.write_text(
        'device_id = "gw-stale"\nkey_file = "device.key"\noutbox = "outbox.db"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
    )
    return str(config)


async def test_operators_rotate_from_the_command_line(api: Api) -> None:
    operator = await _operator(api)
    device_id, token = await _device(api, operator)
    assert (await _enrol(api, token, DeviceKey.generate(), device_id)).status_code == 201
    env = {**os.environ, "GRIDCLEAR_DATABASE_URL": api.database_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, "devices", *args, "--device-id", device_id],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    plain = cli("token")
    assert plain.returncode == 1
    assert "devices rotate" in plain.stderr
    rotation = cli("rotate")
    assert rotation.returncode == 0, rotation.stderr
    (issued,) = [w for w in rotation.stdout.split() if w.startswith("gce_")][:1]
    new = DeviceKey.generate()
    assert (await _enrol(api, issued, new, device_id)).status_code == 201
    assert await _current_keys(api, operator, device_id) == [new.kid]
