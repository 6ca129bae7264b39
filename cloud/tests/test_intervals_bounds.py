"""The interval refresh does bounded work, whatever the samples or the queue hold.

One sample dated far from a meter's others (a clock reset to 1970, a date a century
ahead) once made a refresh walk, and build in memory, every 15-minute slot between
them, in the ingest writer's thread; the queued range survived a restart.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg

from gridclear.cloud.intervals import (
    RegisterSample,
    refresh_intervals,
    slot_energy,
)
from gridclear.shared.intervals import DEFAULT_SLOT_MS, interval_energy, slot_start

SLOT = DEFAULT_SLOT_MS
DAY = 24 * 3600 * 1000
YEAR = 365 * DAY
NOW = slot_start(time.time_ns() // 1_000_000)


def _meter(conn: psycopg.Connection[Any]) -> int:
    device = conn.execute(
        "INSERT INTO devices (device_id) VALUES (%s) RETURNING id", (f"gw-{uuid.uuid4().hex[:8]}",)
    ).fetchone()
    assert device is not None
    meter = conn.execute(
        "INSERT INTO meters (device_pk, name) VALUES (%s, 'm1') RETURNING id", (device[0],)
    ).fetchone()
    assert meter is not None
    return int(meter[0])


def _store(conn: psycopg.Connection[Any], meter: int, samples: list[RegisterSample]) -> None:
    """The samples and their queued range, as the ingest writer stores them."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (meter_id, ts, import_wh, export_wh, device_pk, seq)"
            " SELECT %s, ms_to_ts(%s), %s, %s, device_pk, 1 FROM meters WHERE id = %s",
            [(meter, s.ts_ms, s.import_wh, s.export_wh, meter) for s in samples],
        )
    conn.execute(
        "INSERT INTO interval_dirty (meter_id, from_ts, to_ts)"
        " VALUES (%s, ms_to_ts(%s), ms_to_ts(%s))",
        (meter, min(s.ts_ms for s in samples), max(s.ts_ms for s in samples)),
    )


def _slots(conn: psycopg.Connection[Any], meter: int) -> list[tuple[int, int | None, bool, bool]]:
    rows = conn.execute(
        "SELECT ts_to_ms(slot_start), import_wh, complete, counter_reset FROM interval_energy"
        " WHERE meter_id = %s ORDER BY slot_start",
        (meter,),
    ).fetchall()
    return [(int(a), b, bool(c), bool(d)) for a, b, c, d in rows]


def _queued(conn: psycopg.Connection[Any], meter: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM interval_dirty WHERE meter_id = %s", (meter,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _flat(start: int, end: int, every: int, *, wh_per_slot: int = 500) -> list[RegisterSample]:
    return [
        RegisterSample(ts, 10_000 + (ts - start) * wh_per_slot // SLOT, None)
        for ts in range(start, end + 1, every)
    ]


def test_no_slot_is_interpolated_across_a_gap_of_a_century() -> None:
    samples = [(NOW, 1000), (NOW + SLOT, 1100), (NOW + 100 * YEAR, 5000)]
    slots = interval_energy(samples, max_span_ms=31 * DAY)
    assert [(s.start_ms, s.wh) for s in slots] == [(NOW, 100)]
    # Without the bound every slot of the century is computed, as before.
    assert len(interval_energy([*samples[:2], (NOW + 40 * DAY, 5000)])) == 40 * 96


def test_slot_energy_of_samples_in_1970_and_now_is_small() -> None:
    samples = [RegisterSample(60_000, 1, None), *_flat(NOW, NOW + 2 * SLOT, 60_000)]
    slots = slot_energy(samples)
    assert [s.start_ms for s in slots] == [NOW, NOW + SLOT]


def test_a_far_off_sample_already_stored_and_queued_costs_a_bounded_refresh(
    migrated_db: str,
) -> None:
    """What an older version stored and queued: samples a year either side of today's."""
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        meter = _meter(conn)
        today = _flat(NOW - 2 * SLOT, NOW + 2 * SLOT, 60_000)
        _store(conn, meter, today)
        _store(conn, meter, [RegisterSample(NOW + YEAR, 90_000, None)])
        _store(conn, meter, [RegisterSample(NOW - YEAR, 10, None)])
        results = [refresh_intervals(conn, max_slots=500)]
        while results[-1].meters:
            results.append(refresh_intervals(conn, max_slots=500))
            assert len(results) < 20, "the queue does not empty"
        slots = _slots(conn, meter)
        assert _queued(conn, meter) == 0
    # The four slots of today, no interpolation over the years around them.
    assert [start - NOW for start, *_ in slots] == [-2 * SLOT, -SLOT, 0, SLOT]
    assert all(imp == 500 and complete for _, imp, complete, _ in slots)
    assert all(r.slots <= 500 for r in results)


def test_a_long_backlog_is_refreshed_in_bounded_steps_to_the_same_result(
    migrated_db: str,
) -> None:
    """Ten days of an outbox drained at once: steps of at most 200 slots, nothing lost."""
    samples = _flat(NOW - 10 * DAY, NOW, 5 * 60_000)
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        meter = _meter(conn)
        _store(conn, meter, samples)
        results = [refresh_intervals(conn, max_slots=200)]
        while results[-1].meters:
            results.append(refresh_intervals(conn, max_slots=200))
            assert len(results) < 50, "the queue does not empty"
        slots = _slots(conn, meter)
    assert results[0].deferred == 1
    assert all(r.slots <= 200 for r in results)
    expected = [
        (s.start_ms, s.import_wh, s.complete, s.counter_reset) for s in slot_energy(samples)
    ]
    assert slots == expected
    assert len(slots) == 10 * 96


def test_a_slot_with_more_samples_than_are_read_at_once_gets_the_same_energy(
    migrated_db: str,
) -> None:
    """A slot of 300 samples, a reset in it, read 20 at a time: as computed from all."""
    samples = _flat(NOW - SLOT, NOW + 2 * SLOT, 3_000)
    reset_at = NOW + SLOT // 2
    samples = [
        s if s.ts_ms < reset_at else RegisterSample(s.ts_ms, s.import_wh - 9_000, None)
        for s in samples
    ]
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        meter = _meter(conn)
        _store(conn, meter, samples)
        while refresh_intervals(conn, max_samples=20).meters:
            pass
        slots = _slots(conn, meter)
    expected = [
        (s.start_ms, s.import_wh, s.complete, s.counter_reset) for s in slot_energy(samples)
    ]
    assert slots == expected
    assert [start - NOW for start, _, _, reset in slots if reset] == [0]
