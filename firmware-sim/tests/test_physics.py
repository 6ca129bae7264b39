"""Physics: exact energy integration, never backwards, consistent phases, seeded profiles."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridclear.metersim.errors import ConfigError
from gridclear.metersim.physics import (
    STEP_S,
    Battery,
    Composite,
    ElectricalModel,
    Flat,
    Household,
    Integrator,
    Pv,
    Vehicle,
    meter_key,
    parse_profile,
)

MIDSUMMER = datetime(2025, 6, 21, tzinfo=UTC).timestamp()
KEY, SITE = meter_key(7, "bus", 1), meter_key(7, "site")


def test_flat_power_integrates_to_exactly_power_times_time() -> None:
    integrator = Integrator(profile=Flat(2000.0), key=KEY, site_key=SITE, t=MIDSUMMER + 3.3)
    imported, exported = integrator.energy(MIDSUMMER + 3.3 + 3600.0)
    assert imported == pytest.approx(2000.0, abs=1e-9)
    assert exported == 0.0


def test_negative_power_counts_as_export() -> None:
    integrator = Integrator(profile=Flat(-1500.0), key=KEY, site_key=SITE, t=MIDSUMMER)
    assert integrator.energy(MIDSUMMER + 7200.0) == pytest.approx((0.0, 3000.0))


@settings(max_examples=40, deadline=None)
@given(
    spec=st.sampled_from(["pv", "household", "ev", "battery", "household+pv:6000+battery"]),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5_000.0), min_size=1, max_size=30),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_energy_registers_never_go_backwards(spec: str, gaps: list[float], seed: int) -> None:
    profile = parse_profile(spec)
    integrator = Integrator(
        profile=profile, key=meter_key(seed, "b", 1), site_key=SITE, t=MIDSUMMER
    )
    t, previous = MIDSUMMER, (0.0, 0.0)
    for gap in gaps:
        t += gap
        now = integrator.energy(t)
        assert now[0] >= previous[0]
        assert now[1] >= previous[1]
        previous = now


@settings(max_examples=25, deadline=None)
@given(split=st.floats(min_value=0.0, max_value=21_600.0))
def test_reading_in_between_does_not_change_the_total(split: float) -> None:
    """Integration is path independent: one read or two give the same registers."""
    profile = parse_profile("household+pv:5000")
    once = Integrator(profile=profile, key=KEY, site_key=SITE, t=MIDSUMMER)
    twice = Integrator(profile=profile, key=KEY, site_key=SITE, t=MIDSUMMER)
    twice.energy(MIDSUMMER + split)
    end = MIDSUMMER + 21_600.0
    assert twice.energy(end) == pytest.approx(once.energy(end), rel=1e-12)


def test_energy_is_the_integral_of_the_power_the_meter_shows() -> None:
    profile = parse_profile("household")
    integrator = Integrator(profile=profile, key=KEY, site_key=SITE, t=MIDSUMMER)
    expected = sum(integrator.power(MIDSUMMER + i * STEP_S) for i in range(360)) * STEP_S / 3600
    assert integrator.energy(MIDSUMMER + 3600.0)[0] == pytest.approx(expected, rel=1e-12)


def test_reset_restarts_the_registers_from_zero() -> None:
    integrator = Integrator(
        profile=Flat(3600.0), key=KEY, site_key=SITE, t=MIDSUMMER, import_wh=5e6
    )
    integrator.reset(MIDSUMMER + 100.0)
    assert integrator.energy(MIDSUMMER + 110.0) == pytest.approx((10.0, 0.0))


@pytest.mark.parametrize("spec", ["household", "pv", "ev", "battery", "household+pv:4000"])
def test_three_phase_values_are_consistent(spec: str) -> None:
    profile = parse_profile(spec)
    model = ElectricalModel(phases=3, profile=profile, key=KEY, site_key=SITE)
    for hour in (3, 8, 12, 19):
        t = MIDSUMMER + hour * 3600.0
        power = profile.power(t, KEY, SITE)
        v = model.snapshot(t=t, power_w=power, import_wh=1000.0, export_wh=500.0)
        phases = [v[f"p{n}"] for n in (1, 2, 3)]
        assert sum(phases) == pytest.approx(v["p"], abs=1e-9)  # type: ignore[arg-type]
        for n in (1, 2, 3):
            volts, amps, pf = (float(v[f"{q}{n}"]) for q in ("v", "i", "pf"))
            assert 207.0 <= volts <= 253.0
            assert volts * amps * pf == pytest.approx(float(v[f"p{n}"]), abs=1e-6)
        assert 49.9 <= float(v["freq"]) <= 50.1
        assert float(v["import_kwh1"]) + float(v["import_kwh2"]) + float(
            v["import_kwh3"]
        ) == pytest.approx(1.0)
        assert float(v["total_kwh"]) == pytest.approx(1.5)


def test_pv_exports_by_day_and_is_idle_at_night() -> None:
    pv = Pv(peak_w=5000.0)
    noon = MIDSUMMER + 12 * 3600 - 11.58 * 240  # local solar noon in Munich
    assert pv.power(noon, KEY, SITE) < -1500.0
    assert pv.power(MIDSUMMER + 0.5 * 3600, KEY, SITE) == 0.0
    assert pv.power(noon, KEY, SITE) >= -5000.0


def test_pv_is_higher_in_summer_than_in_winter_at_noon() -> None:
    pv = Pv(peak_w=5000.0)
    winter = datetime(2025, 12, 21, 11, 14, tzinfo=UTC).timestamp()
    summer = datetime(2025, 6, 21, 11, 14, tzinfo=UTC).timestamp()
    best_winter = min(pv.power(winter + d * 86400, KEY, k) for d in range(3) for k in range(5))
    best_summer = min(pv.power(summer + d * 86400, KEY, k) for d in range(3) for k in range(5))
    assert best_summer < best_winter  # more negative: more export


def test_household_has_a_base_load_and_an_evening_peak() -> None:
    home = Household()
    night = [home.power(MIDSUMMER + 3 * 3600 + i * 60, KEY, SITE) for i in range(60)]
    evening = [home.power(MIDSUMMER + 18 * 3600 + i * 60, KEY, SITE) for i in range(120)]
    assert all(p > 0 for p in night)
    assert sum(evening) / len(evening) > 2 * sum(night) / len(night)


def test_ev_charges_in_blocks_at_its_rating() -> None:
    ev = Vehicle(rate_w=11000.0)
    samples = {ev.power(MIDSUMMER + i * 600.0, KEY, SITE) for i in range(6 * 24 * 14)}
    assert samples == {0.0, 11000.0}


def test_battery_charges_and_discharges() -> None:
    battery = Battery(rate_w=3000.0)
    day = [battery.power(MIDSUMMER + i * 600.0, KEY, SITE) for i in range(144)]
    assert max(day) > 0
    assert min(day) < 0
    discharged = -sum(p for p in day if p < 0)
    charged = sum(p for p in day if p > 0)
    assert discharged == pytest.approx(0.9 * charged, rel=0.05)


def test_the_same_seed_gives_the_same_profile_and_another_seed_another() -> None:
    profile = parse_profile("household+pv")
    times = [MIDSUMMER + i * 977.0 for i in range(200)]
    same = [profile.power(t, meter_key(1, "b", 3), meter_key(1, "site")) for t in times]
    again = [profile.power(t, meter_key(1, "b", 3), meter_key(1, "site")) for t in times]
    other = [profile.power(t, meter_key(2, "b", 3), meter_key(2, "site")) for t in times]
    assert same == again
    assert same != other


def test_profile_specs() -> None:
    assert parse_profile("flat:-1500") == Flat(-1500.0)
    assert isinstance(parse_profile("pv:4000"), Pv)
    composite = parse_profile("household + pv:4000")
    assert isinstance(composite, Composite)
    assert len(composite.parts) == 2


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("wind", "unknown_profile"),
        ("flat", "bad_profile"),
        ("flat:lots", "bad_profile"),
        ("pv:-5", "bad_profile"),
        ("flat:nan", "bad_profile"),
        ("pv+", "bad_profile"),
        ("", "bad_profile"),
    ],
)
def test_bad_profile_specs_are_refused_with_a_reason(spec: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_profile(spec)
    assert caught.value.reason == reason


def test_noise_is_uniform_enough() -> None:
    from gridclear.metersim.physics import noise

    values = [noise(1, 2, i) for i in range(20_000)]
    assert min(values) >= 0.0
    assert max(values) < 1.0
    assert math.isclose(sum(values) / len(values), 0.5, abs_tol=0.01)
