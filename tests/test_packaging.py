"""Every subpackage ships: pyproject.toml lists packages by name (so that data directories
are named too), and a new subpackage left out of the list would be missing from the sdist
and the wheels while every test run from the source tree still passes."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
def test_every_subpackage_is_listed() -> None:
    assert tomllib is not None
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "omniq_fast").rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
