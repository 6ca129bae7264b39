"""Dependencies point down: the import contracts and the private-name rule.

``script/test`` runs ``lint-imports`` over the tree: the contracts in the root
``pyproject.toml`` (the cloud's layers, the edge kept light, the workshop kept
out of the product, the shared protocol at the bottom, private modules kept in
their package). This module proves that those contracts fail on a deliberately
bad import, in a scratch copy of the source trees (never in the tree itself),
and holds the one rule import-linter cannot check, because it sees modules and
not names: **no module uses a private name of another module**.

The private-name rule, precisely. In every member's ``src/`` tree, a name whose
last part starts with ``_`` (dunders aside) and that is defined in a module
``M`` (a function, class, constant, or a name a package's ``__init__`` holds)
is used only by ``M`` itself. Refused elsewhere are ``from M import _name``
(relative forms too) and ``M._name`` on a module bound by an import. Private
*modules* (``market/_priority.py``) are the ``private_modules`` contract's: they
may be imported anywhere inside their parent package. Tests and benchmarks may
reach into private names; the rule is for the shipped code and the workshop.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridclear.devtools import REPO_ROOT

SRC_TREES = sorted(REPO_ROOT.glob("*/src"))
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class PrivateUse:
    """``module`` (in ``path`` at ``line``) uses ``name``, a private name of another module."""

    path: Path
    line: int
    module: str
    name: str


def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _module_index(src_trees: Iterable[Path]) -> dict[str, Path]:
    """Every module and package under ``src/gridclear`` of each tree, by dotted name."""
    index: dict[str, Path] = {}
    for src in src_trees:
        for path in sorted((src / "gridclear").rglob("*.py")):
            parts = path.relative_to(src).with_suffix("").parts
            index[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
            for depth in range(1, len(parts)):  # namespace and package folders
                index.setdefault(".".join(parts[:depth]), path.parents[len(parts) - 1 - depth])
    return index


class _PrivateNames(ast.NodeVisitor):
    """Collects one module's uses of other modules' private names."""

    def __init__(self, *, module: str, package: str, path: Path, index: dict[str, Path]) -> None:
        self.module, self.package, self.path, self.index = module, package, path, index
        self.bound: dict[str, str] = {}  # a local name -> the gridclear module it is bound to
        self.uses: list[PrivateUse] = []

    def bind(self, tree: ast.Module) -> None:
        """Learn which names are gridclear modules, wherever the import sits (lazy ones too)."""
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "gridclear":
                        local = alias.asname or alias.name.split(".")[0]
                        self.bound[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom) and (base := self._base(node)):
                for alias in node.names:
                    if f"{base}.{alias.name}" in self.index:
                        self.bound[alias.asname or alias.name] = f"{base}.{alias.name}"

    def _base(self, node: ast.ImportFrom) -> str | None:
        if node.level:
            parts = self.package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        return base if base.split(".")[0] == "gridclear" else None

    def _use(self, line: int, owner: str, name: str) -> None:
        if _is_private(name) and owner != self.module:
            self.uses.append(PrivateUse(self.path, line, self.module, f"{owner}.{name}"))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._base(node)
        for alias in node.names if base else ():
            if f"{base}.{alias.name}" not in self.index:  # a module is the contract's
                self._use(node.lineno, base or "", alias.name)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain: list[str] = []
        value: ast.expr = node
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not (isinstance(value, ast.Name) and value.id in self.bound):
            self.generic_visit(node)
            return
        owner = self.bound[value.id]
        for attr in reversed(chain):
            if f"{owner}.{attr}" not in self.index:
                self._use(node.lineno, owner, attr)
                return
            owner = f"{owner}.{attr}"


def private_name_uses(src_trees: Iterable[Path]) -> list[PrivateUse]:
    """Every use, in the ``src/`` trees given, of a private name of another module."""
    trees = list(src_trees)
    index = _module_index(trees)
    uses: list[PrivateUse] = []
    for src in trees:
        for path in sorted((src / "gridclear").rglob("*.py")):
            parts = path.relative_to(src).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            module = ".".join(parts[:-1] if is_package else parts)
            package = module if is_package else module.rpartition(".")[0]
            tree = ast.parse(path.read_text(), filename=str(path))
            visitor = _PrivateNames(module=module, package=package, path=path, index=index)
            visitor.bind(tree)
            visitor.visit(tree)
            uses.extend(visitor.uses)
    return uses


def test_no_module_uses_a_private_name_of_another() -> None:
    uses = private_name_uses(SRC_TREES)
    assert not uses, "private names used outside their module:\n" + "\n".join(
        f"  {use.path.relative_to(REPO_ROOT)}:{use.line}: {use.module} uses {use.name}"
        for use in uses
    )


# ------------------------------------------------------------- scratch copies


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of every member's ``src/`` tree and of the root pyproject (the contracts)."""
    for src in SRC_TREES:
        shutil.copytree(
            src,
            tmp_path / src.relative_to(REPO_ROOT),
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    shutil.copyfile(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(scratch: Path, relative: str, source: str) -> None:
    path = scratch / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write("\n" + source + "\n")


def _lint_imports(scratch: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run on the scratch copy: its trees come first on the path."""
    trees = sorted(str(src) for src in scratch.glob("*/src"))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(trees)}
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=scratch,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_scratch_copy_keeps_every_contract(scratch: Path) -> None:
    """The copy as it is passes, so the failures below are the bad imports' doing."""
    result = _lint_imports(scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


LAYERS = "the cloud's dependencies point down"
EDGE = "the edge never imports the cloud or its stack"
WORKSHOP = "the shipped distributions never import the workshop"
SHARED = "the shared protocol imports no other gridclear distribution"
PRIVATE = "a private module is imported only inside its parent package"


@pytest.mark.parametrize(
    ("relative", "statement", "contract", "reported"),
    [
        (
            "cloud/src/gridclear/cloud/storage/pool.py",
            "import gridclear.cloud.api",
            LAYERS,
            "gridclear.cloud.storage.pool -> gridclear.cloud.api",
        ),
        (  # the cycle app.py once dodged with a lazy import
            "cloud/src/gridclear/cloud/realtime/publisher.py",
            "from gridclear.cloud.api import deps",
            LAYERS,
            "gridclear.cloud.realtime.publisher -> gridclear.cloud.api.deps",
        ),
        (
            "cloud/src/gridclear/cloud/identity/bootstrap.py",
            "from gridclear.cloud.api import schemas",
            LAYERS,
            "gridclear.cloud.identity.bootstrap -> gridclear.cloud.api.schemas",
        ),
        (
            "cloud/src/gridclear/cloud/ingest/writer.py",
            "from gridclear.cloud.market import store",
            LAYERS,
            "gridclear.cloud.ingest.writer -> gridclear.cloud.market.store",
        ),
        (  # every top-level module of the cloud must have a layer
            "cloud/src/gridclear/cloud/unplaced.py",
            "X = 1",
            LAYERS,
            "unplaced",
        ),
        (
            "edge/src/gridclear/edge/outbox.py",
            "from gridclear.cloud import env",
            EDGE,
            "gridclear.edge.outbox -> gridclear.cloud.env",
        ),
        ("edge/src/gridclear/edge/outbox.py", "import fastapi", EDGE, "-> fastapi"),
        ("edge/src/gridclear/edge/status.py", "import solders.pubkey", EDGE, "-> solders"),
        (
            "cloud/src/gridclear/cloud/cli.py",
            "import gridclear.devtools.net",
            WORKSHOP,
            "gridclear.cloud.cli -> gridclear.devtools.net",
        ),
        (
            "shared/src/gridclear/shared/jws.py",
            "import gridclear.edge.outbox",
            SHARED,
            "gridclear.shared.jws -> gridclear.edge.outbox",
        ),
        (
            "cloud/src/gridclear/cloud/api/app.py",
            "from gridclear.cloud.realtime import _manager",
            PRIVATE,
            "gridclear.cloud.api.app -> gridclear.cloud.realtime._manager",
        ),
    ],
)
def test_a_bad_import_breaks_its_contract(
    scratch: Path, relative: str, statement: str, contract: str, reported: str
) -> None:
    _append(scratch, relative, statement)
    result = _lint_imports(scratch)
    assert result.returncode != 0, result.stdout
    assert f"{contract} BROKEN" in result.stdout, result.stdout + result.stderr
    broken = result.stdout.partition("Broken contracts")[2]
    assert reported in broken, broken


@pytest.mark.parametrize(
    ("relative", "statement", "module", "name"),
    [
        (
            "cloud/src/gridclear/cloud/storage/pool.py",
            "from gridclear.cloud.api.deps import _admit",
            "gridclear.cloud.storage.pool",
            "gridclear.cloud.api.deps._admit",
        ),
        (  # another module of the same package is another module
            "cloud/src/gridclear/cloud/api/routes/keys.py",
            "from gridclear.cloud.api.deps import _admit",
            "gridclear.cloud.api.routes.keys",
            "gridclear.cloud.api.deps._admit",
        ),
        (
            "cloud/src/gridclear/cloud/storage/pool.py",
            "from .migrations import _FILE_NAME as NAME",
            "gridclear.cloud.storage.pool",
            "gridclear.cloud.storage.migrations._FILE_NAME",
        ),
        (
            "cloud/src/gridclear/cloud/identity/bootstrap.py",
            "import gridclear.cloud.api.schemas as schemas\nCHECK = schemas._ISO_DATETIME",
            "gridclear.cloud.identity.bootstrap",
            "gridclear.cloud.api.schemas._ISO_DATETIME",
        ),
        (
            "edge/src/gridclear/edge/cli.py",
            "def probe() -> object:\n"
            "    import gridclear.shared.jws\n"
            "    return gridclear.shared.jws._split",
            "gridclear.edge.cli",
            "gridclear.shared.jws._split",
        ),
        (
            "devtools/src/gridclear/devtools/demo.py",
            "from gridclear.devtools import localservices\nFIND = localservices._find_binary",
            "gridclear.devtools.demo",
            "gridclear.devtools.localservices._find_binary",
        ),
    ],
)
def test_the_private_name_check_finds_a_bad_use(
    scratch: Path, relative: str, statement: str, module: str, name: str
) -> None:
    trees = sorted(scratch.glob("*/src"))
    assert private_name_uses(trees) == []  # the copy as it is
    _append(scratch, relative, statement)
    uses = private_name_uses(trees)
    assert [(use.module, use.name) for use in uses] == [(module, name)]
    assert uses[0].path == scratch / relative


@pytest.mark.parametrize(
    ("relative", "statement"),
    [
        # A private module, inside its parent package (the contract judges modules).
        (
            "cloud/src/gridclear/cloud/market/store.py",
            "from gridclear.cloud.market import _priority",
        ),
        ("cloud/src/gridclear/cloud/market/store.py", "from . import _intmath"),
        # A module's own private names, and public names of a private module.
        ("cloud/src/gridclear/cloud/api/deps.py", "CHECK = _admit"),
        ("cloud/src/gridclear/cloud/cli.py", "from gridclear.cloud.market._cli import __doc__"),
        # Private attributes of objects, not of modules.
        (
            "cloud/src/gridclear/cloud/storage/pool.py",
            "def probe(x: object) -> object:\n    return x._y",
        ),
    ],
)
def test_the_private_name_check_allows(scratch: Path, relative: str, statement: str) -> None:
    _append(scratch, relative, statement)
    assert private_name_uses(sorted(scratch.glob("*/src"))) == []
