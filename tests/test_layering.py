"""medres's imports run one way: no cycle, and no import from a lower layer up to a higher one.

The allowed order is written once, in :data:`LAYERS` (lowest first); the
README's architecture section draws the same picture. Every module of the
``medres`` package is read as an AST, so imports inside functions and under
``TYPE_CHECKING`` count as much as those at the top, and so do
``importlib.import_module("medres....")`` calls with a constant name. A
module may import from its own layer or any lower one; packages of one layer
may import each other, but never in a cycle, and no two modules import each
other, directly or round a longer loop.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import medres

# Lowest first. Each name is a top-level module or package of medres ("__init__" is medres/__init__.py,
# which every import of medres runs first, so it must import nothing of medres above the bottom layer).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "atomic", "paths", "lazy", "timing"),
    ("io", "metrics"),
    ("models", "transforms", "runtime"),
    ("data", "synthetic", "explain", "inference"),
    ("train",),
    ("evaluate", "score", "segment"),
    ("app",),
    ("cli",),
    ("__main__",),
)
LAYER_OF = {unit: index for index, layer in enumerate(LAYERS) for unit in layer}
# Training sits beside what serves a trained model, not under it (DESIGN.md): evaluation, scoring,
# segmentation and the app never import train, so the training code cannot change what they compute.
IMPORTERS_OF_TRAIN = ("train", "cli")
PACKAGE = Path(medres.__file__).resolve().parent
IMPORT_FUNCTIONS = ("import_module", "__import__")


@dataclass(frozen=True)
class Import:
    """One import of a medres module by another, with where it is written."""

    source: str
    target: str
    path: Path
    line: int

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root.parent)}:{self.line}"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package at ``root`` (a package is its ``__init__``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def unit_of(module: str) -> str:
    """The layered unit of a module: its top-level module or package below medres."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a module of the package (None: not the package's)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def imported_names(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every dotted name the module imports, anywhere in its body, with the line."""
    package = module if is_package else module.rpartition(".")[0]
    constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from medres.x import y`: the submodule medres.x.y if there is one
                yield f"{base}.{alias.name}", node.lineno
        elif isinstance(node, ast.Call) and node.args and _called_name(node.func) in IMPORT_FUNCTIONS:
            argument = node.args[0]
            if isinstance(argument, ast.Name):
                argument = ast.Constant(constants.get(argument.id))
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                yield argument.value, node.lineno


def _called_name(function: ast.expr) -> str | None:
    if isinstance(function, ast.Attribute):
        return function.attr
    return function.id if isinstance(function, ast.Name) else None


def package_imports(root: Path) -> list[Import]:
    """Every import of a module of the package at ``root`` by another of its modules."""
    modules = module_names(root)
    found: set[Import] = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, line in imported_names(tree, module, path.name == "__init__.py"):
            target = resolve(name, modules) if name.split(".")[0] == root.name else None
            if target is not None and target != module:
                found.add(Import(module, target, path, line))
    return sorted(found, key=lambda item: (item.source, item.target, item.line))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def module_cycles(imports: list[Import]) -> list[list[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for item in imports:
        edges[item.source].add(item.target)
    return cycles(edges)


def unit_cycles(imports: list[Import]) -> list[list[str]]:
    """Cycles between top-level packages (each package may import itself freely)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for item in imports:
        if unit_of(item.source) != unit_of(item.target):
            edges[unit_of(item.source)].add(unit_of(item.target))
    return cycles(edges)


def upward_imports(imports: list[Import], root: Path) -> list[str]:
    """``file:line source (layer) -> target (layer)`` for each import of a higher layer by a lower one."""
    found = []
    for item in imports:
        source, target = LAYER_OF[unit_of(item.source)], LAYER_OF[unit_of(item.target)]
        if target > source:
            found.append(f"{item.where(root)} {item.source} (layer {source}: {unit_of(item.source)}) imports "
                         f"{item.target} (layer {target}: {unit_of(item.target)})")
    return found


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return package_imports(PACKAGE)


def test_every_module_belongs_to_a_layer() -> None:
    units = {unit_of(module) for module in module_names(PACKAGE)}
    assert sorted(units - set(LAYER_OF)) == [], "add the new module or package to LAYERS (and the README)"
    assert sorted(set(LAYER_OF) - units) == [], "a layer names a module that no longer exists"


def test_the_walk_finds_the_imports(imports: list[Import]) -> None:
    assert len(imports) > 150
    assert any(item.source == "medres.cli.main" and unit_of(item.target) == "cli" for item in imports)
    assert any(item.source == "medres.__main__" and item.target == "medres.cli.main" for item in imports)


def test_no_import_cycle_between_modules(imports: list[Import]) -> None:
    assert module_cycles(imports) == []


def test_no_import_cycle_between_packages(imports: list[Import]) -> None:
    assert unit_cycles(imports) == []


def test_no_import_from_a_lower_layer_to_a_higher_one(imports: list[Import]) -> None:
    assert upward_imports(imports, PACKAGE) == []


def test_only_the_command_line_imports_train(imports: list[Import]) -> None:
    assert [f"{item.where(PACKAGE)} {item.source} imports {item.target}" for item in imports
            if unit_of(item.target) == "train" and unit_of(item.source) not in IMPORTERS_OF_TRAIN] == []


def test_the_checks_catch_an_upward_import_a_cycle_and_a_hidden_import(tmp_path: Path) -> None:
    """A made-up package named medres, with one of each fault: the checks above are not blind to them."""
    root = tmp_path / "medres"
    files = {
        "__init__.py": "",
        "errors.py": "",
        "io/__init__.py": "from medres.io.reader import read\n",
        "io/reader.py": "from . import writer\ndef read():\n    from medres.train import loop\n",
        "io/writer.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from medres.io.reader import read\n",
        "train/__init__.py": "",
        "train/loop.py": "import importlib\nMODULE = 'medres.cli'\ndef f():\n    importlib.import_module(MODULE)\n",
        "cli.py": "from medres import errors\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    found = package_imports(root)
    assert module_cycles(found) == [["medres.io.reader", "medres.io.writer"]]
    assert unit_cycles(found) == []
    upward = upward_imports(found, root)
    assert [line.split()[0] for line in upward] == ["medres/io/reader.py:3", "medres/train/loop.py:4"]
    assert ("medres.cli", "medres.errors") in {(item.source, item.target) for item in found}
