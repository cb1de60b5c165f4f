"""Every subpackage ships: pyproject.toml lists packages by name (so that data directories
are named too), and a new subpackage left out of the list would be missing from the sdist
and the wheels while every test run from the source tree still passes.

And the package's import graph has no circle through a helper: a helper module gets the
callables (or a typed shape) it needs, never the client or consumer that owns it, not
even under ``TYPE_CHECKING`` (STYLE.md, "Layers and rooms")."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

import pytest

import omniq_fast
from support import module_imports

ROOT = Path(__file__).resolve().parent.parent
#: The package these tests import: the source tree's, or (a copied test suite run against
#: a built wheel) the installed one; its imports are scanned either way.
PACKAGE = Path(omniq_fast.__file__).resolve().parent


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
@pytest.mark.skipif(
    not (ROOT / "omniq_fast").is_dir(), reason="no source tree beside tests/ (a copied test suite)"
)
def test_every_subpackage_and_data_directory_is_listed() -> None:
    """Every directory of shipped files: the subpackages, and those with no ``__init__.py``
    (the Lua scripts, the dashboard's assets), or setuptools warns "Package
    'omniq_fast.lua' is absent from the packages configuration" and a future setuptools
    leaves its files out."""
    assert tomllib is not None
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    holding_files = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "omniq_fast").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {"omniq_fast.lua", "omniq_fast.aio", "omniq_fast.dashboard.static"} <= holding_files
    assert holding_files <= listed, sorted(holding_files - listed)


#: The shells that may still import each other: a client's ``consume`` makes its consumer,
#: which is typed with its client (and the package and ``aio`` export them). Every module
#: outside this set must be in no circle.
SHELL_CIRCLES = frozenset((
    "omniq_fast", "omniq_fast.client", "omniq_fast.consumer", "omniq_fast.multiqueue",
    "omniq_fast.aio", "omniq_fast.aio.client", "omniq_fast.aio.consumer",
    "omniq_fast.aio.multiqueue",
))


def _import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports (anywhere in it)."""
    files = {}
    top = PACKAGE.parent
    for path in PACKAGE.rglob("*"):
        if path.suffix not in (".py", ".pyx", ".so", ".pyd") or "__pycache__" in path.parts:
            continue
        # An extension module's name ends at its first dot (_core.cpython-311-....so).
        parts = path.relative_to(top).parts
        parts = (*parts[:-1], parts[-1].split(".")[0])
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        # The compiled core (Cython source or built extension) is not parsed here: it
        # imports only leaf modules (errors, types), as its pure twin does.
        imports = module_imports(path, top) if path.suffix == ".py" else []
        for _, module in imports:
            # "from .x import y" names both x and x.y; the longest that is a module counts.
            while module and module not in files:
                module = module.rpartition(".")[0]
            # A module's own packages are imported before it anyway ("from . import _core"
            # names the package too): not an edge of its own.
            if module.startswith("omniq_fast") and not f"{name}.".startswith(f"{module}."):
                targets.add(module)
        graph[name] = targets
    return graph


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of ``graph`` with more than one module."""
    reach: dict[str, set[str]] = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        reach[start] = seen
    circles: list[set[str]] = []
    for name in graph:
        circle = {other for other in reach[name] if name in reach[other]} | {name}
        if len(circle) > 1 and circle not in circles:
            circles.append(circle)
    return circles


def test_no_import_circle_runs_through_a_helper() -> None:
    circles = _circles(_import_graph())
    caught = sorted(set().union(*circles) - SHELL_CIRCLES)
    assert not caught, f"modules in an import circle: {caught} (circles: {circles})"


def test_the_circle_check_sees_circles() -> None:
    # What makes the check able to fail: the client and its consumer still import each
    # other (one under TYPE_CHECKING, one inside a method), and the scan sees that circle.
    graph = _import_graph()
    assert {"omniq_fast.client", "omniq_fast.consumer"} <= set().union(*_circles(graph))
    assert "omniq_fast._context" in graph["omniq_fast.consumer"]
    assert "omniq_fast._core" in graph["omniq_fast._compat"]
