"""AsyncClient is Client's surface as coroutines: same names, signatures and docstrings."""

from __future__ import annotations

import inspect
from typing import Callable

from omniq_fast import AsyncClient, Client


def _public(cls: type) -> dict[str, object]:
    names = [name for name in dir(cls) if not name.startswith("_")]
    return {name: inspect.getattr_static(cls, name) for name in names}


def test_same_public_names() -> None:
    assert sorted(_public(AsyncClient)) == sorted(_public(Client))


def _comparable(fn: Callable[..., object]) -> inspect.Signature:
    """``fn``'s signature but for the handler's type: each shell types the handler it runs
    (``Handler`` takes a ``JobCtx``, ``AsyncHandler`` an ``AsyncJobCtx``)."""
    sig = inspect.signature(fn)
    params = [p.replace(annotation="Handler") if p.name == "handler" else p
              for p in sig.parameters.values()]  # fmt: skip
    return sig.replace(parameters=params)


def test_same_signatures_and_docstrings() -> None:
    for name, sync in _public(Client).items():
        ours = inspect.getattr_static(AsyncClient, name)
        assert type(ours) is type(sync), name  # staticmethod, property, function alike
        if isinstance(sync, property):
            assert isinstance(ours, property)
            continue
        sync_fn, async_fn = getattr(Client, name), getattr(AsyncClient, name)
        assert _comparable(async_fn) == _comparable(sync_fn), name
        assert inspect.getdoc(async_fn) == inspect.getdoc(sync_fn), name
        assert inspect.getdoc(async_fn), name


def test_constructors_take_the_same_arguments() -> None:
    sync = inspect.signature(Client.__init__).parameters
    ours = inspect.signature(AsyncClient.__init__).parameters
    assert list(ours) == list(sync)
    for name, param in sync.items():
        assert (ours[name].kind, ours[name].default) == (param.kind, param.default), name


def test_every_method_but_static_ones_is_a_coroutine_function() -> None:
    for name, attr in _public(AsyncClient).items():
        if isinstance(attr, (staticmethod, property)):
            assert not inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
            continue
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


def test_async_context_manager() -> None:
    assert inspect.iscoroutinefunction(AsyncClient.__aenter__)
    assert inspect.iscoroutinefunction(AsyncClient.__aexit__)
