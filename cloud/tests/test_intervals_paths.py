"""The same readings give the same interval energy on plain PostgreSQL and on TimescaleDB.

On plain PostgreSQL the workers compute every slot (``refresh_intervals``); on TimescaleDB
(migration 0060) the continuous aggregate computes them, and the workers only the slots
around a reset. Here the same samples go into a database of each kind, each path does its
share, and ``interval_energy`` must read the same, row for row: energy, completeness,
interpolation and resets, over gaps, resets and missing registers that hypothesis picks.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from cloud.tests.api_support import fresh_database
from cloud.tests.ingest_support import RECENT_MS
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from gridclear.cloud.intervals import RegisterSample, refresh_intervals
from gridclear.cloud.storage.migrations import migrate

SLOT = 15 * 60 * 1000
T0 = RECENT_MS - 2 * 24 * 3600 * 1000  # a slot boundary two and a half days ago

Row = tuple[int, int | None, int | None, bool, bool, bool]


@pytest.fixture(scope="module")
def both_paths(postgres_admin_url: str, timescale_admin_url: str) -> Iterator[tuple[str, str]]:
    """A migrated database on each path: (plain, timescaledb)."""
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(fresh_database(postgres_admin_url))
        timescale = stack.enter_context(fresh_database(timescale_admin_url))
        migrate(plain, storage="plain")
        migrate(timescale, storage="timescaledb")
        yield plain, timescale


def _meter(conn: psycopg.Connection[Any], name: str) -> int:
    device = conn.execute(
        "INSERT INTO devices (device_id) VALUES (%s) RETURNING id", (name,)
    ).fetchone()
    assert device is not None
    meter = conn.execute(
        "INSERT INTO meters (device_pk, name) VALUES (%s, 'm1') RETURNING id", (device[0],)
    ).fetchone()
    assert meter is not None
    return int(meter[0])


def _energy(url: str, samples: list[RegisterSample], name: str) -> list[Row]:
    """Store the samples as the ingest writer does, let the path do its share, read back."""
    with psycopg.connect(url, autocommit=True) as conn:
        meter = _meter(conn, name)
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (meter_id, ts, import_wh, export_wh, device_pk, seq)"
                " SELECT %s, ms_to_ts(%s), %s, %s, device_pk, 1 FROM meters WHERE id = %s",
                [(meter, s.ts_ms, s.import_wh, s.export_wh, meter) for s in samples],
            )
            cur.execute(
                "INSERT INTO interval_dirty (meter_id, from_ts, to_ts)"
                " VALUES (%s, ms_to_ts(%s), ms_to_ts(%s))",
                (meter, samples[0].ts_ms, samples[-1].ts_ms),
            )
        while refresh_intervals(conn).meters:
            pass
        rows = conn.execute(
            "SELECT ts_to_ms(slot_start), import_wh, export_wh, complete, interpolated,"
            " counter_reset FROM interval_energy WHERE meter_id = %s ORDER BY slot_start",
            (meter,),
        ).fetchall()
    return [(int(a), b, c, bool(d), bool(e), bool(f)) for a, b, c, d, e, f in rows]


def _register(draw: st.DrawFn, steps: int) -> list[int | None]:
    """A cumulative register: rises, sometimes resets, or is not read at all."""
    if draw(st.integers(0, 5)) == 0:
        return [None] * steps
    value = draw(st.integers(0, 10**6))
    values: list[int | None] = []
    for _ in range(steps):
        kind = draw(st.integers(0, 20))
        if kind == 0:
            value = draw(st.integers(0, 50))  # a reset (or a meter swap)
        elif kind == 1:
            values.append(None)  # one read failed
            continue
        else:
            value += draw(st.integers(0, 400))
        values.append(value)
    return values


@st.composite
def meter_samples(draw: st.DrawFn) -> list[RegisterSample]:
    """Samples of one meter: mostly every few minutes, some on a boundary, some gaps."""
    steps = draw(st.integers(2, 40))
    ts = T0 + draw(st.sampled_from([0, 1, 60_000, SLOT - 1]))
    times = []
    for _ in range(steps):
        times.append(ts)
        ts += draw(
            st.one_of(
                st.integers(1_000, 10 * 60_000),
                st.sampled_from([SLOT, 5 * 60_000, 5 * 60_000 + 1]),
                st.integers(10 * 60_000, 6 * 3600_000),
            )
        )
    imports, exports = _register(draw, steps), _register(draw, steps)
    return [
        RegisterSample(t, i, e)
        for t, i, e in zip(times, imports, exports, strict=True)
        if i is not None or e is not None
    ]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(samples=meter_samples())
def test_the_aggregate_gives_the_energy_the_workers_give(
    both_paths: tuple[str, str], samples: list[RegisterSample]
) -> None:
    if len(samples) < 2:
        return
    note(f"samples: {[(s.ts_ms - T0, s.import_wh, s.export_wh) for s in samples]}")
    name = f"gw-{uuid.uuid4().hex[:10]}"
    plain, timescale = both_paths
    expected = _energy(plain, samples, name)
    assert _energy(timescale, samples, name) == expected


def test_a_reset_inside_one_bucket_that_the_aggregate_cannot_see_is_the_workers(
    both_paths: tuple[str, str],
) -> None:
    # 100, 200, 150, 250 inside one slot: first, last, least and greatest look like a
    # steady count; the workers find the fall and write that slot.
    samples = [
        RegisterSample(T0 - 60_000, 90, None),
        RegisterSample(T0 + 60_000, 100, None),
        RegisterSample(T0 + 120_000, 200, None),
        RegisterSample(T0 + 180_000, 150, None),
        RegisterSample(T0 + 240_000, 250, None),
        RegisterSample(T0 + SLOT + 60_000, 300, None),
    ]
    plain, timescale = both_paths
    expected = _energy(plain, samples, f"gw-{uuid.uuid4().hex[:10]}")
    assert [(r[0] - T0, r[5]) for r in expected] == [(0, True)]
    assert _energy(timescale, samples, f"gw-{uuid.uuid4().hex[:10]}") == expected
    with psycopg.connect(timescale) as conn:
        row = conn.execute("SELECT count(*) FROM interval_energy_resets").fetchone()
    assert row is not None
    assert row[0] >= 1
