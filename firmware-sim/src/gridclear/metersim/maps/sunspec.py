"""A SunSpec meter: the "SunS" marker, common model 1, meter model 203, end marker.

Source: SunSpec Information Model Specification and the model definitions of
model 1 (Common) and model 203 (Meter, wye-connect three phase, integer +
scale factor), SunSpec Alliance. The map starts at protocol address 40000
(register 40001), the base clients probe first; all values are holding
registers (function 03). Scale factors live in their own registers next to the
values they scale, so a client reads both in one request. Points this meter
does not measure (apparent and reactive energy) hold SunSpec's "not
implemented" values (0 for acc32, 0x8000 for their scale factor).
"""

from __future__ import annotations

from gridclear.metersim.maps._model import Encoding, MeterModel, Point, Setting, Table

__all__ = [
    "BASE_ADDRESS",
    "COMMON_LENGTH",
    "COMMON_MODEL_ID",
    "METER_LENGTH",
    "METER_MODEL_ID",
    "SUNSPEC_METER",
]

BASE_ADDRESS = 40000
COMMON_MODEL_ID = 1
COMMON_LENGTH = 66
METER_MODEL_ID = 203
METER_LENGTH = 105

_I16, _U16, _SF, _ACC = Encoding.INT16, Encoding.UINT16, Encoding.SUNSSF, Encoding.ACC32
_STR = Encoding.STRING

# Scale factors of this meter (fixed: the model allows them to change, ours do not).
_A_SF, _V_SF, _HZ_SF, _W_SF, _VA_SF, _VAR_SF, _PF_SF, _WH_SF = -2, -1, -2, 0, 0, 0, -1, 0


def _build() -> tuple[Point, ...]:
    points: list[Point] = [
        Point(BASE_ADDRESS, "SunSpec ID", _STR, size=2, constant="SunS"),
    ]
    common = BASE_ADDRESS + 2
    points += [
        Point(common, "ID", _U16, constant=COMMON_MODEL_ID),
        Point(common + 1, "L", _U16, constant=COMMON_LENGTH),
        Point(common + 2, "Mn (manufacturer)", _STR, size=16, quantity="manufacturer"),
        Point(common + 18, "Md (model)", _STR, size=16, quantity="model_name"),
        Point(common + 34, "Opt (options)", _STR, size=8, quantity="options"),
        Point(common + 42, "Vr (version)", _STR, size=8, quantity="version"),
        Point(common + 50, "SN (serial number)", _STR, size=16, quantity="serial_text"),
        Point(
            common + 66,
            "DA (device address)",
            _U16,
            setting=Setting(
                "node", default_quantity="unit", allowed=frozenset(float(a) for a in range(1, 248))
            ),
        ),
        Point(common + 67, "Pad", _U16, constant=0x8000),
    ]
    meter = common + 2 + COMMON_LENGTH
    body = meter + 2
    points += [
        Point(meter, "ID", _U16, constant=METER_MODEL_ID),
        Point(meter + 1, "L", _U16, constant=METER_LENGTH),
    ]

    def group(
        offset: int, unit: str, pairs: tuple[tuple[str, str], ...], *, sf_name: str, sf: int
    ) -> None:
        """Values at ``offset``.., scaled by the scale factor register right after them."""
        for i, (name, quantity) in enumerate(pairs):
            points.append(
                Point(body + offset + i, name, _I16, unit=unit, quantity=quantity, scale=sf)
            )
        points.append(Point(body + offset + len(pairs), sf_name, _SF, constant=sf))

    phases = ("", "phA", "phB", "phC")
    group(
        0,
        "A",
        tuple(zip(("A", "AphA", "AphB", "AphC"), ("i_sum", "i1", "i2", "i3"), strict=True)),
        sf_name="A_SF",
        sf=_A_SF,
    )
    group(
        5,
        "V",
        (
            ("PhV", "v_avg"),
            ("PhVphA", "v1"),
            ("PhVphB", "v2"),
            ("PhVphC", "v3"),
            ("PPV", "v_ll_avg"),
            ("PPVphAB", "v12"),
            ("PPVphBC", "v23"),
            ("PPVphCA", "v31"),
        ),
        sf_name="V_SF",
        sf=_V_SF,
    )
    group(14, "Hz", (("Hz", "freq"),), sf_name="Hz_SF", sf=_HZ_SF)
    for offset, prefix, unit, quantity, sf in (
        (16, "W", "W", "p", _W_SF),
        (21, "VA", "VA", "va", _VA_SF),
        (26, "VAR", "var", "var", _VAR_SF),
        (31, "PF", "Pct", "pf_pct", _PF_SF),
    ):
        pairs = tuple(
            (f"{prefix}{phase}", f"{quantity}{n or ''}") for n, phase in enumerate(phases)
        )
        group(offset, unit, pairs, sf_name=f"{prefix}_SF", sf=sf)

    def energy(
        offset: int, names: tuple[str, ...], unit: str, quantities: tuple[str | None, ...]
    ) -> None:
        for i, (name, quantity) in enumerate(zip(names, quantities, strict=True)):
            points.append(
                Point(body + offset + 2 * i, name, _ACC, unit=unit, quantity=quantity, scale=_WH_SF)
            )

    energy(
        36,
        ("TotWhExp", "TotWhExpPhA", "TotWhExpPhB", "TotWhExpPhC"),
        "Wh",
        ("export_wh", "export_wh1", "export_wh2", "export_wh3"),
    )
    energy(
        44,
        ("TotWhImp", "TotWhImpPhA", "TotWhImpPhB", "TotWhImpPhC"),
        "Wh",
        ("import_wh", "import_wh1", "import_wh2", "import_wh3"),
    )
    points.append(Point(body + 52, "TotWh_SF", _SF, constant=_WH_SF))
    none4 = (None, None, None, None)
    energy(53, ("TotVAhExp", "TotVAhExpPhA", "TotVAhExpPhB", "TotVAhExpPhC"), "VAh", none4)
    energy(61, ("TotVAhImp", "TotVAhImpPhA", "TotVAhImpPhB", "TotVAhImpPhC"), "VAh", none4)
    points.append(Point(body + 69, "TotVAh_SF", _SF))  # not implemented
    for offset, quadrant in ((70, "ImpQ1"), (78, "ImpQ2"), (86, "ExpQ3"), (94, "ExpQ4")):
        energy(
            offset, tuple(f"TotVArh{quadrant}{p}" for p in ("", "PhA", "PhB", "PhC")), "varh", none4
        )
    points.append(Point(body + 102, "TotVArh_SF", _SF))  # not implemented
    points.append(Point(body + 103, "Evt (events)", Encoding.BITFIELD32, constant=0))
    end = body + METER_LENGTH
    points += [
        Point(end, "End ID", _U16, constant=0xFFFF),
        Point(end + 1, "End L", _U16, constant=0),
    ]
    return tuple(points)


SUNSPEC_METER = MeterModel(
    name="sunspec",
    title="SunSpec meter (common model 1 + meter model 203, wye three-phase)",
    phases=3,
    source="SunSpec Information Model Specification; models 1 (Common) and 203 (Meter, wye)",
    input_registers=None,
    holding_registers=Table(_build(), max_registers=125, whole_points=False),
    identity_quantity="serial_text",
    functions=frozenset({0x03, 0x06, 0x10}),
    model_name="metersim-203",
)
