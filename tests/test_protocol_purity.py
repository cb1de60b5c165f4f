"""``omniq_fast/_protocol/`` decides and never does I/O (DESIGN.md, rule 1): no module in it
imports a socket, a thread, an event loop, a sleep, a clock or redis-py, nor a shell.

Read from the source (AST), so an import inside a function or under ``TYPE_CHECKING``
counts as well."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import omniq_fast._protocol
from support import module_imports

PROTOCOL = Path(omniq_fast._protocol.__file__).parent
FILES = sorted(PROTOCOL.rglob("*.py"))

#: Top-level modules a pure module may not import at all.
FORBIDDEN_MODULES = frozenset((
    "socket", "ssl", "select", "selectors", "threading", "_thread", "multiprocessing",
    "concurrent", "asyncio", "time", "redis", "hiredis", "valkey", "subprocess",
))
#: omniq-fast modules that do I/O (the shells and their helpers).
SHELLS = frozenset((
    "client", "consumer", "monitor", "transport", "cluster", "_base", "bulk", "aio",
    "embedded", "embedded_cluster", "dashboard", "cli", "exporter", "heartbeats", "wake",
    "workers", "multiqueue", "pipelines", "demo", "outage", "stopping", "reporting",
    "consumer_engine", "engine",
))


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute-ish module name) of every import in ``path``; a relative import is
    named from the package root (``..client`` → ``omniq_fast.client``)."""
    return module_imports(path, PROTOCOL.parent.parent)


def test_the_protocol_package_has_modules() -> None:
    assert PROTOCOL / "__init__.py" in FILES
    assert PROTOCOL / "monitor.py" in FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_io_imports(path: Path) -> None:
    for line, module in _imports(path):
        top = module.split(".")[0]
        assert top not in FORBIDDEN_MODULES, f"{path.name}:{line} imports {module}"
        parts = module.split(".")
        if top == "omniq_fast" and len(parts) > 1:
            # The shells' helper modules carry a leading underscore (``_cluster``).
            shell = parts[1].lstrip("_")
            assert shell not in SHELLS, f"{path.name}:{line} imports the shell {module}"


def test_the_routing_core_is_scanned_and_both_cluster_shells_use_it() -> None:
    """The cluster decisions live once, in ``_protocol/routing.py``: both cluster shells
    import it and define none of its rules themselves."""
    assert PROTOCOL / "routing.py" in FILES
    root = PROTOCOL.parent
    for shell in (root / "_cluster.py", root / "aio" / "_cluster.py"):
        imported = {module for _, module in module_imports(shell, root.parent)}
        assert "omniq_fast._protocol.routing" in imported, shell
        tree = ast.parse(shell.read_text())
        defined = {
            node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
        } | {
            target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)
        }  # fmt: skip
        assert not defined & {"redirect_of", "RESEND_SAFE", "settle_decision", "first_redirect"}


def test_the_scan_resolves_relative_imports() -> None:
    # What makes the shell check able to fail: "from ..keys import" is seen as
    # omniq_fast.keys, so "from ..client import" would be seen as omniq_fast.client.
    names = [module for _, module in _imports(PROTOCOL / "monitor.py")]
    assert "omniq_fast.keys" in names and "omniq_fast._protocol.monitor_models" in names
