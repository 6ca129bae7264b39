"""Keeping ``interval_energy`` up to date as samples arrive, early or late.

The ingest writer queues, in the transaction that stores samples, the time range
of new samples per meter (``interval_dirty``). :func:`refresh_intervals` takes a
share of that queue (``FOR UPDATE SKIP LOCKED``, so several workers divide it),
finds for each meter the slots whose boundaries the new samples can move (from
the stored sample before them to the one after, see
:func:`~gridclear.cloud.intervals.compute.affected_slots`), reads the samples
around those slots and writes their energy again. A per-meter advisory lock makes
two refreshes of one meter take turns, so an older computation never overwrites
a newer one.

An outbox that drains hours of samples after an outage therefore fills the slots
it covers, and turns the slots interpolated over the gap into measured ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from gridclear.cloud.intervals.compute import (
    DEFAULT_MAX_GAP_MS,
    RegisterSample,
    affected_slots,
    slot_energy,
)
from gridclear.shared.intervals import DEFAULT_SLOT_MS

__all__ = ["INTERVAL_LOCK_CLASS", "RefreshResult", "refresh_intervals"]

INTERVAL_LOCK_CLASS = 0x67636976  # "gciv": the first key of the per-meter advisory lock


@dataclass(frozen=True)
class RefreshResult:
    meters: int
    slots: int


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> int | None:
    row = conn.execute(query, params).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _refresh_meter(
    conn: psycopg.Connection[Any],
    meter_id: int,
    lo_ms: int,
    hi_ms: int,
    *,
    slot_ms: int,
    max_gap_ms: int,
) -> int:
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (INTERVAL_LOCK_CLASS, meter_id % 2**31))
    before = _one(
        conn,
        "SELECT ts_to_ms(max(ts)) FROM readings WHERE meter_id = %s AND ts < %s",
        (meter_id, _ts(lo_ms)),
    )
    after = _one(
        conn,
        "SELECT ts_to_ms(min(ts)) FROM readings WHERE meter_id = %s AND ts > %s",
        (meter_id, _ts(hi_ms)),
    )
    first, last = affected_slots(
        lo_ms if before is None else before, hi_ms if after is None else after, slot_ms=slot_ms
    )
    # The samples around every boundary of those slots.
    fetch_lo = _one(
        conn,
        "SELECT ts_to_ms(max(ts)) FROM readings WHERE meter_id = %s AND ts <= %s",
        (meter_id, _ts(first)),
    )
    fetch_hi = _one(
        conn,
        "SELECT ts_to_ms(min(ts)) FROM readings WHERE meter_id = %s AND ts >= %s",
        (meter_id, _ts(last + slot_ms)),
    )
    rows = conn.execute(
        "SELECT ts_to_ms(ts), import_wh, export_wh FROM readings"
        " WHERE meter_id = %s AND ts BETWEEN %s AND %s ORDER BY ts",
        (
            meter_id,
            _ts(first if fetch_lo is None else fetch_lo),
            _ts(last + slot_ms if fetch_hi is None else fetch_hi),
        ),
    ).fetchall()
    samples = [RegisterSample(int(ts), imp, exp) for ts, imp, exp in rows]
    slots = [
        s
        for s in slot_energy(samples, slot_ms=slot_ms, max_gap_ms=max_gap_ms)
        if first <= s.start_ms <= last
    ]
    if not slots:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO interval_energy (meter_id, slot_start, slot_end, import_wh, export_wh,"
            " complete, interpolated, counter_reset, computed_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())"
            " ON CONFLICT (meter_id, slot_start) DO UPDATE SET slot_end = EXCLUDED.slot_end,"
            " import_wh = EXCLUDED.import_wh, export_wh = EXCLUDED.export_wh,"
            " complete = EXCLUDED.complete, interpolated = EXCLUDED.interpolated,"
            " counter_reset = EXCLUDED.counter_reset, computed_at = now()",
            [
                (
                    meter_id,
                    _ts(s.start_ms),
                    _ts(s.end_ms),
                    s.import_wh,
                    s.export_wh,
                    s.complete,
                    s.interpolated,
                    s.counter_reset,
                )
                for s in slots
            ],
        )
    return len(slots)


def refresh_intervals(
    conn: psycopg.Connection[Any],
    *,
    slot_ms: int = DEFAULT_SLOT_MS,
    max_gap_ms: int = DEFAULT_MAX_GAP_MS,
    limit: int = 1000,
) -> RefreshResult:
    """Recompute the slots touched by up to ``limit`` queued sample ranges, in one transaction.

    ``conn`` is in autocommit mode. Returns how many meters and slots were written;
    call again while it returns meters > 0 to empty the queue.
    """
    with conn.transaction():
        rows = conn.execute(
            "DELETE FROM interval_dirty WHERE id IN (SELECT id FROM interval_dirty"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING meter_id, ts_to_ms(from_ts),"
            " ts_to_ms(to_ts)",
            (limit,),
        ).fetchall()
        ranges: dict[int, tuple[int, int]] = {}
        for meter_id, lo, hi in rows:
            old = ranges.get(meter_id)
            ranges[meter_id] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        slots = 0
        # Sorted, so that two refreshes take the per-meter locks in the same order.
        for meter_id in sorted(ranges):
            lo, hi = ranges[meter_id]
            slots += _refresh_meter(
                conn, meter_id, int(lo), int(hi), slot_ms=slot_ms, max_gap_ms=max_gap_ms
            )
    return RefreshResult(meters=len(ranges), slots=slots)
