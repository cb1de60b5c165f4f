"""Both client shells behind one blocking surface, so a test written against ``Client``
runs on :class:`~omniq_fast.AsyncClient` too (the ``shell`` fixture: ids ``sync``/``async``).

:class:`BlockingAsync` owns an event loop on a thread of its own and runs each coroutine
method of the AsyncClient there, returning its result or raising its error, unchanged.

Consumers: :func:`consumer_of` makes a ``Consumer``/``MultiConsumer`` for a ``Client`` and an
``AsyncConsumer``/``AsyncMultiConsumer`` (behind :class:`BlockingConsumer`) for a
:class:`BlockingAsync`, from the same plain ``def`` handler: on the async side it runs in an
``async def`` wrapper via ``asyncio.to_thread`` (so a handler that sleeps or waits on an
event blocks only itself, as a handler thread does), and sees the job's context with its
``exec``/``check_completion`` coroutines made blocking (:class:`BlockingCtx`).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Coroutine, Optional, Sequence, Union

import redis as redis_py
import redis.asyncio as aioredis

from omniq_fast._engine import Answered
from omniq_fast._reporting import is_async_handler

from omniq_fast import (
    AsyncClient,
    AsyncConsumer,
    AsyncMultiConsumer,
    Client,
    Consumer,
    ConsumerStats,
    MultiConsumer,
)


class BlockingAsync:
    """An AsyncClient used through blocking calls (its coroutines run on a loop thread)."""

    shell_name = "async"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        # Handlers of plain-def tests run in threads (asyncio.to_thread): enough of them for
        # the largest concurrency a test asks for (the default pool has cpu+4).
        self.loop.set_default_executor(ThreadPoolExecutor(64, thread_name_prefix="aio-handler"))
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._twin: Optional[aioredis.Redis] = None
        given = kwargs.get("redis")
        if isinstance(given, redis_py.Redis):
            # A blocking redis-py connection given to the sync shell: the async shell gets a
            # redis.asyncio one to the same server with the same reply settings (ours to
            # close, since the test closes only the one it made).
            kwargs["redis"] = self._twin = self.call(_twin_of, given)
        self.aclient: AsyncClient = self.call(self._make, *args, **kwargs)

    @staticmethod
    async def _make(*args: Any, **kwargs: Any) -> AsyncClient:
        return AsyncClient(*args, **kwargs)

    def call(
        self,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
        timeout: Optional[float] = 120,
        **kwargs: Any,
    ) -> Any:
        done: Future[Any] = asyncio.run_coroutine_threadsafe(
            _carried(fn(*args, **kwargs)), self.loop
        )
        outcome, value = done.result(timeout=timeout)
        if outcome == "raise":
            raise value
        return value

    def consume(self, queue: Union[str, Sequence[str]], handler: Callable[[Any], Any],
                **options: Any) -> ConsumerStats:
        """``AsyncClient.consume`` with a plain ``def`` handler (see the module docstring)."""
        return self.call(self.aclient.consume, queue, self.async_handler(handler), timeout=None,
                         **options)  # fmt: skip

    def async_handler(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``handler`` as an ``async def`` that runs it in a thread on a blocking ctx (an
        ``async def`` handler, or anything not callable, is passed on as it is)."""
        if not callable(handler) or is_async_handler(handler):
            return handler

        async def run(ctx: Any) -> Any:
            return await asyncio.to_thread(handler, BlockingCtx(self, ctx))

        return run

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
            if self._twin is not None:
                self.call(self._twin.aclose)
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


class BlockingCtx:
    """An async consumer's job context as a plain-def handler sees it: every field as it
    is, its ``exec`` and ``check_completion`` coroutines run to completion on the loop."""

    def __init__(self, shell: BlockingAsync, ctx: Any) -> None:
        self._ctx = ctx
        self.exec = _Blocking(shell, ctx.exec)
        self.check_completion = _Blocking(shell, ctx.check_completion)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_ctx", "exec", "check_completion"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._ctx, name, value)


class BlockingConsumer:
    """An AsyncConsumer (or AsyncMultiConsumer) driven like a blocking ``Consumer``:
    ``run()`` blocks until it returns; ``stop()`` and ``wake_up()`` may come from any
    thread; every other attribute is the async consumer's."""

    def __init__(self, shell: BlockingAsync, target: Any) -> None:
        self._shell, self.target = shell, target

    def run(self) -> ConsumerStats:
        return self._shell.call(self.target.run, timeout=None)  # type: ignore[no-any-return]

    def stop(self) -> None:
        self._on_loop(self.target.stop)

    def wake_up(self) -> None:
        self._on_loop(self.target.wake_up)

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop and wait for it (the consumer's events are the loop's)."""

        async def run() -> None:
            fn()

        self._shell.call(run)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def consumer_of(client: Any, queue: Union[str, Sequence[str]], handler: Callable[[Any], Any],
                **options: Any) -> Any:
    """The consumer of ``client``'s shell for ``queue`` (one name or several), running the
    plain ``def`` ``handler`` (see the module docstring)."""
    if not isinstance(client, BlockingAsync):
        kind: Any = Consumer if isinstance(queue, str) else MultiConsumer
        return kind(client, queue, handler, **options)
    akind: Any = AsyncConsumer if isinstance(queue, str) else AsyncMultiConsumer

    async def make() -> Any:
        return akind(client.aclient, queue, client.async_handler(handler), **options)

    return BlockingConsumer(client, client.call(make))


def shell_name(client: Any) -> str:
    """``"sync"`` or ``"async"``: which shell ``client`` is."""
    return "async" if isinstance(client, BlockingAsync) else "sync"


async def _carried(coro: Coroutine[Any, Any, Any]) -> tuple[str, Any]:
    """``coro``'s result, or a SystemExit/KeyboardInterrupt/other BaseException it raised,
    as a value: raised from a task, asyncio lets those escape the loop (as asyncio.run
    would, on the caller's side), which here would end the loop thread instead."""
    try:
        return ("ok", await coro)
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as exc:
        return ("raise", exc)


async def _twin_of(conn: redis_py.Redis) -> aioredis.Redis:
    kwargs = conn.connection_pool.connection_kwargs
    return aioredis.Redis(
        host=kwargs.get("host", "localhost"), port=kwargs.get("port", 6379),
        db=kwargs.get("db", 0), username=kwargs.get("username"),
        password=kwargs.get("password"), decode_responses=kwargs.get("decode_responses", False),
        protocol=kwargs.get("protocol") or 2,
    )  # fmt: skip


SHELLS: dict[str, Callable[..., Any]] = {"sync": Client, "async": BlockingAsync}


def run_consumer(shell: str, url: str, core_name: str, queue: str,
                 handler: Callable[[Any], Any], **options: Any) -> None:
    """Run a consumer of the shell named ``shell`` until it is stopped (SIGTERM): the body
    of the consumer processes that the chaos and crash tests start and kill. On the async
    shell a real ``AsyncClient``/``AsyncConsumer`` under ``asyncio.run`` (its own signal
    handlers, as in production), the plain ``def`` ``handler`` in a thread."""
    import importlib

    core = importlib.import_module(core_name)
    if shell == "sync":
        Consumer(Client(url, _core=core), queue, handler, **options).run()
        return

    async def run(ctx: Any) -> Any:
        return await asyncio.to_thread(handler, ctx)

    async def main() -> None:
        async with AsyncClient(url, _core=core) as client:
            await AsyncConsumer(client, queue, run, **options).run()

    asyncio.run(main())


def patch_run_many(monkeypatch: Any, client: Any, fn: Callable[..., Any]) -> None:
    """Route every round trip of ``client``'s engine (each consumer trip is one) through
    ``fn(calls, extra, real)``, a plain function: ``real(calls, extra)`` sends it for real.
    On the async shell ``fn`` runs in a thread, ``real`` on the loop. The blocking
    consumer's overlapped trips (``send_many``, replies read later) go through ``fn`` too,
    answered at once."""
    if not isinstance(client, BlockingAsync):
        transport = client._engine.transport
        real_sync = transport.run_many
        monkeypatch.setattr(
            transport, "run_many", lambda calls, extra=(): fn(calls, extra, real_sync)
        )
        monkeypatch.setattr(
            transport, "send_many", lambda calls, after=None: Answered(fn(calls, (), real_sync))
        )
        return
    engine = client.aclient._engine
    real_async = engine.run_many

    async def run_many(anchor: str, calls: Any, extra: Any = ()) -> Any:
        def real(c: Any, e: Any = ()) -> Any:
            return client.call(real_async, anchor, c, e)

        return await asyncio.to_thread(fn, calls, extra, real)

    monkeypatch.setattr(engine, "run_many", run_many)


def noop_for(client: Any) -> Callable[[Any], Any]:
    """A handler that does nothing, native to ``client``'s shell: where a test depends on
    handlers taking no time (prefetch depth follows handler time), the thread hop of a
    plain def on the async shell would change what it measures."""
    if not isinstance(client, BlockingAsync):
        return lambda ctx: None

    async def noop(ctx: Any) -> None:
        return None

    return noop
