"""The ingest worker's cache of every device key, reloaded when a key changes.

``device_key_version`` is bumped by a trigger in the transaction of every change
to ``devices`` or ``device_keys``; the worker reads it (one indexed row) before
each batch and reloads all keys when it moved. So a revocation or an enrolment
applies to every batch that starts after it was committed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import psycopg

from gridclear.cloud.ingest.metrics import IngestMetrics
from gridclear.cloud.ingest.verify import KeyRecord
from gridclear.shared.keys import PublicKey

__all__ = ["KeyCache", "load_keys"]

log = logging.getLogger(__name__)

_FOREVER_MS = 2**63
"""What an infinite bound becomes: beyond every signing time a message can hold."""

# Times come as seconds since the epoch, computed by PostgreSQL: every timestamptz it
# can store has one (a revocation at 9999-12-31T23:59:59-14:00 is in the year 10000,
# which Python's datetime cannot hold, and loading it as a datetime killed the worker).
_KEYS = (
    "SELECT k.kid, k.device_pk, d.device_id, k.public_key, extract(epoch FROM k.valid_from),"
    " extract(epoch FROM k.valid_until), extract(epoch FROM k.revoked_at)"
    " FROM device_keys k JOIN devices d ON d.id = k.device_pk"
)


def _ms(seconds: Decimal | float | None) -> int | None:
    """UTC ms from epoch seconds; ``infinity`` and ``-infinity`` are beyond every time."""
    if seconds is None:
        return None
    if isinstance(seconds, Decimal) and seconds.is_infinite():
        return _FOREVER_MS if seconds > 0 else -_FOREVER_MS
    if isinstance(seconds, float) and abs(seconds) == float("inf"):
        return _FOREVER_MS if seconds > 0 else -_FOREVER_MS
    return int(seconds * 1000)


def _record(row: tuple[Any, ...]) -> KeyRecord:
    kid, device_pk, device_id, raw, valid_from, valid_until, revoked_at = row
    return KeyRecord(
        kid=kid,
        device_pk=device_pk,
        device_id=device_id,
        public=PublicKey(bytes(raw)),
        valid_from_ms=_ms(valid_from),
        valid_until_ms=_ms(valid_until),
        revoked_ms=_ms(revoked_at),
    )


def load_keys(
    conn: psycopg.Connection[Any], *, metrics: IngestMetrics | None = None
) -> dict[str, KeyRecord]:
    """Every key by kid, but those that cannot be read (logged with their kid, counted).

    A key left out refuses its messages (``unknown_key``), so one bad row costs one
    device its ingest until it is fixed, never every device (the worker goes on).
    """
    keys: dict[str, KeyRecord] = {}
    unreadable = 0
    for row in conn.execute(_KEYS).fetchall():
        try:
            record = _record(row)
        except (ArithmeticError, TypeError, ValueError) as error:
            unreadable += 1
            log.error("ingest: key %s cannot be read, its messages are refused: %r", row[0], error)
            continue
        keys[record.kid] = record
    if metrics is not None:
        metrics.keys_unreadable.set(unreadable)
    return keys


class KeyCache:
    """The keys as of the last :meth:`refresh`."""

    def __init__(self, *, metrics: IngestMetrics | None = None) -> None:
        self._metrics = metrics
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
            self._keys = load_keys(conn, metrics=self._metrics)
            self._version = version
        return self._keys
