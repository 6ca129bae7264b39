"""Enrolment: send this gateway's public key to the cloud with a one-time token.

``gridclear-edge enrol --url https://cloud.example.org --token gce_... --config gw.toml``
reads the device id and key file from the configuration, creates the key file if it
does not exist yet (the private key never leaves the gateway), and posts
``{"token", "publicKey", "deviceId"}`` to ``<url>/api/devices/enroll``. The cloud
answers with the key's ``kid``, which must be this key's thumbprint. A refusal is
one message saying what to do: a used or replaced token needs a new one, a gateway
that already has a key needs the operator's rotation token, and enrolment attempts
are rate limited per address.

Only the standard library's urllib: the gateway stays light. The token is a
credential, so plain ``http://`` is refused except to a loopback address (or with
``allow_http``).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gridclear.edge.errors import GridclearEdgeError

__all__ = ["ENROL_PATH", "EnrolError", "EnrolResult", "add_enrol_command", "enrol", "enrol_url"]

ENROL_PATH = "/api/devices/enroll"


class EnrolError(GridclearEdgeError):
    """Enrolment failed; ``str(error)`` is the one message to show the installer."""

    code = "enrol_failed"


@dataclass(frozen=True)
class EnrolResult:
    device_id: str
    kid: str
    key_created: bool


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def enrol_url(url: str, *, allow_http: bool = False) -> str:
    """The enrolment endpoint for a cloud base URL (or the endpoint itself)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EnrolError(f"--url must be https://host[:port] (got {url!r})")
    if parts.scheme == "http" and not (allow_http or _loopback(parts.hostname)):
        raise EnrolError(
            "refusing to send the enrolment token over plain http to a remote host; "
            "use https:// (or --allow-http on a network you trust)"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(ENROL_PATH):
        path += ENROL_PATH
    return f"{parts.scheme}://{parts.netloc}{path}"


_HINTS = {
    "INVALID_TOKEN": (
        "a token works once, and only the newest one issued for a device: ask the operator "
        "for a new one (gridclear-cloud devices token --device-id ...)"
    ),
    "RATE_LIMIT_EXCEEDED": "too many enrolment attempts from this address; retry in {retry} s",
}
"""What the installer can do about a refusal, by the cloud's error code."""


def _error_message(status: int, body: bytes, retry_after: str | None = None) -> str:
    try:
        data: Any = json.loads(body)
        error = data["error"]
        message = f"{error['message']} ({error['code']}, HTTP {status})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {body[:200].decode(errors='replace')}"
    hint = _HINTS.get(str(error["code"]))
    if hint is not None:
        message += ". " + hint.format(retry=retry_after or "a minute")
    return message


def enrol(
    *, url: str, token: str, config_path: Path, allow_http: bool = False, timeout_s: float = 30
) -> EnrolResult:
    """Enrol the gateway configured in ``config_path``; EnrolError with the reason if not."""
    from gridclear.edge.config import ConfigError, load_config
    from gridclear.shared.errors import KeyFileError
    from gridclear.shared.keys import create_key_file, load_key_file

    endpoint = enrol_url(url, allow_http=allow_http)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise EnrolError(str(exc)) from None
    created = not config.key_file.exists()
    try:
        key = create_key_file(config.key_file) if created else load_key_file(config.key_file)
    except KeyFileError as exc:
        raise EnrolError(str(exc)) from None
    body = json.dumps(
        {"token": token.strip(), "publicKey": key.public.x, "deviceId": config.device_id}
    ).encode()
    request = urllib.request.Request(  # noqa: S310 -- the scheme is checked above
        endpoint,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            answer: Any = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        message = _error_message(exc.code, exc.read(), exc.headers.get("Retry-After"))
        raise EnrolError(f"the cloud refused: {message}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EnrolError(f"cannot reach {endpoint}: {reason}") from None
    except ValueError:
        raise EnrolError(f"{endpoint} did not answer JSON") from None
    kid = answer.get("data", {}).get("kid") if isinstance(answer, dict) else None
    if kid != key.kid:
        raise EnrolError(f"the cloud registered key {kid!r}, not this gateway's key {key.kid}")
    return EnrolResult(device_id=config.device_id, kid=key.kid, key_created=created)


def add_enrol_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``enrol`` subcommand of ``gridclear-edge``."""
    parser = commands.add_parser(
        "enrol",
        help="register this gateway's public key with the cloud (one-time token)",
        description=(
            "Send the gateway's public key to the cloud with the one-time enrolment token "
            "an operator issued (gridclear-cloud devices add). Creates the key file named "
            "in the configuration if it does not exist. The private key never leaves the "
            "gateway."
        ),
    )
    parser.add_argument("--url", required=True, help="the cloud's address, https://host[:port]")
    token = parser.add_mutually_exclusive_group(required=True)
    token.add_argument("--token", help="the one-time enrolment token (gce_...)")
    token.add_argument("--token-file", type=Path, help="read the token from this file")
    parser.add_argument("--config", required=True, type=Path, help="the gateway's TOML file")
    parser.add_argument(
        "--allow-http", action="store_true", help="allow plain http to a non-loopback host"
    )
    parser.set_defaults(handler=_enrol_command)


def _enrol_command(args: argparse.Namespace) -> int:
    try:
        token = args.token if args.token else args.token_file.read_text().strip()
        result = enrol(
            url=args.url, token=token, config_path=args.config, allow_http=args.allow_http
        )
    except (EnrolError, OSError) as exc:
        print(f"gridclear-edge enrol: {exc}", file=sys.stderr)
        return 1
    made = " (new key created)" if result.key_created else ""
    print(f"enrolled {result.device_id} with key {result.kid}{made}")
    return 0
