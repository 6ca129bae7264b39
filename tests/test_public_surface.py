"""Every public module says what it exports, and exports only what exists."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import gridclear.cloud
import gridclear.edge
import gridclear.metersim
import gridclear.shared

PACKAGES: list[ModuleType] = [gridclear.shared, gridclear.edge, gridclear.cloud, gridclear.metersim]


def _public_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _public_modules())
def test_public_module_declares_all_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
