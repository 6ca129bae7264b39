"""Writing a batch of classified messages to PostgreSQL in one transaction.

Per batch, on one connection (DESIGN §7):

1. binary COPY of the accepted messages and of their readings into temporary
   staging tables (``ON COMMIT DELETE ROWS``, made once per connection);
2. one ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`` into
   ``raw_messages``, which also judges each message's hash chain against its
   stored (or same-batch) predecessor;
3. the staged messages that were not inserted are told apart: the same digest
   is stored already (a redelivery or replay: a *duplicate*, skipped and counted)
   or another digest is (a *sequence conflict*, quarantined);
4. one ``INSERT … SELECT … ON CONFLICT DO NOTHING`` of the readings of the
   inserted messages; successors that were waiting for their predecessor get
   their chain judged; the time ranges touched are queued for interval energy;
5. quarantine rows and status updates; then COMMIT.

Nothing is acknowledged to the broker before that COMMIT returns (the worker's
job), so a crash at any point means redelivery, and redelivery means duplicates
that step 3 skips. The queries are written as index probes per staged row
(LATERAL, EXISTS) and the session disables hash and merge joins: staging tables
have no statistics, and a plan that scanned ``raw_messages`` would get slower
with every message ever stored.

A message the database refuses (a value it cannot hold) must not block the ones
behind it: the batch is split until the refused message is alone, and that one
goes to quarantine as ``store_failed``. Any other exception raised while writing
is handled the same way, and the message goes to quarantine as ``internal_error``:
nothing a message contains can stop the writer.

The quarantine is capped per device and time window (:class:`QuarantineCap`): the
first refusals of a window are kept as rows (the sample), the rest only counted in
``quarantine_windows``, so a flood of junk from one gateway cannot fill the disk.
Text that PostgreSQL cannot hold (NUL, lone surrogates) is escaped in the
quarantine's text columns; the body is kept as bytes, as it came.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from gridclear.cloud.ingest.verify import Accepted, IngestReason, Rejected, StatusUpdate
from gridclear.cloud.storage.quality import quality_bits
from gridclear.shared.readings import Reading

__all__ = ["QUARANTINE_BODY_BYTES", "BatchWriter", "QuarantineCap", "WriteResult"]

log = logging.getLogger(__name__)

QUARANTINE_BODY_BYTES = 16 * 1024
"""How much of a refused message is kept: enough to investigate, bounded against floods."""

_INT8_MAX = 2**63 - 1
_MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_FLOAT4_MAX = 3.4e38

Item = Accepted | StatusUpdate | Rejected


@dataclass(frozen=True)
class QuarantineCap:
    """At most ``rows`` quarantine rows per device and window of ``window_ms``.

    Refusals over the cap are counted (``quarantine_windows.suppressed``), not kept.
    With the defaults a device that sends nothing but junk adds at most 100 rows of
    at most 16 KiB (the kept part of each body) an hour, 1.6 MiB.
    """

    rows: int = 100
    window_ms: int = 3_600_000

    def __post_init__(self) -> None:
        if self.rows < 0 or self.window_ms < 1:
            raise ValueError("the quarantine cap needs rows >= 0 and a window of at least 1 ms")


@dataclass
class WriteResult:
    """What one committed batch did."""

    stored_messages: int = 0
    stored_readings: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    """Everything quarantined (kept as a row), including refusals found while writing."""
    suppressed: list[Rejected] = field(default_factory=list)
    """Refused, but over the quarantine's cap: counted, not kept."""
    chain: dict[str, int] = field(default_factory=dict)
    """Stored messages by hash-chain verdict (first, ok, gap, broken)."""
    statuses: int = 0

    def merge(self, other: WriteResult) -> None:
        self.stored_messages += other.stored_messages
        self.stored_readings += other.stored_readings
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.suppressed += other.suppressed
        self.statuses += other.statuses
        for key, value in other.chain.items():
            self.chain[key] = self.chain.get(key, 0) + value


_SETUP = """
SET enable_hashjoin = off;
SET enable_mergejoin = off;
CREATE TEMP TABLE IF NOT EXISTS stage_messages (
    idx int4, device_pk int8, seq int8, signed_ms int8, received_ms int8, kid text,
    digest bytea, prev bytea, pred_digest bytea, clock_synced bool, thinned int4,
    reading_count int4, token bytea
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_readings (
    idx int4, meter_id int8, ts_ms int8, import_wh int8, export_wh int8, power_w int8,
    voltage_l1 float4, voltage_l2 float4, voltage_l3 float4,
    current_l1 float4, current_l2 float4, current_l3 float4,
    frequency_hz float4, quality int2, device_pk int8, seq int8
) ON COMMIT DELETE ROWS;
"""

_MESSAGE_TYPES = [
    "int4", "int8", "int8", "int8", "int8", "text",
    "bytea", "bytea", "bytea", "bool", "int4", "int4", "bytea",
]  # fmt: skip
_READING_TYPES = [
    "int4", "int8", "int8", "int8", "int8", "int8",
    "float4", "float4", "float4", "float4", "float4", "float4",
    "float4", "int2", "int8", "int8",
]  # fmt: skip

_INSERT_MESSAGES = """
INSERT INTO raw_messages (device_pk, seq, signed_at, received_at, kid, digest, prev, chain,
                          clock_synced, thinned, reading_count, token)
SELECT s.device_pk, s.seq, ms_to_ts(s.signed_ms), ms_to_ts(s.received_ms), s.kid, s.digest, s.prev,
       CASE WHEN s.seq = 1 THEN CASE WHEN s.prev IS NULL THEN 'first' ELSE 'broken' END
            WHEN COALESCE(p.digest, s.pred_digest) IS NULL THEN 'gap'
            WHEN COALESCE(p.digest, s.pred_digest) = s.prev THEN 'ok'
            ELSE 'broken' END,
       s.clock_synced, s.thinned, s.reading_count, s.token
FROM stage_messages s
LEFT JOIN LATERAL (SELECT m.digest FROM raw_messages m
                   WHERE m.device_pk = s.device_pk AND m.seq = s.seq - 1 LIMIT 1) p ON true
ORDER BY s.device_pk, s.seq
ON CONFLICT DO NOTHING
RETURNING device_pk, seq, chain
"""

_CONFLICTS = """
SELECT s.idx FROM stage_messages s
WHERE EXISTS (SELECT 1 FROM raw_messages m
              WHERE m.device_pk = s.device_pk AND m.seq = s.seq AND m.digest <> s.digest)
"""

_INSERT_READINGS = """
INSERT INTO readings (meter_id, ts, import_wh, export_wh, power_w,
                      voltage_l1, voltage_l2, voltage_l3, current_l1, current_l2, current_l3,
                      frequency_hz, quality, device_pk, seq)
SELECT r.meter_id, ms_to_ts(r.ts_ms), r.import_wh, r.export_wh, r.power_w,
       r.voltage_l1, r.voltage_l2, r.voltage_l3, r.current_l1, r.current_l2, r.current_l3,
       r.frequency_hz, r.quality, r.device_pk, r.seq
FROM stage_readings r
WHERE %(all)s OR r.idx = ANY(%(keep)s)
ORDER BY r.meter_id, r.ts_ms
ON CONFLICT DO NOTHING
"""

_CHAIN_SUCCESSORS = """
UPDATE raw_messages n SET chain = CASE WHEN n.prev = s.digest THEN 'ok' ELSE 'broken' END
FROM stage_messages s
WHERE (%(all)s OR s.idx = ANY(%(keep)s))
  AND n.device_pk = s.device_pk AND n.seq = s.seq + 1 AND n.chain = 'gap'
"""

_DIRTY = """
INSERT INTO interval_dirty (meter_id, from_ts, to_ts)
SELECT r.meter_id, ms_to_ts(min(r.ts_ms)), ms_to_ts(max(r.ts_ms))
FROM stage_readings r
WHERE (%(all)s OR r.idx = ANY(%(keep)s)) AND (r.import_wh IS NOT NULL OR r.export_wh IS NOT NULL)
GROUP BY r.meter_id
"""

_STATUS = """
INSERT INTO device_status (device_pk, state, reported_at, received_at, agent, kid, last_seq,
                           outbox_depth, oldest_unsent_at, thinned_readings, meters_failing)
SELECT d.id, %s, ms_to_ts(%s::int8), ms_to_ts(%s::int8), %s, %s, %s, %s,
       ms_to_ts(%s::int8), %s, %s
FROM devices d WHERE d.device_id = %s
ON CONFLICT (device_pk) DO UPDATE SET
    state = EXCLUDED.state, reported_at = EXCLUDED.reported_at,
    received_at = EXCLUDED.received_at,
    agent = COALESCE(EXCLUDED.agent, device_status.agent),
    kid = COALESCE(EXCLUDED.kid, device_status.kid),
    last_seq = COALESCE(EXCLUDED.last_seq, device_status.last_seq),
    outbox_depth = COALESCE(EXCLUDED.outbox_depth, device_status.outbox_depth),
    oldest_unsent_at = EXCLUDED.oldest_unsent_at,
    thinned_readings = COALESCE(EXCLUDED.thinned_readings, device_status.thinned_readings),
    meters_failing = COALESCE(EXCLUDED.meters_failing, device_status.meters_failing)
WHERE device_status.reported_at <= EXCLUDED.reported_at
"""


def _int8(value: int | None) -> bool:
    return value is None or -_INT8_MAX <= value <= _INT8_MAX


def _storable(reading: Reading) -> bool:
    """Whether every value fits its column (pydantic checked types, not these ranges).

    On the hot path: one reading costs a few comparisons, no allocation.
    """
    if reading.ts_ms > _MAX_TS_MS:
        return False
    for number in (reading.import_wh, reading.export_wh, reading.power_w):
        if number is not None and not -_INT8_MAX <= number <= _INT8_MAX:
            return False
    for values in (reading.voltage_v, reading.current_a):
        if values is not None:
            for value in values:
                # NaN passes (PostgreSQL's real holds it); only what float4 cannot is refused.
                if abs(value) > _FLOAT4_MAX:
                    return False
    frequency = reading.frequency_hz
    return frequency is None or not abs(frequency) > _FLOAT4_MAX


def _phases(values: tuple[float, ...] | None) -> tuple[float | None, float | None, float | None]:
    if values is None:
        return None, None, None
    padded = (*values, None, None, None)
    return padded[0], padded[1], padded[2]


def _rejected(message: Accepted, reason: IngestReason, detail: str) -> Rejected:
    return Rejected(
        topic=message.topic,
        body=message.token,
        reason=reason,
        detail=detail,
        received_ms=message.received_ms,
        device_id=message.payload.device_id,
        kid=message.kid,
        seq=message.payload.seq,
    )


def _refused(item: Item, error: Exception) -> Rejected:
    """What goes to quarantine for ``item`` when writing it raised ``error``."""
    if isinstance(error, psycopg.Error):
        reason, detail = IngestReason.STORE_FAILED, "the database refused it"
    else:
        reason = IngestReason.INTERNAL_ERROR
        detail = f"{type(error).__name__} while storing it: {str(error)[:300]}"
    if isinstance(item, Accepted):
        return _rejected(item, reason, detail)
    if isinstance(item, StatusUpdate):
        return Rejected(item.topic, item.body, reason, detail, item.received_ms, item.device_id)
    # A quarantine row itself could not be written: keep what surely can be.
    return Rejected(
        topic=_printable(item.topic),
        body=item.body,
        reason=IngestReason.INTERNAL_ERROR,
        detail=f"quarantined as {item.reason.value}, but the row was refused: {detail}",
        received_ms=item.received_ms,
        device_id=_printable(item.device_id) if item.device_id is not None else None,
    )


def _printable(text: str) -> str:
    """``text`` as PostgreSQL's text can hold it: NUL and lone surrogates escaped."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode()
    return text


class BatchWriter:
    """Writes classified messages in batches, on a connection it owns and reopens.

    Not thread-safe: one writer per worker thread. :meth:`write` either commits the
    whole batch and returns what it did, or raises ``psycopg.OperationalError``
    (the database is unreachable) having committed nothing; the caller retries.
    """

    def __init__(
        self,
        database_url: str,
        *,
        connect_timeout_s: float = 5.0,
        quarantine_cap: QuarantineCap | None = None,
    ) -> None:
        self._url = database_url
        self._timeout = connect_timeout_s
        self._cap = quarantine_cap or QuarantineCap()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._meters: dict[tuple[int, str], int] = {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(
            self._url, autocommit=True, connect_timeout=max(1, round(self._timeout))
        )
        conn.execute(_SETUP)
        try:
            # A signed message over 2 KB (50 readings make 7 KB) is compressed when it is
            # staged: lz4 does that at a third of the CPU of the default pglz. Values
            # compressed either way read back the same; a server built without lz4 keeps
            # pglz.
            conn.execute("SET default_toast_compression = lz4")
        except psycopg.errors.InvalidParameterValue:
            log.info("ingest: this PostgreSQL has no lz4; messages are compressed with pglz")
        self._conn = conn
        return conn

    def write(self, items: Sequence[Item]) -> WriteResult:
        """Store ``items`` (quarantine included) in one transaction, or raise OperationalError.

        Raises nothing else: a message whose rows cannot be written, for whatever
        reason, goes to quarantine (``store_failed`` when the database refused it,
        ``internal_error`` for any other exception) and the rest of the batch is
        stored.
        """
        try:
            return self._write_once(items)
        except psycopg.OperationalError:
            self.close()
            raise
        except Exception as error:
            # The transaction was rolled back on the way out; find the culprit.
            failure = error
            self._forget_uncommitted(error)
            log.warning("ingest: a batch could not be written (%r); splitting it", error)
        if len(items) > 1:
            half = len(items) // 2
            result = self.write(items[:half])
            result.merge(self.write(items[half:]))
            return result
        (item,) = items
        # Alone now: quarantine it, and if even that row is refused, the plainest one.
        refused = _refused(item, failure)
        for _ in range(2):
            try:
                return self._write_once([refused])
            except psycopg.OperationalError:
                self.close()
                raise
            except Exception as error:
                failure = error
                self._forget_uncommitted(error)
                refused = _refused(refused, failure)
        log.error(
            "ingest: a refused message could not be quarantined; dropped (sha256 %s): %r",
            hashlib.sha256(refused.body).hexdigest(),
            failure,
        )
        return WriteResult()

    def _forget_uncommitted(self, error: Exception) -> None:
        """Undo what a rolled-back attempt left in this writer's memory."""
        # Meters created in the rolled-back transaction are gone, and their ids with them.
        self._meters.clear()
        if not isinstance(error, psycopg.Error):
            # Raised by our code at any point of the protocol (in a COPY, say): do not
            # trust the connection's state; the next attempt opens a new one.
            self.close()

    def _write_once(self, items: Sequence[Item]) -> WriteResult:
        result = WriteResult()
        messages: list[Accepted] = []
        seen: dict[tuple[int, int], Accepted] = {}
        statuses: list[StatusUpdate] = []
        for item in items:
            if isinstance(item, Rejected):
                result.rejected.append(item)
            elif isinstance(item, StatusUpdate):
                statuses.append(item)
            elif not all(_storable(r) for r in item.payload.readings) or not (
                item.payload.signed_ms <= _MAX_TS_MS
            ):
                result.rejected.append(
                    _rejected(item, IngestReason.INVALID_PAYLOAD, "a value is out of range")
                )
            else:
                key = (item.device_pk, item.payload.seq)
                earlier = seen.get(key)
                if earlier is None:
                    seen[key] = item
                    messages.append(item)
                elif earlier.digest == item.digest:
                    result.duplicates += 1
                else:
                    result.rejected.append(
                        _rejected(
                            item,
                            IngestReason.SEQ_CONFLICT,
                            "another message with this sequence number came in the same batch",
                        )
                    )
        conn = self._connection()
        with conn.transaction():
            if messages:
                self._store_messages(conn, messages, seen, result)
            if result.rejected:
                result.rejected, result.suppressed = self._admit(conn, result.rejected)
                self._quarantine(conn, result.rejected)
            for status in statuses:
                self._status(conn, status)
                result.statuses += 1
        return result

    def _meter_ids(
        self, conn: psycopg.Connection[tuple[Any, ...]], messages: Sequence[Accepted]
    ) -> None:
        missing = {
            (m.device_pk, r.meter)
            for m in messages
            for r in m.payload.readings
            if (m.device_pk, r.meter) not in self._meters
        }
        if not missing:
            return
        pks = [pk for pk, _ in missing]
        names = [name for _, name in missing]
        conn.execute(
            "INSERT INTO meters (device_pk, name)"
            " SELECT * FROM unnest(%s::int8[], %s::text[]) ORDER BY 1, 2"
            " ON CONFLICT (device_pk, name) DO NOTHING",
            (pks, names),
        )
        rows = conn.execute(
            "SELECT m.device_pk, m.name, m.id FROM meters m"
            " JOIN unnest(%s::int8[], %s::text[]) AS w(device_pk, name)"
            " ON m.device_pk = w.device_pk AND m.name = w.name",
            (pks, names),
        ).fetchall()
        for pk, name, meter_id in rows:
            self._meters[(pk, name)] = meter_id

    def _store_messages(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        messages: Sequence[Accepted],
        by_key: dict[tuple[int, int], Accepted],
        result: WriteResult,
    ) -> None:
        self._meter_ids(conn, messages)
        meters = self._meters
        with conn.cursor() as cur:
            with cur.copy("COPY stage_messages FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_MESSAGE_TYPES)
                for idx, m in enumerate(messages):
                    p = m.payload
                    pred = by_key.get((m.device_pk, p.seq - 1))
                    copy.write_row(
                        (
                            idx,
                            m.device_pk,
                            p.seq,
                            p.signed_ms,
                            m.received_ms,
                            m.kid,
                            m.digest,
                            bytes.fromhex(p.prev) if p.prev is not None else None,
                            pred.digest if pred is not None else None,
                            p.clock.synced,
                            p.thinned,
                            len(p.readings),
                            m.token,
                        )
                    )
            with cur.copy("COPY stage_readings FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_READING_TYPES)
                for idx, m in enumerate(messages):
                    pk, seq = m.device_pk, m.payload.seq
                    for r in m.payload.readings:
                        copy.write_row(
                            (
                                idx,
                                meters[(pk, r.meter)],
                                r.ts_ms,
                                r.import_wh,
                                r.export_wh,
                                r.power_w,
                                *_phases(r.voltage_v),
                                *_phases(r.current_a),
                                r.frequency_hz,
                                quality_bits(r.quality),
                                pk,
                                seq,
                            )
                        )
            cur.execute(_INSERT_MESSAGES)
            inserted: dict[tuple[int, int], str] = {
                (pk, seq): chain for pk, seq, chain in cur.fetchall()
            }
            conflicts = {idx for (idx,) in cur.execute(_CONFLICTS).fetchall()}
            keep: list[int] = []
            for idx, m in enumerate(messages):
                key = (m.device_pk, m.payload.seq)
                if idx in conflicts:
                    if key in inserted:
                        # Only where the unique key holds signed_at too (TimescaleDB): an
                        # earlier message with this seq was signed at another time.
                        cur.execute(
                            "DELETE FROM raw_messages"
                            " WHERE device_pk = %s AND seq = %s AND digest = %s",
                            (m.device_pk, m.payload.seq, m.digest),
                        )
                        del inserted[key]
                    result.rejected.append(
                        _rejected(
                            m,
                            IngestReason.SEQ_CONFLICT,
                            f"a different message with seq {m.payload.seq} is stored already",
                        )
                    )
                elif key in inserted:
                    keep.append(idx)
                    chain = inserted[key]
                    result.chain[chain] = result.chain.get(chain, 0) + 1
                else:
                    result.duplicates += 1
            if not keep:
                return
            params = {"all": len(keep) == len(messages), "keep": keep}
            cur.execute(_INSERT_READINGS, params)
            result.stored_readings += max(cur.rowcount, 0)
            result.stored_messages += len(keep)
            cur.execute(_CHAIN_SUCCESSORS, params)
            cur.execute(_DIRTY, params)

    def _admit(
        self, conn: psycopg.Connection[tuple[Any, ...]], rejected: list[Rejected]
    ) -> tuple[list[Rejected], list[Rejected]]:
        """Split ``rejected`` into what the cap lets into quarantine and what it does not.

        Counted in ``quarantine_windows`` in the batch's transaction, one device and
        window at a time, in a fixed order (workers lock the same rows in the same
        order, so they never deadlock).
        """
        window_ms = self._cap.window_ms
        groups: dict[tuple[str, int], list[Rejected]] = {}
        for r in rejected:
            key = (r.device_id or "", r.received_ms - r.received_ms % window_ms)
            groups.setdefault(key, []).append(r)
        kept: list[Rejected] = []
        suppressed: list[Rejected] = []
        for (device, start_ms), group in sorted(groups.items()):
            row = conn.execute(
                "SELECT quarantine_admit(%s, ms_to_ts(%s::int8), %s, %s)",
                (_printable(device), start_ms, len(group), self._cap.rows),
            ).fetchone()
            admitted = int(row[0]) if row is not None else 0
            kept += group[:admitted]
            suppressed += group[admitted:]
        return kept, suppressed

    def _quarantine(
        self, conn: psycopg.Connection[tuple[Any, ...]], rejected: Sequence[Rejected]
    ) -> None:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY quarantine (received_at, reason, detail, topic, device_id, kid, seq,"
                " size, body) FROM STDIN"
            ) as copy,
        ):
            for r in rejected:
                copy.write_row(
                    (
                        datetime.fromtimestamp(r.received_ms / 1000, tz=UTC),
                        r.reason.value,
                        _printable(r.detail[:1000]),
                        _printable(r.topic[:1000]),
                        _printable(r.device_id) if r.device_id is not None else None,
                        _printable(r.kid[:200]) if r.kid is not None else None,
                        r.seq,
                        len(r.body),
                        r.body[:QUARANTINE_BODY_BYTES],
                    )
                )

    def _status(self, conn: psycopg.Connection[tuple[Any, ...]], update: StatusUpdate) -> None:
        s = update.status
        conn.execute(
            _STATUS,
            (
                s.state,
                min(s.ts_ms, _MAX_TS_MS),
                update.received_ms,
                s.agent,
                s.kid,
                s.last_seq if _int8(s.last_seq) else None,
                s.outbox_depth if _int8(s.outbox_depth) else None,
                min(s.oldest_unsent_ms, _MAX_TS_MS) if s.oldest_unsent_ms is not None else None,
                s.thinned_readings if _int8(s.thinned_readings) else None,
                list(s.meters_failing) if s.meters_failing is not None else None,
                update.device_id,
            ),
        )
