"""The public modules say what they export, and export what they say."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = [
    "gridclear.metersim",
    "gridclear.metersim.errors",
    "gridclear.metersim.maps",
    "gridclear.metersim.physics",
    "gridclear.metersim.faults",
    "gridclear.metersim.device",
    "gridclear.metersim.site",
    "gridclear.metersim.clock",
    "gridclear.metersim.framing",
    "gridclear.metersim.handling",
    "gridclear.metersim.transport",
    "gridclear.metersim.control",
    "gridclear.metersim.server",
    "gridclear.metersim.runner",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing
