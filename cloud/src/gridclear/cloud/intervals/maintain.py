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

The work of one call is bounded, whatever the queue or the table holds (one far-off
sample once made a refresh walk every slot between 1970 and now, in the writer's
thread, and a restarted worker started over):

- a neighbouring sample more than ``max_span_ms`` away is not reached for, and no
  slot is interpolated across such a gap
  (:func:`~gridclear.cloud.intervals.compute.slot_energy`), so the slots to walk
  lie near samples; a stretch without samples is stepped over in one query;
- the slots are walked in windows of at most :data:`WINDOW_SLOTS` slots, each read
  with at most ``max_samples`` samples (a window holding more is shortened; a single
  slot holding more is read as the samples that decide its energy: those around its
  boundaries, the first and last, and those either side of a reset);
- one call walks at most ``max_slots`` slots in all; what is left of a range goes
  back to the queue as an exact slot range (``interval_dirty.slots``), for the next
  call, which may be another worker's.

**On the TimescaleDB path** (migration 0060: ``interval_energy`` is a view over the
continuous aggregate) the aggregate computes the energy of every slot, except where a
register fell: an aggregate does not see the order of the samples inside a bucket, so
it cannot find every reset. There a refresh finds, per queued range, the falls of the
register (one query), and computes and writes only the slots that overlap one, into
``interval_energy_resets``, whose rows the view takes over the aggregate's; the other
rows of the range are deleted (a late sample can narrow a fall). The arithmetic is the
same code on both paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from gridclear.cloud.intervals.compute import (
    DEFAULT_MAX_GAP_MS,
    DEFAULT_MAX_SPAN_MS,
    RegisterSample,
    SlotEnergy,
    affected_slots,
    slot_energy,
)
from gridclear.shared.intervals import DEFAULT_SLOT_MS, slot_start

__all__ = [
    "AGGREGATE_BUCKET_MS",
    "DEFAULT_REFRESH_SAMPLES",
    "DEFAULT_REFRESH_SLOTS",
    "INTERVAL_LOCK_CLASS",
    "WINDOW_SLOTS",
    "RefreshResult",
    "refresh_intervals",
]

INTERVAL_LOCK_CLASS = 0x67636976  # "gciv": the first key of the per-meter advisory lock

DEFAULT_REFRESH_SLOTS = 4 * 96 * 7
"""Slots one call walks at most: a week of 15-minute slots for one meter."""

DEFAULT_REFRESH_SAMPLES = 50_000
"""Samples read into memory at once, at most."""

WINDOW_SLOTS = 96
"""Slots computed from one read of samples, at most."""

AGGREGATE_BUCKET_MS = 15 * 60 * 1000
"""The bucket of the continuous aggregate ``readings_15m`` (TimescaleDB path)."""


@dataclass(frozen=True)
class RefreshResult:
    meters: int
    """Meters whose queued ranges this call took."""
    slots: int
    """Slots written."""
    deferred: int = 0
    """Slot ranges put back in the queue because the call reached ``max_slots``."""


@dataclass(frozen=True)
class _Limits:
    slot_ms: int
    max_gap_ms: int
    max_span_ms: int
    max_samples: int
    resets_only: bool = False
    """The TimescaleDB path: the workers write only the slots around a fall."""


_UPSERT_TEMPLATE = (
    "INSERT INTO {table} (meter_id, slot_start, slot_end, import_wh, export_wh,"
    " complete, interpolated, counter_reset, computed_at)"
    " VALUES (%s, ms_to_ts(%s), ms_to_ts(%s), %s, %s, %s, %s, %s, now())"
    " ON CONFLICT (meter_id, slot_start) DO UPDATE SET slot_end = EXCLUDED.slot_end,"
    " import_wh = EXCLUDED.import_wh, export_wh = EXCLUDED.export_wh,"
    " complete = EXCLUDED.complete, interpolated = EXCLUDED.interpolated,"
    " counter_reset = EXCLUDED.counter_reset, computed_at = now()"
)
_UPSERT = {
    False: _UPSERT_TEMPLATE.format(table="interval_energy"),
    True: _UPSERT_TEMPLATE.format(table="interval_energy_resets"),
}

# Consecutive samples of a register where it fell (a reset), no further apart than
# the longest span anything is interpolated over (further apart they are unrelated).
_FALLS = """
SELECT ts_to_ms(t0), ts_to_ms(t1) FROM (
    SELECT lag(ts) OVER w AS t0, ts AS t1, v < lag(v) OVER w AS fell
    FROM (SELECT ts, import_wh AS v, 1 AS reg FROM readings
          WHERE meter_id = %(meter)s AND ts BETWEEN ms_to_ts(%(lo)s) AND ms_to_ts(%(hi)s)
            AND import_wh IS NOT NULL
          UNION ALL
          SELECT ts, export_wh, 2 FROM readings
          WHERE meter_id = %(meter)s AND ts BETWEEN ms_to_ts(%(lo)s) AND ms_to_ts(%(hi)s)
            AND export_wh IS NOT NULL) r
    WINDOW w AS (PARTITION BY reg ORDER BY ts)
) p
WHERE fell AND ts_to_ms(t1) - ts_to_ms(t0) <= %(span)s
"""

# The samples that decide one slot's energy, however many it holds: per register, the
# ones around each boundary, the first and the last, and both sides of every reset
# (the register going backwards). Interval arithmetic over these gives what it gives
# over all of them; only a slot with more resets than the limit is cut short.
_DECIDING_SAMPLES = """
WITH r AS MATERIALIZED (
    SELECT ts, import_wh AS a, export_wh AS b FROM readings
    WHERE meter_id = %(meter)s AND ts BETWEEN ms_to_ts(%(lo)s) AND ms_to_ts(%(hi)s)
), ea AS (
    SELECT ts, a < lag(a) OVER w OR a > lead(a) OVER w AS edge
    FROM r WHERE a IS NOT NULL WINDOW w AS (ORDER BY ts)
), eb AS (
    SELECT ts, b < lag(b) OVER w OR b > lead(b) OVER w AS edge
    FROM r WHERE b IS NOT NULL WINDOW w AS (ORDER BY ts)
), keep AS (
    SELECT min(ts) AS ts FROM r
    UNION SELECT max(ts) FROM r
    UNION SELECT min(ts) FROM r WHERE a IS NOT NULL
    UNION SELECT max(ts) FROM r WHERE a IS NOT NULL
    UNION SELECT min(ts) FROM r WHERE b IS NOT NULL
    UNION SELECT max(ts) FROM r WHERE b IS NOT NULL
    UNION SELECT max(ts) FROM r WHERE a IS NOT NULL AND ts <= ms_to_ts(%(start)s)
    UNION SELECT min(ts) FROM r WHERE a IS NOT NULL AND ts >= ms_to_ts(%(start)s)
    UNION SELECT max(ts) FROM r WHERE a IS NOT NULL AND ts <= ms_to_ts(%(end)s)
    UNION SELECT min(ts) FROM r WHERE a IS NOT NULL AND ts >= ms_to_ts(%(end)s)
    UNION SELECT max(ts) FROM r WHERE b IS NOT NULL AND ts <= ms_to_ts(%(start)s)
    UNION SELECT min(ts) FROM r WHERE b IS NOT NULL AND ts >= ms_to_ts(%(start)s)
    UNION SELECT max(ts) FROM r WHERE b IS NOT NULL AND ts <= ms_to_ts(%(end)s)
    UNION SELECT min(ts) FROM r WHERE b IS NOT NULL AND ts >= ms_to_ts(%(end)s)
    UNION (SELECT ts FROM ea WHERE edge UNION SELECT ts FROM eb WHERE edge
           ORDER BY ts LIMIT %(cap)s)
)
SELECT ts_to_ms(r.ts), r.a, r.b FROM r WHERE r.ts IN (SELECT ts FROM keep) ORDER BY r.ts
"""


def _one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> int | None:
    row = conn.execute(query, params).fetchone()
    return None if row is None or row[0] is None else int(row[0])


_BEFORE = {
    True: "SELECT ts_to_ms(max(ts)) FROM readings WHERE meter_id = %s AND ts < ms_to_ts(%s)",
    False: "SELECT ts_to_ms(max(ts)) FROM readings WHERE meter_id = %s AND ts <= ms_to_ts(%s)",
}
_AFTER = {
    True: "SELECT ts_to_ms(min(ts)) FROM readings WHERE meter_id = %s AND ts > ms_to_ts(%s)",
    False: "SELECT ts_to_ms(min(ts)) FROM readings WHERE meter_id = %s AND ts >= ms_to_ts(%s)",
}


def _before(
    conn: psycopg.Connection[Any], meter_id: int, at_ms: int, *, strict: bool
) -> int | None:
    """The time of the meter's last sample before (or at) ``at_ms``."""
    return _one(conn, _BEFORE[strict], (meter_id, at_ms))


def _after(conn: psycopg.Connection[Any], meter_id: int, at_ms: int, *, strict: bool) -> int | None:
    """The time of the meter's first sample after (or at) ``at_ms``."""
    return _one(conn, _AFTER[strict], (meter_id, at_ms))


_REGISTER_EDGE = {
    (True, "import_wh"): "SELECT ts_to_ms(max(ts)) FROM readings WHERE meter_id = %s"
    " AND ts <= ms_to_ts(%s) AND import_wh IS NOT NULL",
    (True, "export_wh"): "SELECT ts_to_ms(max(ts)) FROM readings WHERE meter_id = %s"
    " AND ts <= ms_to_ts(%s) AND export_wh IS NOT NULL",
    (False, "import_wh"): "SELECT ts_to_ms(min(ts)) FROM readings WHERE meter_id = %s"
    " AND ts >= ms_to_ts(%s) AND import_wh IS NOT NULL",
    (False, "export_wh"): "SELECT ts_to_ms(min(ts)) FROM readings WHERE meter_id = %s"
    " AND ts >= ms_to_ts(%s) AND export_wh IS NOT NULL",
}


def _register_edge(
    conn: psycopg.Connection[Any], meter_id: int, at_ms: int, *, before: bool
) -> int | None:
    """The farthest of the registers' nearest samples at or before (after) ``at_ms``."""
    found = [
        t
        for register in ("import_wh", "export_wh")
        if (t := _one(conn, _REGISTER_EDGE[before, register], (meter_id, at_ms))) is not None
    ]
    if not found:
        return None
    return min(found) if before else max(found)


def _slots_of_samples(
    conn: psycopg.Connection[Any], meter_id: int, lo_ms: int, hi_ms: int, limits: _Limits
) -> tuple[int, int]:
    """The first and last slot start new samples in ``[lo_ms, hi_ms]`` can change.

    A neighbour more than ``max_span_ms`` away shares no slot with them
    (nothing is interpolated across that gap), so it is not reached for.
    """
    before = _before(conn, meter_id, lo_ms, strict=True)
    after = _after(conn, meter_id, hi_ms, strict=True)
    if before is None or lo_ms - before > limits.max_span_ms:
        before = lo_ms
    if after is None or after - hi_ms > limits.max_span_ms:
        after = hi_ms
    return affected_slots(before, after, slot_ms=limits.slot_ms)


def _merge(ranges: list[tuple[int, int]], slot_ms: int) -> list[tuple[int, int]]:
    """Slot ranges (first and last start) with overlapping or touching ones joined."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + slot_ms:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _read_window(
    conn: psycopg.Connection[Any], meter_id: int, start: int, slots: int, limits: _Limits
) -> tuple[int, list[RegisterSample]]:
    """How many slots from ``start`` to compute now (1 to ``slots``), and their samples."""
    slot_ms = limits.slot_ms
    end = start + slots * slot_ms
    # The samples around the window's edges, for each register: a sample beside the
    # edge that lacks a register (a failed read) does not bracket that register, and
    # the result must not depend on where a window happens to end.
    lo = _register_edge(conn, meter_id, start, before=True)
    hi = _register_edge(conn, meter_id, end, before=False)
    lo = start if lo is None or start - lo > limits.max_span_ms else lo
    hi = end if hi is None or hi - end > limits.max_span_ms else hi
    rows = conn.execute(
        "SELECT ts_to_ms(ts), import_wh, export_wh FROM readings"
        " WHERE meter_id = %s AND ts BETWEEN ms_to_ts(%s) AND ms_to_ts(%s) ORDER BY ts LIMIT %s",
        (meter_id, lo, hi, limits.max_samples + 1),
    ).fetchall()
    if len(rows) <= limits.max_samples:
        return slots, [RegisterSample(int(ts), imp, exp) for ts, imp, exp in rows]
    # Too many: the whole slots that end before the last sample that fits, and the
    # samples up to the first one at or after their end (all among those read).
    cut = int(rows[limits.max_samples - 1][0])
    fit = (slot_start(cut, slot_ms) - start) // slot_ms
    if fit >= 1:
        end = start + fit * slot_ms
        kept: list[RegisterSample] = []
        for ts, imp, exp in rows:
            kept.append(RegisterSample(int(ts), imp, exp))
            if ts >= end:
                break
        return fit, kept
    del rows
    end = start + slot_ms
    lo = _before(conn, meter_id, start, strict=False)
    hi = _after(conn, meter_id, end, strict=False)
    deciding = conn.execute(
        _DECIDING_SAMPLES,
        {
            "meter": meter_id,
            "lo": start if lo is None else lo,
            "hi": end if hi is None else hi,
            "start": start,
            "end": end,
            "cap": limits.max_samples,
        },
    ).fetchall()
    return 1, [RegisterSample(int(ts), imp, exp) for ts, imp, exp in deciding]


def _reset_ranges(
    conn: psycopg.Connection[Any], meter_id: int, first: int, last: int, limits: _Limits
) -> list[tuple[int, int]]:
    """The slot ranges within ``[first, last]`` (slot starts) that overlap a fall.

    A fall between samples at ``t0`` and ``t1`` touches the slots that overlap the
    open interval between them: from the one holding ``t0`` to the one holding the
    instant before ``t1``.
    """
    slot_ms = limits.slot_ms
    lo = _before(conn, meter_id, first, strict=False)
    hi = _after(conn, meter_id, last + slot_ms, strict=False)
    falls = conn.execute(
        _FALLS,
        {
            "meter": meter_id,
            "lo": first if lo is None else lo,
            "hi": last + slot_ms if hi is None else hi,
            "span": limits.max_span_ms,
        },
    ).fetchall()
    ranges = [
        (max(first, slot_start(int(t0), slot_ms)), min(last, slot_start(int(t1) - 1, slot_ms)))
        for t0, t1 in falls
    ]
    return _merge([(a, b) for a, b in ranges if a <= b], slot_ms)


def _walk_resets(
    conn: psycopg.Connection[Any],
    meter_id: int,
    *,
    first: int,
    last: int,
    budget: int,
    limits: _Limits,
) -> tuple[int | None, int, int]:
    """The TimescaleDB path's :func:`_walk`: the slots in ``[first, last]`` around falls.

    Takes at most ``budget`` slots of the range (looking for falls costs one per
    slot); deletes the range's rows and writes those around the falls again.
    """
    slot_ms = limits.slot_ms
    stop = min(last, first + (budget - 1) * slot_ms)
    conn.execute(
        "DELETE FROM interval_energy_resets WHERE meter_id = %s"
        " AND slot_start BETWEEN ms_to_ts(%s) AND ms_to_ts(%s)",
        (meter_id, first, stop),
    )
    written = 0
    for lo, hi in _reset_ranges(conn, meter_id, first, stop, limits):
        slots = (hi - lo) // slot_ms + 1
        _, done, _ = _walk(conn, meter_id, first=lo, last=hi, budget=slots, limits=limits)
        written += done
    spent = (stop - first) // slot_ms + 1
    return (stop + slot_ms if stop < last else None), written, spent


def _write(
    conn: psycopg.Connection[Any], meter_id: int, slots: list[SlotEnergy], limits: _Limits
) -> None:
    if not slots:
        return
    with conn.cursor() as cur:
        cur.executemany(
            _UPSERT[limits.resets_only],
            [
                (
                    meter_id,
                    s.start_ms,
                    s.end_ms,
                    s.import_wh,
                    s.export_wh,
                    s.complete,
                    s.interpolated,
                    s.counter_reset,
                )
                for s in slots
            ],
        )


def _walk(
    conn: psycopg.Connection[Any],
    meter_id: int,
    *,
    first: int,
    last: int,
    budget: int,
    limits: _Limits,
) -> tuple[int | None, int, int]:
    """Recompute the slots starting in ``[first, last]``, spending at most ``budget``.

    Returns where to continue (None when done), the slots written and the budget
    spent: one per slot walked, one per stretch without samples stepped over.
    """
    slot_ms = limits.slot_ms
    start, written, spent = first, 0, 0
    while start <= last:
        if spent >= budget:
            return start, written, spent
        following = _after(conn, meter_id, start, strict=False)
        if following is None:
            break  # no sample at or after `start`: no slot from here on is covered
        preceding = _before(conn, meter_id, start, strict=False)
        if preceding is None or following - preceding > limits.max_span_ms:
            # `start` lies before the first sample or inside a gap nothing is
            # interpolated across: no slot starts here until the next sample's.
            jump = slot_start(following, slot_ms)
            if jump > start:
                start = jump
                spent += 1
                continue
        slots = min(WINDOW_SLOTS, (last - start) // slot_ms + 1, budget - spent)
        slots, samples = _read_window(conn, meter_id, start, slots, limits)
        end = start + slots * slot_ms
        computed = [
            s
            for s in slot_energy(
                samples,
                slot_ms=slot_ms,
                max_gap_ms=limits.max_gap_ms,
                max_span_ms=limits.max_span_ms,
            )
            if start <= s.start_ms < end
        ]
        _write(conn, meter_id, computed, limits)
        written += len(computed)
        start = end
        spent += slots
    return None, written, spent


def refresh_intervals(
    conn: psycopg.Connection[Any],
    *,
    slot_ms: int = DEFAULT_SLOT_MS,
    max_gap_ms: int = DEFAULT_MAX_GAP_MS,
    max_span_ms: int = DEFAULT_MAX_SPAN_MS,
    limit: int = 1000,
    max_slots: int = DEFAULT_REFRESH_SLOTS,
    max_samples: int = DEFAULT_REFRESH_SAMPLES,
) -> RefreshResult:
    """Recompute the slots touched by up to ``limit`` queued ranges, in one transaction.

    ``conn`` is in autocommit mode. Walks at most ``max_slots`` slots (and reads at
    most ``max_samples`` samples at once); what is left goes back to the queue.
    Returns how many meters were taken, slots written and ranges put back; call
    again while it returns meters > 0 to empty the queue (a caller that must not
    hold its thread long stops when ``deferred`` > 0 and calls again later).
    """
    if max_slots < 1 or max_samples < 2 or max_span_ms < slot_ms:
        raise ValueError("max_slots >= 1, max_samples >= 2 and max_span_ms >= slot_ms, please")
    with conn.transaction():
        kind = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass('interval_energy')"
        ).fetchone()
        # A view: the TimescaleDB path (0060), where the aggregate computes the rest.
        limits = _Limits(slot_ms, max_gap_ms, max_span_ms, max_samples, resets_only=kind == ("v",))
        walk = _walk_resets if limits.resets_only else _walk
        rows = conn.execute(
            "DELETE FROM interval_dirty WHERE id IN (SELECT id FROM interval_dirty"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING meter_id, ts_to_ms(from_ts), ts_to_ms(to_ts), slots",
            (limit,),
        ).fetchall()
        queued: dict[int, list[tuple[int, int, bool]]] = {}
        for meter_id, lo, hi, exact in rows:
            queued.setdefault(int(meter_id), []).append((int(lo), int(hi), bool(exact)))
        budget = max_slots
        written = 0
        leftover: list[tuple[int, int, int]] = []
        # Sorted, so that two refreshes take the per-meter locks in the same order.
        for meter_id in sorted(queued):
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (INTERVAL_LOCK_CLASS, meter_id % 2**31)
            )
            ranges = _merge(
                [
                    (slot_start(lo, slot_ms), slot_start(hi, slot_ms))
                    if exact
                    else _slots_of_samples(conn, meter_id, lo, hi, limits)
                    for lo, hi, exact in queued[meter_id]
                ],
                slot_ms,
            )
            for first, last in ranges:
                if budget <= 0:
                    leftover.append((meter_id, first, last))
                    continue
                resume, slots, spent = walk(
                    conn, meter_id, first=first, last=last, budget=budget, limits=limits
                )
                written += slots
                budget -= spent
                if resume is not None:
                    leftover.append((meter_id, resume, last))
        if leftover:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO interval_dirty (meter_id, from_ts, to_ts, slots)"
                    " VALUES (%s, ms_to_ts(%s), ms_to_ts(%s), true)",
                    leftover,
                )
    if limits.resets_only and rows:
        # Real-time aggregation computes only the buckets above the aggregate's
        # watermark; a late sample below it counts once its bucket is refreshed. The
        # policy would do it within minutes; here it is done before the call returns.
        # (A refresh cannot run inside a transaction, hence after the commit.)
        lo = min(int(r[1]) for r in rows)
        hi = max(int(r[2]) for r in rows)
        conn.execute(
            "CALL refresh_continuous_aggregate('readings_15m', ms_to_ts(%s), ms_to_ts(%s))",
            (
                slot_start(lo, AGGREGATE_BUCKET_MS),
                slot_start(hi, AGGREGATE_BUCKET_MS) + AGGREGATE_BUCKET_MS,
            ),
        )
    return RefreshResult(meters=len(queued), slots=written, deferred=len(leftover))
