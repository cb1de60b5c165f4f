"""Both client shells behind one blocking surface, so a test written against ``Client``
runs on :class:`~omniq_fast.AsyncClient` too (the ``shell`` fixture: ids ``sync``/``async``).

:class:`BlockingAsync` owns an event loop on a thread of its own and runs each coroutine
method of the AsyncClient there, returning its result or raising its error, unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import Future
from typing import Any, Callable, Coroutine

from omniq_fast import AsyncClient, Client


class BlockingAsync:
    """An AsyncClient used through blocking calls (its coroutines run on a loop thread)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.aclient: AsyncClient = self.call(self._make, *args, **kwargs)

    @staticmethod
    async def _make(*args: Any, **kwargs: Any) -> AsyncClient:
        return AsyncClient(*args, **kwargs)

    def call(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kwargs: Any) -> Any:
        done: Future[Any] = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self.loop)
        return done.result(timeout=120)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.aclient, name)
        if not inspect.iscoroutinefunction(attr):
            return attr  # properties, static methods
        return lambda *args, **kwargs: self.call(attr, *args, **kwargs)

    @property
    def redis(self) -> Any:
        """The AsyncClient's ``redis.asyncio.Redis``, its commands awaited on the loop."""
        return _Blocking(self, self.aclient.redis)

    def close(self) -> None:
        try:
            self.call(self.aclient.close)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def __enter__(self) -> "BlockingAsync":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()




class _Blocking:
    """An object whose methods return awaitables, used through blocking calls."""

    def __init__(self, shell: BlockingAsync, target: Any) -> None:
        self._shell, self._target = shell, target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def blocking(*args: Any, **kwargs: Any) -> Any:
            async def run() -> Any:
                result = attr(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result

            return self._shell.call(run)

        return blocking


SHELLS: dict[str, Callable[..., Any]] = {"sync": Client, "async": BlockingAsync}
