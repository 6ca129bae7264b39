"""``gridclear-cloud devices`` listings name their fields as the API does and write times
in RFC 3339 UTC, as a table and with ``--json``."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import datetime
from typing import Any

from cloud.tests.api_support import Api, bearer
from cloud.tests.process_support import CLI


def _cli(api: Api, *args: str) -> str:
    done = subprocess.run(
        [CLI, "devices", *args],
        env={**os.environ, "GRIDCLEAR_DATABASE_URL": api.database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _same(cli: dict[str, Any], api: dict[str, Any]) -> None:
    """The same fields and values; times the same instants, the CLI's in UTC with a Z."""
    assert list(cli) == list(api)
    for name, value in api.items():
        if name.endswith("At") and value is not None:
            assert cli[name].endswith("Z"), (name, cli[name])
            assert datetime.fromisoformat(cli[name]) == datetime.fromisoformat(value)
        else:
            assert cli[name] == value, name


async def test_devices_list_and_meter_use_the_apis_fields_and_rfc3339_utc_times(api: Api) -> None:
    session = await api.register(f"op-{uuid.uuid4().hex[:6]}@example.org")
    api.make_admin(session["user"]["id"])
    operator = bearer(session["accessToken"])
    device_id = f"gw-{uuid.uuid4().hex[:8]}"
    created = await api.client.post(
        "/api/devices", json={"deviceId": device_id, "site": "street"}, headers=operator
    )
    assert created.status_code == 201, created.text

    listed = json.loads(_cli(api, "list", "--json"))
    served = (await api.client.get("/api/devices", params={"limit": 1000}, headers=operator)).json()
    (mine,) = [d for d in listed if d["deviceId"] == device_id]
    (theirs,) = [d for d in served["data"] if d["deviceId"] == device_id]
    _same(mine, theirs)

    header, *rows = _cli(api, "list").splitlines()
    assert header.split() == list(theirs)
    (row,) = [r.split() for r in rows if r.split()[0] == device_id]
    assert row[list(theirs).index("createdAt")] == mine["createdAt"]

    bound = json.loads(
        _cli(api, "meter", "--device-id", device_id, "--meter", "m1", "--role", "both", "--json")
    )
    meters = (await api.client.get("/api/meters", headers=operator)).json()["data"]
    (meter,) = [m for m in meters if m["deviceId"] == device_id]
    _same(bound, meter)
    table_header = _cli(
        api, "meter", "--device-id", device_id, "--meter", "m1", "--role", "both"
    ).splitlines()[0]
    assert table_header.split() == list(meter)
