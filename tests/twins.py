"""The two implementations of the hot path, as pytest parameters (tests and benchmarks)."""

from __future__ import annotations

import platform
from types import ModuleType

import pytest


def implementations() -> list:  # type: ignore[type-arg]
    from omniq_fast import _compat, _core_py

    params = [pytest.param(_core_py, id="python")]
    if not _compat.NO_EXTENSIONS and platform.python_implementation() == "CPython":
        # Imported directly, not through _compat: a broken build fails the run here
        # instead of quietly testing the Python twin twice.
        from omniq_fast import _core

        params.insert(0, pytest.param(_core, marks=pytest.mark.c_extension, id="cython"))
    return params


@pytest.fixture(scope="session", params=implementations())
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The hot-path implementation under test (compiled core or pure twin)."""
    return request.param  # type: ignore[no-any-return]
