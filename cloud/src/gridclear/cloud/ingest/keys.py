"""The ingest worker's cache of every device key, reloaded when a key changes.

``device_key_version`` is bumped by a trigger in the transaction of every change
to ``devices`` or ``device_keys``; the worker reads it (one indexed row) before
each batch and reloads all keys when it moved. So a revocation or an enrolment
applies to every batch that starts after it was committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg

from gridclear.cloud.ingest.verify import KeyRecord
from gridclear.shared.keys import PublicKey

__all__ = ["KeyCache", "load_keys"]


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def load_keys(conn: psycopg.Connection[Any]) -> dict[str, KeyRecord]:
    """Every key by kid."""
    rows = conn.execute(
        "SELECT k.kid, k.device_pk, d.device_id, k.public_key, k.valid_from, k.valid_until,"
        " k.revoked_at FROM device_keys k JOIN devices d ON d.id = k.device_pk"
    ).fetchall()
    return {
        kid: KeyRecord(
            kid=kid,
            device_pk=device_pk,
            device_id=device_id,
            public=PublicKey(bytes(raw)),
            valid_from_ms=_ms(valid_from),
            valid_until_ms=_ms(valid_until),
            revoked_ms=_ms(revoked_at),
        )
        for kid, device_pk, device_id, raw, valid_from, valid_until, revoked_at in rows
    }


class KeyCache:
    """The keys as of the last :meth:`refresh`."""

    def __init__(self) -> None:
        self._version: int | None = None
        self._keys: dict[str, KeyRecord] = {}

    @property
    def keys(self) -> Mapping[str, KeyRecord]:
        return self._keys

    @property
    def version(self) -> int | None:
        """The key version the keys are as of; None before the first refresh."""
        return self._version

    def refresh(self, conn: psycopg.Connection[Any]) -> Mapping[str, KeyRecord]:
        """Reload if a key changed since the last call; raises what psycopg raises."""
        row = conn.execute("SELECT version FROM device_key_version").fetchone()
        version = int(row[0]) if row else 0
        if version != self._version:
            self._keys = load_keys(conn)
            self._version = version
        return self._keys
