"""What each assembled Lua script carries (no server needed; the conformance suite runs them).

Lua makes a closure for every top-level local function of a script on every call, so the
registry leaves out the library functions a script never calls: a cheap call such as
``heartbeat`` on a lost lease or ``pause`` spent about a third of its server time building
functions it did not use."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from omniq_fast import _scripts
from omniq_fast._scripts import SCRIPT_NAMES, script

LUA = resources.files("omniq_fast").joinpath("lua")
LIBRARIES = sorted(f.name for f in LUA.iterdir() if f.name.startswith("_") and f.name.endswith(".lua"))

#: The job engine each batch script runs (one engine per ``_batch_*.lua`` file).
ENGINES = {
    "enqueue_batch": "enqueue_jobs", "reserve_batch": "reserve_jobs",
    "heartbeat_batch": "extend_leases", "ack_success_batch": "complete_jobs",
    "ack_fail_batch": "fail_jobs",
}


def _functions(source: bytes) -> list[str]:
    return re.findall(r"^local function (\w+)", source.decode(), re.MULTILINE)


def _definitions(source: bytes) -> list[str]:
    """The top-level functions and constants (``local NAME = ...``), in order."""
    return re.findall(r"^local (?:function )?(\w+)\b", source.decode(), re.MULTILINE)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_library_cuts_into_its_functions_and_joins_back_whole(library: str) -> None:
    # The layout the registry relies on: a top-level function is a one-liner or ends at
    # the next "end" alone on its line; a constant ends where its brackets close.
    data = LUA.joinpath(library).read_bytes()
    chunks = _scripts._chunks(data)
    assert b"".join(text for _, text in chunks) == data
    named = [(name, text) for name, text in chunks if name is not None]
    assert [name.decode() for name, _ in named] == _definitions(data)
    for name, text in named:
        if name.decode() in _functions(data):
            assert text.rstrip().endswith(b"end")


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_each_script_carries_only_the_functions_and_constants_it_uses(name: str) -> None:
    source = script(name).source.decode()
    for defined in _definitions(script(name).source):
        assert len(re.findall(rf"\b{defined}\b", source)) > 1, f"{name} builds {defined}"


def test_the_prelude_is_cut_to_what_each_script_uses() -> None:
    prelude = _functions(LUA.joinpath("_lib.lua").read_bytes())
    assert "lease_error" in prelude and "retry_or_fail" in prelude
    assert _functions(script("pause").source) == []  # pause calls none of them
    assert "lease_error" in _functions(script("heartbeat").source)
    assert "retry_or_fail" not in _functions(script("heartbeat").source)
    assert b"K_COMPLETED" not in script("heartbeat").source  # nor its constants
    assert b"local K_ACTIVE = " in script("heartbeat").source


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_each_batch_script_builds_only_its_own_engine(name: str) -> None:
    assert set(_functions(script(name).source)) & set(ENGINES.values()) == {ENGINES[name]}
