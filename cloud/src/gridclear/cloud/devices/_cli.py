"""``gridclear-cloud devices``: gateways, their keys and meters, from the command line.

Listings use the API's field names and RFC 3339 UTC times, as ``GET /api/devices``
and ``GET /api/meters`` do, as a table or (``--json``) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

__all__ = ["add_devices_command"]

_T = TypeVar("_T")


def add_devices_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``devices`` to the ``gridclear-cloud`` parser."""
    devices = commands.add_parser("devices", help="register gateways, keys and meters")
    actions = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add",
        help="register a gateway; prints a one-time enrolment token (or registers --public-key)",
    )
    add.add_argument("--device-id", required=True)
    add.add_argument("--name", default=None)
    add.add_argument("--site", default=None, help="site name (created on first use)")
    add.add_argument(
        "--public-key",
        default=None,
        help="register this base64url Ed25519 key, no enrolment; write --public-key=KEY,"
        " since a key may begin with '-'",
    )
    add.add_argument("--token-ttl-hours", type=float, default=24.0)
    add.add_argument("--exist-ok", action="store_true", help="an existing device is not an error")
    add.add_argument("--token-only", action="store_true", help="print only the token")
    add.set_defaults(handler=_devices_add)

    token = actions.add_parser(
        "token",
        help="issue a new one-time enrolment token (earlier unused ones stop working)",
    )
    token.add_argument("--device-id", required=True)
    token.add_argument("--token-ttl-hours", type=float, default=24.0)
    token.set_defaults(handler=_devices_token)

    rotate = actions.add_parser(
        "rotate",
        help="replace a gateway's key: register --public-key, or issue a rotation token "
        "the gateway enrols its new key with; the old key stays valid for what it signed before",
    )
    rotate.add_argument("--device-id", required=True)
    rotate.add_argument(
        "--public-key",
        default=None,
        help="register this base64url Ed25519 key (write --public-key=KEY); without it, print "
        "a one-time rotation token (valid 24 h) for gridclear-edge enrol",
    )
    rotate.set_defaults(handler=_devices_rotate)

    revoke = actions.add_parser("revoke", help="refuse what a key signs from a time on")
    revoke.add_argument("--kid", required=True)
    revoke.add_argument(
        "--at",
        type=datetime.fromisoformat,
        default=None,
        help="ISO time from which its signatures are refused (default: now)",
    )
    revoke.add_argument("--reason", default=None)
    revoke.set_defaults(handler=_devices_revoke)

    show = actions.add_parser(
        "list",
        help="list gateways with status and chain health (GET /api/devices's fields)",
    )
    show.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    show.set_defaults(handler=_devices_list)

    meter = actions.add_parser("meter", help="bind a meter to an owner and a role")
    meter.add_argument("--device-id", required=True)
    meter.add_argument("--meter", required=True, help="the meter's name in the readings")
    meter.add_argument("--owner-id", type=int, default=None, help="user id of the owner")
    meter.add_argument("--role", choices=["import", "export", "both"], default="import")
    meter.add_argument("--serial", default=None)
    meter.add_argument("--model", default=None)
    meter.add_argument("--json", action="store_true", help="a JSON object instead of a table")
    meter.set_defaults(handler=_devices_meter)


def _db(func: Callable[[Any], Awaitable[_T]]) -> _T:
    """Run ``func(conn)`` on a connection to GRIDCLEAR_DATABASE_URL."""
    from psycopg import AsyncConnection
    from psycopg.rows import dict_row

    from gridclear.cloud.settings import DatabaseSettings, SettingsError

    try:
        url = DatabaseSettings.load().database()
    except SettingsError as exc:
        raise SystemExit(f"gridclear-cloud devices: {exc}") from None

    async def main() -> _T:
        async with await AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            return await func(conn)

    return asyncio.run(main())


def _fail(error: Exception) -> int:
    print(f"gridclear-cloud devices: {error}", file=sys.stderr)
    return 1


def _api_fields(item: Any, *, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """A registry record as the API shows it: camelCase names, RFC 3339 UTC times.

    The names come from the same alias generator as the API's models, so a listing
    here and the API's response for the same rows have the same fields.
    """
    from pydantic.alias_generators import to_camel

    shown: dict[str, Any] = {}
    for name, value in asdict(item).items():
        if name in without:
            continue
        if isinstance(value, datetime):
            shown[to_camel(name)] = _rfc3339(value)
        elif isinstance(value, enum.Enum):
            shown[to_camel(name)] = value.value
        else:
            shown[to_camel(name)] = value
    return shown


def _rfc3339(moment: datetime) -> str:
    """``2026-05-04T10:00:00.123456Z``: UTC, as the API writes times."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _print_rows(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    """``rows`` as a JSON list, or as a table with the field names as its header."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("(none)")
        return
    header = list(rows[0])
    cells = [["-" if row[k] is None else str(row[k]) for k in header] for row in rows]
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(header)]
    for line in [header, *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _devices_add(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        try:
            await devices.create_device(
                conn, device_id=args.device_id, name=args.name, site=args.site
            )
        except devices.DeviceExistsError:
            if not args.exist_ok:
                raise
        if args.public_key:
            try:
                key = await devices.add_key(
                    conn, device_id=args.device_id, public_key=args.public_key
                )
            except devices.KeyConflictError as exc:
                if not (args.exist_ok and "this device" in str(exc)):
                    raise
                print(f"device {args.device_id}: key already registered")
                return 0
            print(f"device {args.device_id}: key {key.kid} registered")
            return 0
        token = await devices.issue_enrolment_token(
            conn, device_id=args.device_id, ttl=timedelta(hours=args.token_ttl_hours)
        )
        if args.token_only:
            print(token.token)
        else:
            print(f"device {args.device_id} created; one-time enrolment token:")
            print(f"  {token.token}")
            print(f"valid until {token.expires_at.isoformat()}. On the gateway run:")
            print(f"  gridclear-edge enrol --url https://<cloud> --token {token.token} --config …")
        return 0

    return _guarded(run)


def _guarded(run: Callable[[Any], Awaitable[int]]) -> int:
    from gridclear.cloud.devices import DeviceError

    try:
        return _db(run)
    except DeviceError as exc:
        return _fail(exc)


def _devices_token(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        token = await devices.issue_enrolment_token(
            conn, device_id=args.device_id, ttl=timedelta(hours=args.token_ttl_hours)
        )
        print(token.token)
        return 0

    return _guarded(run)


def _devices_rotate(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        if args.public_key is None:
            token = await devices.issue_enrolment_token(
                conn, device_id=args.device_id, rotation=True
            )
            print(f"device {args.device_id}: one-time rotation token (replaces the current key):")
            print(f"  {token.token}")
            print(f"valid until {token.expires_at.isoformat()}. On the gateway, with its new key:")
            print(f"  gridclear-edge enrol --url https://<cloud> --token {token.token} --config …")
            return 0
        key = await devices.rotate_key(conn, device_id=args.device_id, public_key=args.public_key)
        print(f"device {args.device_id}: key {key.kid} registered; earlier keys retired")
        return 0

    return _guarded(run)


def _devices_revoke(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        key = await devices.revoke_key(conn, kid=args.kid, at=args.at, reason=args.reason)
        print(f"key {key.kid} of {key.device_id} revoked from {key.revoked_at}")
        return 0

    return _guarded(run)


def _devices_list(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        found = await devices.list_devices(conn, limit=10_000)
        # GET /api/devices's fields: the database's row id is not one of them.
        _print_rows([_api_fields(d, without=("id",)) for d in found], as_json=args.json)
        return 0

    return _guarded(run)


def _devices_meter(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        meter = await devices.bind_meter(
            conn,
            device_id=args.device_id,
            name=args.meter,
            owner_id=args.owner_id,
            role=devices.MeterRole(args.role),
            serial=args.serial,
            model=args.model,
        )
        rows = [_api_fields(meter)]  # GET /api/meters's fields
        if args.json:
            print(json.dumps(rows[0], indent=2))
        else:
            _print_rows(rows, as_json=False)
        return 0

    return _guarded(run)
