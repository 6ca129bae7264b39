"""Register maps of the meter models the simulator serves, by name.

Each model is data (:class:`MeterModel`): adding a meter is adding a module
here and an entry in :data:`MODELS`.
"""

from __future__ import annotations

from collections.abc import Mapping

from gridclear.metersim.maps._model import (
    NOT_IMPLEMENTED,
    Encoding,
    MeterModel,
    Point,
    Quantities,
    Setting,
    Table,
)
from gridclear.metersim.maps.sdm120 import SDM120
from gridclear.metersim.maps.sdm630 import SDM630
from gridclear.metersim.maps.sunspec import SUNSPEC_METER

__all__ = [
    "MODELS",
    "NOT_IMPLEMENTED",
    "SDM120",
    "SDM630",
    "SUNSPEC_METER",
    "Encoding",
    "MeterModel",
    "Point",
    "Quantities",
    "Setting",
    "Table",
]

MODELS: Mapping[str, MeterModel] = {m.name: m for m in (SDM630, SDM120, SUNSPEC_METER)}
"""Every model by the name used in ``--meter UNIT:MODEL:PROFILE`` and site files."""
