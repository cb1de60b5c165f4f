"""AsyncConsumer / AsyncMultiConsumer hold the surface of Consumer / MultiConsumer: the same
public names, the same parameters and defaults, the same docstrings; ``run`` a coroutine."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from omniq_fast import Consumer
from omniq_fast.aio.consumer import AsyncConsumer
from omniq_fast.aio.multiqueue import AsyncMultiConsumer
from omniq_fast.multiqueue import MultiConsumer

PAIRS = [(Consumer, AsyncConsumer), (MultiConsumer, AsyncMultiConsumer)]


def public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def params(fn: Any) -> list[tuple[str, Any, Any]]:
    # Annotations differ by design (Client vs AsyncClient); names, kinds and defaults not.
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize(("sync", "aio"), PAIRS, ids=["consumer", "multi"])
def test_same_public_names(sync: type, aio: type) -> None:
    assert public(sync) == public(aio)


@pytest.mark.parametrize(("sync", "aio"), PAIRS, ids=["consumer", "multi"])
def test_same_signatures_and_docstrings(sync: type, aio: type) -> None:
    assert params(sync.__init__) == params(aio.__init__)  # type: ignore[misc]
    for name in public(sync):
        mine, theirs = getattr(sync, name), getattr(aio, name)
        assert inspect.getdoc(mine) == inspect.getdoc(theirs), name
        if callable(mine):
            assert params(mine) == params(theirs), name


@pytest.mark.parametrize("aio", [AsyncConsumer, AsyncMultiConsumer])
def test_run_is_a_coroutine(aio: type) -> None:
    assert inspect.iscoroutinefunction(aio.run)
    assert not inspect.iscoroutinefunction(aio.stop)
