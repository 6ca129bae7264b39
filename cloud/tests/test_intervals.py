"""Interval energy: exact arithmetic from cumulative registers, completeness, resets, and its
upkeep in the database when late samples arrive."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from cloud.tests.ingest_support import (
    RECENT_MS,
    Gateway,
    Publisher,
    register,
    running_worker,
    wait_for,
)
from hypothesis import given
from hypothesis import strategies as st

from gridclear.cloud.intervals import RegisterSample, affected_slots, slot_energy
from gridclear.shared.readings import Reading

SLOT = 15 * 60 * 1000
T0 = RECENT_MS  # a slot boundary, half a day ago


def _flat(watts: int, start_ms: int, end_ms: int, step_ms: int) -> list[RegisterSample]:
    """A meter drawing ``watts`` steadily: the register counts whole Wh, rounded down."""
    return [
        RegisterSample(t, 10_000 + watts * (t - T0) // 3_600_000, None)
        for t in range(start_ms, end_ms + 1, step_ms)
    ]


def test_a_flat_2000_w_load_is_500_wh_per_slot_and_complete() -> None:
    slots = slot_energy(_flat(2000, T0 - 7_000, T0 + 2 * SLOT + 7_000, 10_000))
    assert [(s.start_ms, s.import_wh, s.export_wh, s.complete) for s in slots] == [
        (T0, 500, None, True),
        (T0 + SLOT, 500, None, True),
    ]
    assert all(s.interpolated for s in slots)  # the samples straddle the boundaries


def test_a_boundary_interpolated_over_a_long_gap_is_not_complete() -> None:
    samples = _flat(2000, T0, T0 + 2 * SLOT, 60_000)
    gap = [s for s in samples if not (T0 + SLOT - 300_000 < s.ts_ms < T0 + SLOT + 300_000)]
    slots = slot_energy(gap)
    assert [s.complete for s in slots] == [False, False]
    # Interpolation moves energy between the two slots (rounded down), never creates it.
    assert sum(s.import_wh or 0 for s in slots) == 1000


def test_a_reset_counts_only_what_was_measured_around_it_and_is_flagged() -> None:
    samples = [
        RegisterSample(T0, 1000, None),
        RegisterSample(T0 + 300_000, 1100, None),
        RegisterSample(T0 + 360_000, 5, None),  # the meter was swapped
        RegisterSample(T0 + SLOT, 205, None),
    ]
    (slot,) = slot_energy(samples)
    assert (slot.import_wh, slot.counter_reset, slot.complete) == (300, True, False)


def test_export_and_import_are_separate_and_both_must_cover_the_slot() -> None:
    samples = [
        RegisterSample(T0, 10, 100),
        RegisterSample(T0 + SLOT, 20, None),
        RegisterSample(T0 + 2 * SLOT, 30, 400),
    ]
    slots = slot_energy(samples)
    assert [(s.import_wh, s.export_wh) for s in slots] == [(10, 150), (10, 150)]
    # Export is interpolated over a 30-minute gap: not a figure to settle on unflagged.
    assert [s.complete for s in slots] == [False, False]


@given(
    st.lists(st.integers(0, 4 * SLOT), min_size=2, max_size=40, unique=True),
    st.integers(1, 5000),
)
def test_slots_add_up_to_the_register_change_between_their_outer_boundaries(
    offsets: list[int], watts: int
) -> None:
    samples = [RegisterSample(T0 + o, watts * o // 3_600_000, None) for o in sorted(offsets)]
    slots = slot_energy(samples, max_gap_ms=4 * SLOT)
    if not slots:
        return
    first, last = slots[0], slots[-1]
    assert [s.start_ms for s in slots] == list(range(first.start_ms, last.end_ms, SLOT))
    total = sum(s.import_wh or 0 for s in slots)
    # Boundary values are interpolated once each, so the slots telescope exactly.
    lo = first.start_ms - T0
    hi = last.end_ms - T0
    assert abs(total - (watts * hi // 3_600_000 - watts * lo // 3_600_000)) <= 1
    assert all((s.import_wh or 0) >= 0 for s in slots)


def test_affected_slots_reach_every_boundary_between_the_neighbouring_samples() -> None:
    assert affected_slots(T0 + 5 * 60_000, T0 + 50 * 60_000) == (T0 - SLOT, T0 + 3 * SLOT)


@pytest.mark.storage_paths  # the aggregate on TimescaleDB, the workers on plain
def test_late_samples_fill_a_gap_and_the_slots_are_recomputed(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str
) -> None:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, gateway)
    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    samples = _flat(2000, T0 - 10_000, T0 + 2 * SLOT + 10_000, 10_000)

    def message(part: list[RegisterSample]) -> str:
        readings = [Reading(meter="flat", ts_ms=s.ts_ms, import_wh=s.import_wh) for s in part]
        return gateway.sign(readings, signed_ms=part[-1].ts_ms).token

    live = [s for s in samples if not (T0 + 10 * 60_000 < s.ts_ms < T0 + 20 * 60_000)]
    late = [s for s in samples if T0 + 10 * 60_000 < s.ts_ms < T0 + 20 * 60_000]

    def slots() -> list[tuple[int, int, bool]]:
        with psycopg.connect(migrated_db) as conn:
            rows = conn.execute(
                "SELECT ts_to_ms(slot_start), import_wh, complete FROM interval_energy e"
                " JOIN meters m ON m.id = e.meter_id JOIN devices d ON d.id = m.device_pk"
                " WHERE d.device_id = %s ORDER BY slot_start",
                (gateway.device_id,),
            ).fetchall()
        return [(int(a) - T0, int(b), bool(c)) for a, b, c in rows]

    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix):
        publisher.send(gateway, message(live[: len(live) // 2]))
        publisher.send(gateway, message(live[len(live) // 2 :]))
        wait_for(lambda: len(slots()) == 2, what="two slots")
        # Interpolated over the 10-minute gap: a figure, but flagged incomplete.
        assert [(start, complete) for start, _, complete in slots()] == [(0, False), (SLOT, False)]
        # The outbox drains the samples it kept during the outage.
        publisher.send(gateway, message(late))
        wait_for(lambda: slots() == [(0, 500, True), (SLOT, 500, True)], what="complete slots")
    publisher.close()
