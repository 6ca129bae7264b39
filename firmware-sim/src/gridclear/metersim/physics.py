"""Power profiles and the energy they integrate to: the physics of a simulated meter.

Everything here is a pure function of simulated time (UTC epoch seconds) and
of seeds, with no I/O and no hidden state beyond the energy accumulator:

- A profile gives the power in W (positive imports, negative exports) at any
  instant. Power is piecewise constant over :data:`STEP_S` seconds of simulated
  time on a grid anchored at the epoch, so the same seed and the same simulated
  time give the same power whatever the start time, speed or read pattern.
- Randomness is random-access: a value is a hash of (seed, stream, index),
  never drawn from a generator, so a profile can be evaluated at any time in
  any order and the simulator holds no random state.
- :class:`Integrator` turns power into the cumulative import and export
  registers, exactly: between two instants the registers grow by the integral
  of the piecewise-constant power, so they never step backwards and a
  constant power P over t seconds adds exactly P*t/3600 Wh.
- :class:`ElectricalModel` derives the consistent electrical picture of a
  meter from its total power: per-phase power, voltage, current and power
  factor with P = V * I * PF on every phase and the totals equal to the sums.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gridclear.metersim.errors import ConfigError

__all__ = [
    "FREQUENCY_HZ",
    "HOUSEHOLD_KWH_PER_YEAR",
    "NOMINAL_V",
    "PROFILE_NAMES",
    "STEP_S",
    "Battery",
    "Composite",
    "ElectricalModel",
    "Flat",
    "Household",
    "Integrator",
    "Location",
    "Profile",
    "Pv",
    "Snapshot",
    "Vehicle",
    "clear_sky_ghi",
    "meter_key",
    "noise",
    "parse_profile",
]

STEP_S = 10.0
"""Simulated seconds over which a profile's power is constant."""

NOMINAL_V = 230.0
FREQUENCY_HZ = 50.0
_MASK = (1 << 64) - 1


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def noise(key: int, stream: int, index: int) -> float:
    """A reproducible uniform value in [0, 1) for (key, stream, index)."""
    mixed = _splitmix(_splitmix(_splitmix(key & _MASK) ^ stream) ^ (index & _MASK))
    return (mixed >> 11) / float(1 << 53)


def meter_key(seed: int, *names: str | int) -> int:
    """A meter's (or a site's) noise key from the run's seed and its stable names."""
    key = _splitmix(seed & _MASK)
    for name in names:
        key = _splitmix(key ^ zlib.crc32(str(name).encode()))
    return key


@dataclass(frozen=True, slots=True)
class Location:
    """Where the site is: latitude for the sun's height, longitude for local solar time."""

    latitude: float = 48.14
    longitude: float = 11.58

    def solar_hours(self, t: float) -> float:
        """Local mean solar time of day in hours, 0 <= h < 24."""
        return ((t + self.longitude * 240.0) % 86400.0) / 3600.0

    def day(self, t: float) -> int:
        """Local solar day number since the epoch."""
        return math.floor((t + self.longitude * 240.0) / 86400.0)


class Profile(Protocol):
    """A power profile: W at simulated time ``t`` (positive import, negative export)."""

    @property
    def power_factor(self) -> float:
        """Magnitude of the power factor of the load or source, 0 < pf <= 1."""
        ...

    @property
    def balanced(self) -> bool:
        """Whether the power splits equally over three phases."""
        ...

    def power(self, t: float, key: int, site_key: int) -> float:
        """Power in W at ``t``; ``key`` seeds this meter, ``site_key`` the site's weather."""
        ...


@dataclass(frozen=True, slots=True)
class Flat:
    """A constant power, for exact checks: ``flat:2000`` imports 2 kW, ``flat:-1500`` exports."""

    watts: float
    power_factor: float = 1.0
    balanced: bool = True

    def power(self, t: float, key: int, site_key: int) -> float:
        return self.watts


def clear_sky_ghi(t: float, location: Location) -> float:
    """Clear-sky global horizontal irradiance in W/m² (Haurwitz model).

    Solar declination from the day of the year, hour angle from local mean
    solar time (the equation of time is ignored: at most 16 minutes).
    """
    day_of_year = time.gmtime(t).tm_yday
    declination = math.radians(23.44) * math.sin(2.0 * math.pi * (284 + day_of_year) / 365.0)
    hour_angle = math.radians(15.0 * (location.solar_hours(t) - 12.0))
    latitude = math.radians(location.latitude)
    sin_elevation = math.sin(latitude) * math.sin(declination) + math.cos(latitude) * math.cos(
        declination
    ) * math.cos(hour_angle)
    if sin_elevation <= 0.01:
        return 0.0
    return 1098.0 * sin_elevation * math.exp(-0.057 / sin_elevation)


@dataclass(frozen=True, slots=True)
class Pv:
    """A PV system's generation meter: a clear-sky curve with seeded clouds, exporting.

    ``peak_w`` is the inverter's AC rating. Cloudiness is drawn per day and per
    ten minutes from the *site* key, so all PV systems of a site see the same
    weather; each system's efficiency differs a little by its own key.
    """

    peak_w: float = 5000.0
    location: Location = field(default_factory=Location)
    power_factor: float = 0.99
    balanced: bool = True

    def power(self, t: float, key: int, site_key: int) -> float:
        ghi = clear_sky_ghi(t, self.location)
        if ghi <= 0.0:
            return 0.0
        day = self.location.day(t)
        cloudiness = math.pow(noise(site_key, 10, day), 1.5)
        block, frac = divmod(t / 600.0, 1.0)
        here = noise(site_key, 11, int(block))
        there = noise(site_key, 11, int(block) + 1)
        cover = here + (there - here) * frac
        attenuation = 1.0 - 0.8 * cloudiness * cover
        efficiency = 0.95 + 0.05 * noise(key, 12, 0)
        return -min(1.0, 0.9 * ghi / 1000.0) * self.peak_w * attenuation * efficiency


def _bump(hours: float, centre: float, width: float) -> float:
    return math.exp(-0.5 * ((hours - centre) / width) ** 2)


HOUSEHOLD_KWH_PER_YEAR = 4930.0
"""Mean yearly consumption of :class:`Household` at scale 1 (measured over seeds)."""


@dataclass(frozen=True, slots=True)
class Household:
    """A home's consumption: base load, fridge cycles, morning and evening peaks, appliances.

    ``household:<kWh per year>`` scales it to a yearly consumption (default 3500).
    """

    scale: float = 1.0
    location: Location = field(default_factory=Location)
    power_factor: float = 0.95
    balanced: bool = False

    def power(self, t: float, key: int, site_key: int) -> float:
        hours = self.location.solar_hours(t)
        day = self.location.day(t)
        base = 120.0 + 180.0 * noise(key, 1, 0)
        fridge = 90.0 if noise(key, 5, int(t // 1200)) < 0.4 else 0.0
        morning = (400.0 + 1100.0 * noise(key, 2, day)) * _bump(
            hours, 7.0 + noise(key, 7, day), 0.6
        )
        evening = (800.0 + 1700.0 * noise(key, 3, day)) * _bump(
            hours, 18.5 + noise(key, 8, day), 1.3
        )
        appliance = 0.0
        block = int(t // 900)
        if noise(key, 4, block) < 0.15 and 6.0 <= hours <= 23.0:
            begin = block * 900.0 + 480.0 * noise(key, 9, block)
            if begin <= t < begin + 120.0 + 300.0 * noise(key, 13, block):
                appliance = 1200.0 + 1200.0 * noise(key, 14, block)
        jitter = 0.95 + 0.1 * noise(key, 6, int(t // STEP_S))
        return self.scale * (base + fridge + morning + evening + appliance) * jitter


@dataclass(frozen=True, slots=True)
class Vehicle:
    """An EV charger: evening charging sessions at the charger's rating, on most days."""

    rate_w: float = 11000.0
    location: Location = field(default_factory=Location)
    power_factor: float = 0.99
    balanced: bool = True

    def power(self, t: float, key: int, site_key: int) -> float:
        hours = self.location.solar_hours(t)
        today = self.location.day(t)
        # A session that starts in the evening may run past midnight.
        for day, offset in ((today, 0.0), (today - 1, 24.0)):
            if noise(key, 20, day) >= 0.6:
                continue
            start = 17.0 + 4.0 * noise(key, 21, day)
            energy_wh = 6000.0 + 24000.0 * noise(key, 22, day)
            if start <= hours + offset < start + energy_wh / self.rate_w:
                return self.rate_w
        return 0.0


@dataclass(frozen=True, slots=True)
class Battery:
    """A home battery: charges around midday, discharges in the evening (90 % round trip)."""

    rate_w: float = 3000.0
    location: Location = field(default_factory=Location)
    power_factor: float = 1.0
    balanced: bool = True

    def power(self, t: float, key: int, site_key: int) -> float:
        hours = self.location.solar_hours(t)
        charge_w = self.rate_w * (0.5 + 0.5 * noise(key, 30, self.location.day(t)))
        if 10.5 <= hours < 14.5:
            return charge_w
        if 18.0 <= hours < 23.0:
            return -charge_w * 4.0 * 0.9 / 5.0
        return 0.0


@dataclass(frozen=True, slots=True)
class Composite:
    """Several profiles behind one meter (``household+pv:4000``): a prosumer's grid meter."""

    parts: tuple[Profile, ...]

    @property
    def power_factor(self) -> float:
        return self.parts[0].power_factor

    @property
    def balanced(self) -> bool:
        return all(part.balanced for part in self.parts)

    def power(self, t: float, key: int, site_key: int) -> float:
        return sum(part.power(t, meter_key(key, i), site_key) for i, part in enumerate(self.parts))


PROFILE_NAMES = ("pv", "household", "ev", "battery", "flat")


def _number(text: str, spec: str, *, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            f"profile {spec!r}: {what} must be a number, not {text!r}", reason="bad_profile"
        ) from None
    if not math.isfinite(value):
        raise ConfigError(f"profile {spec!r}: {what} must be finite", reason="bad_profile")
    return value


def _one_profile(spec: str, location: Location) -> Profile:
    name, _, argument = spec.partition(":")
    name = name.strip().lower()
    if name == "flat":
        if not argument:
            raise ConfigError(
                "profile 'flat' needs a power: flat:<watts>, e.g. flat:2000 or flat:-1500",
                reason="bad_profile",
            )
        watts = _number(argument, spec, what="the power in W")
        if abs(watts) > 1_000_000:
            raise ConfigError(f"profile {spec!r}: |power| above 1 MW", reason="bad_profile")
        return Flat(watts)
    if name not in PROFILE_NAMES:
        known = ", ".join(PROFILE_NAMES)
        raise ConfigError(f"unknown profile {name!r} (known: {known})", reason="unknown_profile")
    rating = _number(argument, spec, what="the rating in W") if argument else None
    if rating is not None and not 0 < rating <= 1_000_000:
        raise ConfigError(
            f"profile {spec!r}: the rating must be above 0 and at most 1 MW", reason="bad_profile"
        )
    if name == "pv":
        return Pv(peak_w=rating or 5000.0, location=location)
    if name == "household":
        return Household(scale=(rating or 3500.0) / HOUSEHOLD_KWH_PER_YEAR, location=location)
    if name == "ev":
        return Vehicle(rate_w=rating or 11000.0, location=location)
    return Battery(rate_w=rating or 3000.0, location=location)


def parse_profile(spec: str, *, location: Location | None = None) -> Profile:
    """A profile from its spec: ``pv[:peak_w]``, ``household[:scale_w]``, ``ev[:rate_w]``,
    ``battery[:rate_w]``, ``flat:<watts>``, or several joined by ``+``.

    Raises :class:`ConfigError` (reason ``unknown_profile`` or ``bad_profile``).
    """
    location = location or Location()
    parts = [part.strip() for part in spec.split("+")]
    if not spec.strip() or any(not part for part in parts):
        raise ConfigError(f"empty profile in {spec!r}", reason="bad_profile")
    profiles = tuple(_one_profile(part, location) for part in parts)
    return profiles[0] if len(profiles) == 1 else Composite(profiles)


class Integrator:
    """The cumulative import and export energy of one meter, in Wh, integrated lazily.

    The accumulator advances step by step on the profile's grid when read, so
    a meter read rarely costs one evaluation per elapsed step and a meter never
    read costs nothing. Reads must not go back in time; an earlier ``t`` is
    treated as the latest time already integrated (the registers hold).
    """

    __slots__ = (
        "_cached_power",
        "_cached_step",
        "_key",
        "_profile",
        "_site_key",
        "export_wh",
        "import_wh",
        "t",
    )

    def __init__(
        self,
        *,
        profile: Profile,
        key: int,
        site_key: int,
        t: float,
        import_wh: float = 0.0,
        export_wh: float = 0.0,
    ) -> None:
        self._profile = profile
        self._key = key
        self._site_key = site_key
        self.t = t
        self.import_wh = import_wh
        self.export_wh = export_wh
        self._cached_step = -(1 << 62)
        self._cached_power = 0.0

    def power_at_step(self, step: int) -> float:
        if step != self._cached_step:
            self._cached_power = self._profile.power(step * STEP_S, self._key, self._site_key)
            self._cached_step = step
        return self._cached_power

    def power(self, t: float) -> float:
        """Power in W at ``t``: the value of its grid step."""
        return self.power_at_step(math.floor(t / STEP_S))

    def advance(self, t: float) -> None:
        """Integrate up to ``t`` (no-op when ``t`` is not later than the last point)."""
        while self.t < t:
            step = math.floor(self.t / STEP_S)
            until = min(t, (step + 1) * STEP_S)
            watts = self.power_at_step(step)
            wh = watts * (until - self.t) / 3600.0
            if wh > 0:
                self.import_wh += wh
            elif wh < 0:
                self.export_wh -= wh
            self.t = until

    def energy(self, t: float) -> tuple[float, float]:
        """Import and export Wh at ``t``."""
        self.advance(t)
        return self.import_wh, self.export_wh

    def reset(self, t: float) -> None:
        """The meter was replaced at ``t``: registers restart from zero."""
        self.advance(t)
        self.import_wh = 0.0
        self.export_wh = 0.0


Snapshot = dict[str, float | int | str]
"""A meter's quantities at one instant, by the names the register maps use."""


class ElectricalModel:
    """The electrical picture of one meter derived from its total power at an instant.

    Per-phase power is a fixed, seeded share of the total (equal shares for
    balanced profiles), so per-phase energy is the same share of the totals.
    Each phase's voltage is nominal plus a seeded offset, a site-wide slow
    drift and a resistive drop with the phase's power; current follows from
    P = V * I * PF with the profile's power factor, whose sign follows the
    power's direction as on Eastron meters.
    """

    __slots__ = ("_phases", "_power_factor", "_site_key", "_tan_phi", "_v_offset", "shares")

    def __init__(self, *, phases: int, profile: Profile, key: int, site_key: int) -> None:
        self._phases = phases
        self._site_key = site_key
        self._power_factor = profile.power_factor
        self._tan_phi = math.tan(math.acos(profile.power_factor))
        if phases == 1:
            self.shares: tuple[float, ...] = (1.0,)
        elif profile.balanced:
            self.shares = (1 / 3, 1 / 3, 1 / 3)
        else:
            raw = [0.5 + noise(key, 50, i) for i in range(3)]
            self.shares = tuple(r / sum(raw) for r in raw)
        self._v_offset = tuple(NOMINAL_V * 0.02 * (noise(key, 51, i) - 0.5) for i in range(phases))

    def snapshot(self, *, t: float, power_w: float, import_wh: float, export_wh: float) -> Snapshot:
        step = math.floor(t / STEP_S)
        drift = 3.0 * (noise(self._site_key, 40, step // 6) - 0.5)
        values: Snapshot = {}
        volts: list[float] = []
        amps: list[float] = []
        total_va = total_var = 0.0
        for i, share in enumerate(self.shares):
            n = i + 1
            p = power_w * share
            v = NOMINAL_V + self._v_offset[i] + drift - 0.3 * p / NOMINAL_V
            pf_abs = self._power_factor if p != 0.0 else 1.0
            current = abs(p) / (v * pf_abs)
            va = v * current
            var = math.sqrt(max(va * va - p * p, 0.0))
            pf = math.copysign(pf_abs, p) if p != 0.0 else 1.0
            values[f"v{n}"] = v
            values[f"i{n}"] = current
            values[f"p{n}"] = p
            values[f"va{n}"] = va
            values[f"var{n}"] = var
            values[f"pf{n}"] = pf
            values[f"pf_pct{n}"] = abs(pf) * 100.0
            values[f"angle{n}"] = math.degrees(math.acos(pf_abs))
            values[f"import_wh{n}"] = import_wh * share
            values[f"export_wh{n}"] = export_wh * share
            values[f"import_kwh{n}"] = import_wh * share / 1000.0
            values[f"export_kwh{n}"] = export_wh * share / 1000.0
            values[f"total_kwh{n}"] = (import_wh + export_wh) * share / 1000.0
            volts.append(v)
            amps.append(current)
            total_va += va
            total_var += var
        pf_total = power_w / total_va if total_va > 0.0 else 1.0
        values.update(
            p=power_w,
            va=total_va,
            var=total_var,
            pf=pf_total,
            pf_pct=abs(pf_total) * 100.0,
            angle=math.degrees(math.acos(min(1.0, abs(pf_total)))),
            v_avg=sum(volts) / len(volts),
            i_sum=sum(amps),
            i_avg=sum(amps) / len(amps),
            freq=FREQUENCY_HZ + 0.08 * (noise(self._site_key, 41, step) - 0.5),
            import_wh=import_wh,
            export_wh=export_wh,
            import_kwh=import_wh / 1000.0,
            export_kwh=export_wh / 1000.0,
            total_kwh=(import_wh + export_wh) / 1000.0,
            import_kvarh=import_wh * self._tan_phi / 1000.0,
            export_kvarh=export_wh * self._tan_phi / 1000.0,
            total_kvarh=(import_wh + export_wh) * self._tan_phi / 1000.0,
            vah_kvah=(import_wh + export_wh) / self._power_factor / 1000.0,
            ah=(import_wh + export_wh) / self._power_factor / NOMINAL_V,
        )
        if self._phases == 3:
            v1, v2, v3 = volts
            values.update(
                v12=_line_to_line(v1, v2),
                v23=_line_to_line(v2, v3),
                v31=_line_to_line(v3, v1),
                i_n=_neutral(amps),
            )
            values["v_ll_avg"] = (values["v12"] + values["v23"] + values["v31"]) / 3.0  # type: ignore[operator]
        return values


def _line_to_line(a: float, b: float) -> float:
    # Two phase voltages 120 degrees apart.
    return math.sqrt(a * a + b * b + a * b)


def _neutral(amps: Sequence[float]) -> float:
    # Phasor sum of the three phase currents, ignoring their small PF angles.
    real = amps[0] - 0.5 * amps[1] - 0.5 * amps[2]
    imaginary = math.sqrt(3.0) / 2.0 * (amps[1] - amps[2])
    return math.hypot(real, imaginary)
