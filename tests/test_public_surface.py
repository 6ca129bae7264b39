"""Every public module's ``__all__`` is exactly its public surface, as httpx checks its own.

A module is public when no part of its dotted name starts with ``_``; every one
under a workspace member's ``src/gridclear/<package>/`` is checked, so a new member
or module is covered without editing this file. For each, ``__all__`` must:

- name only things that exist, once each, and no private name (dunders such as
  ``__version__`` excepted);
- name every public thing the module itself defines at top level (a ``def``, a
  ``class`` or an assignment, read from the source), so a public name either is
  part of the surface or is renamed with a leading ``_``.

Names a module imports are not its own: a package may re-export them through
``__all__``, and nothing requires it. Three kinds of definitions are plumbing,
not surface, and are not required: module loggers (``log = logging.getLogger``),
imported modules, and typing constructs (``Conn = AsyncConnection[DictRow]``,
``Reader = Annotated[...]``, type variables), which exist for annotations.
"""

from __future__ import annotations

import ast
import importlib
import logging
import types
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC_TREES = sorted(ROOT.glob("*/src/gridclear/*/__init__.py"))


def _public_modules() -> list[tuple[str, Path]]:
    modules = []
    for init in SRC_TREES:
        namespace = init.parents[1]  # .../src/gridclear
        for path in sorted(init.parent.rglob("*.py")):
            parts = ("gridclear", *path.relative_to(namespace).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if not any(part.startswith("_") for part in parts):
                modules.append((".".join(parts), path))
    return modules


def _bound_names(body: list[ast.stmt]) -> set[str]:
    """Names bound at top level by ``def``, ``class`` and assignments (not imports)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.If):
            names |= _bound_names(node.body) | _bound_names(node.orelse)
        elif isinstance(node, ast.Try):
            names |= _bound_names(node.body) | _bound_names(node.orelse)
            names |= _bound_names(node.finalbody)
            for handler in node.handlers:
                names |= _bound_names(handler.body)
    return names


def _is_plumbing(value: object) -> bool:
    if isinstance(value, types.ModuleType | logging.Logger):
        return True
    if isinstance(value, types.GenericAlias | types.UnionType):
        return True
    return type(value).__module__ == "typing"  # Annotated, unions, aliases, TypeVar, NewType


def _defined_public(module: types.ModuleType, path: Path) -> set[str]:
    names = _bound_names(ast.parse(path.read_text(), filename=str(path)).body)
    return {
        name
        for name in names
        if not name.startswith("_") and not _is_plumbing(getattr(module, name, None))
    }


MODULES = _public_modules()


def test_every_member_src_tree_is_covered() -> None:
    packages = {init.parent.name for init in SRC_TREES}
    assert {"shared", "edge", "cloud", "metersim"} <= packages
    assert len(MODULES) > 50


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[name for name, _ in MODULES])
def test_all_is_exactly_the_public_surface(name: str, path: Path) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert isinstance(exported, list | tuple)
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = sorted(item for item in exported if not hasattr(module, item))
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
    private = sorted(
        item for item in exported if item.startswith("_") and not item.startswith("__")
    )
    assert not private, f"{name}.__all__ exports private names: {private}"
    unlisted = sorted(_defined_public(module, path) - set(exported))
    assert not unlisted, (
        f"{name} defines public names that __all__ does not list (export them, "
        f"or rename them with a leading _): {unlisted}"
    )


def test_typing_plumbing_is_recognised() -> None:
    """The exemptions above cover aliases and loggers, not ordinary values."""
    alias = typing.Annotated[int, "x"]
    assert _is_plumbing(alias)
    assert _is_plumbing(list[int])
    assert _is_plumbing(int | None)
    assert _is_plumbing(typing.TypeVar("T"))
    assert _is_plumbing(logging.getLogger("gridclear.test"))
    assert not _is_plumbing(42)
    assert not _is_plumbing(_bound_names)
    assert not _is_plumbing(Path)
