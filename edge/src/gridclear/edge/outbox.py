"""The durable outbox: signed messages kept in SQLite until the broker has them.

Contracts, in the order a reading meets them:

- :meth:`Outbox.append` signs a batch with the next sequence number and the hash
  of the previous payload and commits the message, the sequence number and the
  hash together (SQLite WAL, ``synchronous=FULL``): once it returns, a power cut
  loses neither the message nor the position in the chain, and a restart
  continues the chain where it ended.
- :meth:`Outbox.claim` hands messages to the publisher in sequence order and
  records, durably, the highest sequence number ever handed out. A message that
  may have reached the broker is never changed again.
- :meth:`Outbox.ack` deletes messages once the broker acknowledged them, and only then.
- :meth:`Outbox.thin` runs when the messages exceed 90% of the size limit. It
  takes the messages never handed out (the tail of the chain, typically a long
  outage), keeps per meter the samples nearest each boundary of one minute, then
  five, then fifteen until the outbox is under 70% of the limit, and writes
  them back as fewer, fuller messages with the same first sequence number and a
  re-signed chain. Nobody has seen those messages, so this rewrites no history;
  each new message counts what was dropped before it (``thinned``), and the
  status says so. Thinning waits while the publisher is connected
  (:meth:`Outbox.hold_thinning`), so it never races a publication.

The limit is where thinning starts, not a hard cap: when everything left is
already at boundary resolution the outbox keeps growing (and says so) rather
than drop a reading that settlement needs.

All methods are blocking and thread-safe; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from bisect import bisect_right
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gridclear.edge._thinning import THINNING_STEPS_MS, keep_nearest_boundaries
from gridclear.edge.errors import GridclearEdgeError
from gridclear.edge.signing import Signer
from gridclear.shared.jws import b64url_decode
from gridclear.shared.protocol import (
    MAX_READINGS_PER_MESSAGE,
    ClockState,
    ReadingsPayload,
    decode_payload,
)
from gridclear.shared.readings import Reading

__all__ = [
    "Outbox",
    "OutboxError",
    "OutboxStats",
    "PendingMessage",
    "ThinningResult",
]

_SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    seq         INTEGER PRIMARY KEY,
    token       TEXT    NOT NULL,
    prev        TEXT,
    digest      TEXT    NOT NULL,
    readings    INTEGER NOT NULL,
    first_ts_ms INTEGER,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_HIGH_WATER = 0.9
_LOW_WATER = 0.7
_THINNED_CHUNK = 500
"""Readings per rewritten message: well under MAX_READINGS_PER_MESSAGE and 256 KiB."""


class OutboxError(GridclearEdgeError, RuntimeError):
    """The outbox file cannot be used (another device's, a newer schema, unreadable)."""

    code = "outbox_unusable"


@dataclass(frozen=True)
class PendingMessage:
    seq: int
    token: str


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    """Messages not yet acknowledged by the broker."""
    bytes: int
    """Size of those messages."""
    max_bytes: int
    last_seq: int
    """The highest sequence number signed so far (0 before the first message)."""
    oldest_seq: int | None
    oldest_unsent_ms: int | None
    """Sample time of the oldest reading not yet acknowledged."""
    published_seq: int
    """The highest sequence number ever handed to the publisher."""
    thinned_total: int
    """Readings dropped by thinning since the outbox was created."""

    @property
    def over_limit(self) -> bool:
        return self.bytes > self.max_bytes


@dataclass(frozen=True)
class ThinningResult:
    first_seq: int
    messages_before: int
    messages_after: int
    readings_before: int
    readings_dropped: int
    step_ms: int


class Outbox:
    """See the module docstring. Open with :meth:`open`, close with ``with`` or :meth:`close`."""

    def __init__(
        self, connection: sqlite3.Connection, *, signer: Signer | None, max_bytes: int
    ) -> None:
        self._db = connection
        self._signer = signer
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._thinning_held = False

    @classmethod
    def open(cls, path: Path, *, signer: Signer | None, max_bytes: int = 512 * 2**20) -> Self:
        """Open (creating if needed) the outbox at ``path`` for ``signer``'s device.

        Without a signer the outbox can be read (stats, status) and acknowledged
        but not appended to or thinned. Raises OutboxError when the file belongs
        to another device or cannot be opened.
        """
        try:
            connection = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.Error as error:
            raise OutboxError(f"outbox {path}: cannot be opened: {error}") from None
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on the storage before append() returns (power cuts).
            connection.execute("PRAGMA synchronous=FULL")
            connection.executescript(_SCHEMA)
            outbox = cls(connection, signer=signer, max_bytes=max_bytes)
            outbox._initialise(path)
        except sqlite3.Error as error:
            connection.close()
            raise OutboxError(f"outbox {path}: {error}") from None
        except BaseException:
            connection.close()
            raise
        return outbox

    def _initialise(self, path: Path) -> None:
        with self._transaction():
            version = self._meta("schema_version")
            if version is None:
                self._set_meta("schema_version", _SCHEMA_VERSION)
            elif version != _SCHEMA_VERSION:
                raise OutboxError(
                    f"outbox {path} has schema version {version}; this agent knows "
                    f"{_SCHEMA_VERSION}"
                )
            if self._signer is None:
                return
            owner = self._meta("device_id")
            if owner is None:
                self._set_meta("device_id", self._signer.device_id)
            elif owner != self._signer.device_id:
                raise OutboxError(
                    f"outbox {path} belongs to device {owner!r}, not "
                    f"{self._signer.device_id!r}; its sequence and hash chain are that "
                    "device's. Use another outbox file."
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _meta_int(self, key: str) -> int:
        return int(self._meta(key) or 0)

    def _set_meta(self, key: str, value: str | int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    def _require_signer(self) -> Signer:
        if self._signer is None:
            raise OutboxError("this outbox was opened without a signer (read-only use)")
        return self._signer

    def _insert(self, seq: int, token: str, prev: str | None, digest: str, payload: Any) -> None:
        readings: tuple[Reading, ...] = payload.readings
        self._db.execute(
            "INSERT INTO message (seq, token, prev, digest, readings, first_ts_ms, created_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                token,
                prev,
                digest,
                len(readings),
                min((r.ts_ms for r in readings), default=None),
                payload.signed_ms,
            ),
        )

    # ---------------------------------------------------------------- the contract

    def append(self, readings: Sequence[Reading]) -> list[int]:
        """Sign ``readings`` as the next message(s) and commit; return their sequence numbers.

        More than MAX_READINGS_PER_MESSAGE readings become several messages in one
        transaction. Nothing is written for an empty batch.
        """
        signer = self._require_signer()
        if not readings:
            return []
        seqs = []
        with self._lock, self._transaction():
            seq = self._meta_int("last_seq")
            prev = self._meta("last_digest") or None
            added = 0
            for start in range(0, len(readings), MAX_READINGS_PER_MESSAGE):
                seq += 1
                message = signer.sign(
                    seq=seq, prev=prev, readings=readings[start : start + MAX_READINGS_PER_MESSAGE]
                )
                self._insert(seq, message.token, prev, message.digest, message.payload)
                prev = message.digest
                added += len(message.token)
                seqs.append(seq)
            self._set_meta("last_seq", seq)
            self._set_meta("last_digest", prev or "")
            self._set_meta("bytes", self._meta_int("bytes") + added)
        return seqs

    def claim(
        self, *, after_seq: int, limit: int, upto_seq: int | None = None
    ) -> list[PendingMessage]:
        """Up to ``limit`` unacknowledged messages with ``after_seq < seq [<= upto_seq]``, in order.

        Records durably that they were handed out (they are never thinned after this).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, token FROM message WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after_seq, upto_seq if upto_seq is not None else 2**63 - 1, limit),
            ).fetchall()
            if rows and rows[-1][0] > self._meta_int("published_seq"):
                with self._transaction():
                    self._set_meta("published_seq", rows[-1][0])
        return [PendingMessage(seq=int(seq), token=str(token)) for seq, token in rows]

    def ack(self, seqs: Collection[int]) -> None:
        """Delete messages the broker acknowledged (unknown sequence numbers are ignored)."""
        if not seqs:
            return
        with self._lock, self._transaction():
            removed = 0
            for seq in seqs:
                row = self._db.execute(
                    "DELETE FROM message WHERE seq = ? RETURNING length(token)", (seq,)
                ).fetchone()
                if row is not None:
                    removed += int(row[0])
            self._set_meta("bytes", max(self._meta_int("bytes") - removed, 0))

    def last_seq(self) -> int:
        with self._lock:
            return self._meta_int("last_seq")

    def stats(self) -> OutboxStats:
        with self._lock:
            depth, oldest_seq, oldest_ms = self._db.execute(
                "SELECT count(*), min(seq), min(first_ts_ms) FROM message"
            ).fetchone()
            return OutboxStats(
                depth=int(depth),
                bytes=self._meta_int("bytes"),
                max_bytes=self.max_bytes,
                last_seq=self._meta_int("last_seq"),
                oldest_seq=oldest_seq,
                oldest_unsent_ms=oldest_ms,
                published_seq=self._meta_int("published_seq"),
                thinned_total=self._meta_int("thinned_total"),
            )

    def set_status(self, status: dict[str, Any]) -> None:
        """Keep the agent's latest status (for ``gridclear-edge status``)."""
        text = json.dumps(status, separators=(",", ":"))
        with self._lock, self._transaction():
            self._set_meta("agent_status", text)

    def status(self) -> dict[str, Any] | None:
        with self._lock:
            text = self._meta("agent_status")
        return None if text is None else dict(json.loads(text))

    # ---------------------------------------------------------------- thinning

    def hold_thinning(self) -> None:
        """Stop thinning (waits for a running one): the publisher is about to send."""
        with self._lock:
            self._thinning_held = True

    def allow_thinning(self) -> None:
        with self._lock:
            self._thinning_held = False

    def needs_thinning(self) -> bool:
        with self._lock:
            return self._meta_int("bytes") > _HIGH_WATER * self.max_bytes

    def thin(self) -> ThinningResult | None:
        """Thin the never-published tail if the outbox is over 90% of its limit.

        Returns what was done, or None when nothing was (under the limit, held,
        or nothing left to drop).
        """
        signer = self._require_signer()
        with self._lock:
            if self._thinning_held:
                return None
            total = self._meta_int("bytes")
            if total <= _HIGH_WATER * self.max_bytes:
                return None
            with self._transaction():
                return self._thin(signer, total)

    def _thin(self, signer: Signer, total: int) -> ThinningResult | None:
        start = self._meta_int("published_seq") + 1
        rows = self._db.execute(
            "SELECT seq, token, prev FROM message WHERE seq >= ? ORDER BY seq", (start,)
        ).fetchall()
        if len(rows) < 2:
            return None
        start = int(rows[0][0])
        payloads = [_own_payload(str(token)) for _, token, _ in rows]
        readings = [r for p in payloads for r in p.readings]
        tail_bytes = sum(len(str(token)) for _, token, _ in rows)
        target = _LOW_WATER * self.max_bytes - (total - tail_bytes)
        keep: list[bool] = []
        step_ms = THINNING_STEPS_MS[-1]
        for step_ms in THINNING_STEPS_MS:
            keep = keep_nearest_boundaries(readings, step_ms)
            # Bytes scale with readings; the per-message overhead only shrinks.
            if tail_bytes * sum(keep) / len(readings) <= target:
                break
        dropped_count = len(readings) - sum(keep)
        if dropped_count == 0:
            return None
        kept = sorted((r for r, k in zip(readings, keep, strict=True) if k), key=_order)
        dropped_ts = sorted(r.ts_ms for r, k in zip(readings, keep, strict=True) if not k)
        clock = ClockState(
            synced=all(p.clock.synced for p in payloads),
            max_error_ms=max((p.clock.max_error_ms or 0 for p in payloads), default=0) or None,
        )
        earlier_thinned = sum(p.thinned for p in payloads)
        self._db.execute("DELETE FROM message WHERE seq >= ?", (start,))
        prev: str | None = rows[0][2]
        seq = start - 1
        added = 0
        counted = 0
        for offset in range(0, len(kept), _THINNED_CHUNK):
            chunk = kept[offset : offset + _THINNED_CHUNK]
            last = offset + _THINNED_CHUNK >= len(kept)
            # Each message counts the readings dropped up to its last sample.
            upto = len(dropped_ts) if last else _count_upto(dropped_ts, chunk[-1].ts_ms)
            thinned = upto - counted + (earlier_thinned if offset == 0 else 0)
            counted = upto
            seq += 1
            message = signer.sign(seq=seq, prev=prev, readings=chunk, thinned=thinned, clock=clock)
            self._insert(seq, message.token, prev, message.digest, message.payload)
            prev = message.digest
            added += len(message.token)
        self._set_meta("last_seq", seq)
        self._set_meta("last_digest", prev or "")
        self._set_meta("bytes", total - tail_bytes + added)
        self._set_meta("thinned_total", self._meta_int("thinned_total") + dropped_count)
        return ThinningResult(
            first_seq=start,
            messages_before=len(rows),
            messages_after=seq - start + 1,
            readings_before=len(readings),
            readings_dropped=dropped_count,
            step_ms=step_ms,
        )


def _order(reading: Reading) -> tuple[int, str]:
    return reading.ts_ms, reading.meter


def _count_upto(sorted_ts: list[int], ts_ms: int) -> int:
    return bisect_right(sorted_ts, ts_ms)


def _own_payload(token: str) -> ReadingsPayload:
    """The payload of a message this outbox signed (trusted: it never left the device)."""
    return decode_payload(b64url_decode(token.split(".")[1]))
