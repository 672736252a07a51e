"""Reason codes: declared once, in medres/errors.py, unique, snake_case, and the only ones raised.

The AST of every module of ``medres`` is read (nothing is imported but
``medres.errors``), so an error class that a module defines for itself, or
raises without declaring it in ``medres/errors.py``, fails here however the
module is reached.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from collections import Counter
from pathlib import Path

import pytest

import medres
from medres import errors
from medres.errors import MedresError

PACKAGE = Path(medres.__file__).resolve().parent
ERRORS_MODULE = PACKAGE / "errors.py"
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def declared_error_classes() -> list[type[MedresError]]:
    """Every MedresError subclass that medres.errors defines (MedresError itself included)."""
    return [value for _, value in inspect.getmembers(errors, inspect.isclass)
            if issubclass(value, MedresError) and value.__module__ == errors.__name__]


def own_reason(error_class: type[MedresError]) -> str | None:
    """The reason code the class itself declares (None when it inherits its parent's)."""
    return vars(error_class).get("reason")


def module_trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def terminal_name(node: ast.expr) -> str | None:
    """``X`` for ``X``, ``module.X`` or a call of either; None for anything else."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def class_bases(trees: dict[Path, ast.Module]) -> dict[str, list[tuple[Path, list[str]]]]:
    """Every class defined in medres: name -> [(module, base names)]."""
    found: dict[str, list[tuple[Path, list[str]]]] = {}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = [name for name in map(terminal_name, node.bases) if name is not None]
                found.setdefault(node.name, []).append((path, bases))
    return found


def medres_error_names(classes: dict[str, list[tuple[Path, list[str]]]],
                       known: frozenset[str] = frozenset({"MedresError"})) -> set[str]:
    """Names of the classes in ``classes`` that derive (directly or not) from one of ``known``, and ``known``."""
    names = set(known)
    grown = True
    while grown:
        grown = False
        for name, definitions in classes.items():
            if name not in names and any(set(bases) & names for _, bases in definitions):
                names.add(name)
                grown = True
    return names


@pytest.fixture(scope="module")
def trees() -> dict[Path, ast.Module]:
    return module_trees()


def test_reason_codes_are_unique() -> None:
    codes = Counter(own_reason(error_class) for error_class in declared_error_classes())
    codes.pop(None, None)
    assert {code: count for code, count in codes.items() if count > 1} == {}
    assert len(codes) >= 40  # every code of medres, not a handful: the walk found the module's classes


def test_reason_codes_are_snake_case() -> None:
    bad = {error_class.__name__: error_class.reason for error_class in declared_error_classes()
           if not SNAKE_CASE.fullmatch(error_class.reason)}
    assert bad == {}


def test_every_error_has_a_message_of_its_own_or_its_parents() -> None:
    generic = MedresError.default_message
    assert [cls.__name__ for cls in declared_error_classes()
            if cls is not MedresError and cls.default_message == generic] == []


def test_no_module_but_errors_defines_a_medres_error(trees: dict[Path, ast.Module]) -> None:
    classes = class_bases(trees)
    error_names = medres_error_names(classes)
    elsewhere = sorted(f"{path.relative_to(PACKAGE.parent)}: {name}" for name in error_names
                       for path, _ in classes.get(name, []) if path != ERRORS_MODULE)
    assert elsewhere == []


def test_every_raised_medres_error_is_declared_in_errors(trees: dict[Path, ast.Module]) -> None:
    declared = {error_class.__name__ for error_class in declared_error_classes()}
    error_names = medres_error_names(class_bases(trees)) | declared
    raised: set[tuple[str, str]] = set()
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                name = terminal_name(node.exc)
                if name in error_names:
                    raised.add((str(path.relative_to(PACKAGE.parent)), name))
    assert raised, "no raise of a MedresError found: the AST walk is broken"
    assert sorted(f"{module}: {name}" for module, name in raised if name not in declared) == []


def test_the_walk_sees_errors_raised_through_a_module_attribute(tmp_path: Path) -> None:
    """The checks above would be blind if ``raise errors.X(...)`` or a class defined elsewhere slipped by."""
    source = ("from medres import errors\nfrom medres.errors import UsageError\n"
              "class LocalError(UsageError):\n    reason = 'local'\n"
              "def f():\n    raise errors.NotFoundError('x')\n"
              "def g():\n    raise LocalError\n")
    tree = ast.parse(source)
    classes = class_bases({tmp_path / "m.py": tree})
    declared = frozenset(error_class.__name__ for error_class in declared_error_classes())
    assert "LocalError" in medres_error_names(classes, declared)
    raised = {terminal_name(node.exc) for node in ast.walk(tree) if isinstance(node, ast.Raise)}
    assert raised == {"NotFoundError", "LocalError"}


def test_skipped_reasons_of_score_are_declared_codes() -> None:
    """A misspelt code in SKIPPED_REASONS would turn a skip into a failure without any other sign.

    The module is loaded from its file (it imports only ``typing``), not through ``medres.score``'s
    package, so this check does not depend on the scoring pipeline's imports.
    """
    spec = importlib.util.spec_from_file_location("score_outcomes", PACKAGE / "score" / "outcomes.py")
    outcomes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(outcomes)
    codes = {error_class.reason for error_class in declared_error_classes()}
    assert outcomes.SKIPPED_REASONS - codes == set()


def test_one_geometry_mismatch_code() -> None:
    """The app's label check and the data loaders' check are one reason, as batch tables see it."""
    assert errors.LabelGeometryError.reason == errors.GeometryMismatchError.reason == "geometry_mismatch"
    assert issubclass(errors.LabelGeometryError, errors.GeometryMismatchError)
