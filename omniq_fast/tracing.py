"""OpenTelemetry tracing of producers and consumers (needs the ``tracing`` extra).

Opt-in, in the way the ``opentelemetry-instrumentation-*`` packages work::

    from omniq_fast import tracing
    tracing.instrument()                 # or instrument(tracer_provider=..., propagate=True)

From then on, on :class:`~omniq_fast.Client` and :class:`~omniq_fast.AsyncClient` alike,
every ``publish`` / ``publish_json`` (also ``ctx.exec.publish`` in a handler)
runs in a PRODUCER span ``send <queue>``; every ``publish_many`` / ``publish_many_queues``
call in one PRODUCER span for the whole batch; and every handler run of a consumer made
after ``instrument()`` in a CONSUMER span ``process <queue>``, which is the current span
while the handler runs (on the dispatcher, a worker thread or the event loop), so the
handler's own spans nest under it. A handler that raises marks its span as an error.
:func:`uninstrument` puts everything back (consumers made meanwhile stop tracing too).

Attributes follow the OpenTelemetry messaging conventions: ``messaging.system`` =
``"omniq"``, ``messaging.destination.name`` = the queue, ``messaging.operation.type`` =
``send`` / ``process``, ``messaging.operation.name`` = ``publish``, ``publish_many`` or
``process``, ``messaging.message.id`` = the job id (single jobs; a batch has
``messaging.batch.message_count``), plus ``messaging.omniq.attempt`` (1 for the first run)
and ``messaging.omniq.gid`` (grouped jobs) on consumer spans.

**Propagation** (``propagate=True``): the OmniQ protocol has no headers, so the trace
context travels in the payload. A producer adds the reserved key ``"_otel"`` to each
``dict`` payload (a copy; the caller's dict is not changed), holding what the global
propagator injects (W3C ``traceparent``, ``tracestate``, and baggage if any); list and
other payloads are never touched. A consumer with propagation on takes ``"_otel"`` out of
``ctx.payload`` before the handler sees it (``ctx.payload_raw`` keeps the stored text) and
makes the consumer span a child of the producer span, linked to it as well. Off (the
default), nothing is added to payloads and nothing is read: consumer spans are roots that
carry the job id, so traces can still be joined on ``messaging.message.id``. Turn it on in
producers and consumers alike; a consumer without it leaves ``"_otel"`` in the payload.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from typing import Any, Awaitable, Callable, Iterable, Iterator, Mapping, Optional

from ._version import __version__
from .aio.client import AsyncClient
from .aio.consumer import AsyncConsumer
from .client import Client
from .consumer import Consumer
from ._context import JobCtx
from .errors import MissingExtra
from .types import Job

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate as otel_propagate
    from opentelemetry import trace
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingExtra("traces", "tracing") from exc

__all__ = ["instrument", "uninstrument", "is_instrumented", "CARRIER_KEY", "SYSTEM"]

#: The payload key that carries the trace context when propagation is on.
CARRIER_KEY = "_otel"
#: ``messaging.system`` of every span.
SYSTEM = "omniq"


class _Settings:
    __slots__ = ("tracer", "propagate")

    def __init__(self, tracer: trace.Tracer, propagate: bool) -> None:
        self.tracer = tracer
        self.propagate = propagate


_settings: Optional[_Settings] = None
#: (owner class, attribute) -> the original, while instrumented.
_originals: dict[tuple[type, str], Any] = {}


def instrument(
    *, tracer_provider: Optional[trace.TracerProvider] = None, propagate: bool = False
) -> None:
    """Trace publishes and handler runs from now on (see the module docstring).

    ``tracer_provider`` defaults to the global one; ``propagate`` turns on the trace
    context in dict payloads. Calling it again only changes these two settings.
    """
    global _settings
    tracer = trace.get_tracer("omniq_fast", __version__, tracer_provider=tracer_provider)
    first = _settings is None
    _settings = _Settings(tracer, propagate)
    if not first:
        return
    _patch(Client, "publish", _traced_publish(Client.publish))
    _patch(Client, "publish_json", Client.publish)
    _patch(Client, "publish_many_queues", _traced_publish_many(Client.publish_many_queues))
    _patch(Consumer, "__init__", _traced_consumer_init(Consumer.__init__))
    _patch(AsyncClient, "publish", _traced_publish_async(AsyncClient.publish))
    _patch(AsyncClient, "publish_json", AsyncClient.publish)
    _patch(
        AsyncClient, "publish_many_queues",
        _traced_publish_many_async(AsyncClient.publish_many_queues),
    )  # fmt: skip
    _patch(AsyncConsumer, "__init__", _traced_consumer_init(AsyncConsumer.__init__))


def uninstrument() -> None:
    """Stop tracing and put the original methods back."""
    global _settings
    _settings = None
    for (owner, name), original in _originals.items():
        setattr(owner, name, original)
    _originals.clear()


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return _settings is not None


def _patch(owner: type, name: str, replacement: Any) -> None:
    _originals[(owner, name)] = owner.__dict__[name]
    setattr(owner, name, replacement)


# --------------------------------------------------------------------------- producer


def _base_attributes(queue: str, operation_type: str, operation_name: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": queue,
        "messaging.operation.type": operation_type,
        "messaging.operation.name": operation_name,
    }


def _carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    otel_propagate.inject(carrier)  # the current span's context: the producer span's
    return carrier


def _with_carrier(payload: Any, carrier: Mapping[str, str]) -> Any:
    """``payload`` with the trace context under :data:`CARRIER_KEY` when it is a dict (a
    copy), else ``payload`` itself; a :class:`~omniq_fast.Job` gets a copy likewise."""
    if isinstance(payload, dict):
        return {**payload, CARRIER_KEY: dict(carrier)}
    if isinstance(payload, Job) and isinstance(payload.payload, dict):
        return dataclasses.replace(payload, payload=_with_carrier(payload.payload, carrier))
    return payload


def _send_span(settings: _Settings, queue: str) -> Any:
    """Start ``send <queue>`` for one job as the current span (a context manager)."""
    return settings.tracer.start_as_current_span(
        f"send {queue}", kind=trace.SpanKind.PRODUCER,
        attributes=_base_attributes(queue, "send", "publish"),
    )  # fmt: skip


def _traced_publish(publish: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(publish)
    def traced(self: Client, queue: str, payload: Any, **options: Any) -> str:
        settings = _settings
        if settings is None:
            return publish(self, queue, payload, **options)
        with _send_span(settings, queue) as span:
            if settings.propagate:
                payload = _with_carrier(payload, _carrier())
            job_id = publish(self, queue, payload, **options)
            span.set_attribute("messaging.message.id", job_id)
            return job_id

    return traced


def _traced_publish_async(publish: Callable[..., Awaitable[str]]) -> Callable[..., Any]:
    """:func:`_traced_publish` for ``AsyncClient.publish``: the span is the current one in
    the awaiting task only (the OpenTelemetry context is a context variable)."""

    @functools.wraps(publish)
    async def traced(self: Any, queue: str, payload: Any, **options: Any) -> str:
        settings = _settings
        if settings is None:
            return await publish(self, queue, payload, **options)
        with _send_span(settings, queue) as span:
            if settings.propagate:
                payload = _with_carrier(payload, _carrier())
            job_id = await publish(self, queue, payload, **options)
            span.set_attribute("messaging.message.id", job_id)
            return job_id

    return traced


class _Batch:
    """One ``publish_many_queues`` call inside its span: the jobs to send (with the trace
    context when propagating), and the count to record once they are written."""

    __slots__ = ("span", "jobs_by_queue")

    def __init__(self, span: trace.Span, jobs_by_queue: Mapping[str, Iterable[Any]]) -> None:
        self.span, self.jobs_by_queue = span, jobs_by_queue

    def written(self, written: dict[str, list[str]]) -> dict[str, list[str]]:
        self.span.set_attribute(
            "messaging.batch.message_count", sum(len(ids) for ids in written.values())
        )
        return written


@contextlib.contextmanager
def _batch_span(
    settings: _Settings, jobs_by_queue: Mapping[str, Iterable[Any]]
) -> Iterator[_Batch]:
    """The one span of a ``publish_many_queues`` call (``publish_many`` calls it): ``send
    <queue>`` for one queue, ``send`` without a destination for several. Both shells'
    wrappers use it; they only differ in awaiting the call."""
    queues = list(jobs_by_queue)
    one = queues[0] if len(queues) == 1 else None
    attributes = _base_attributes(one or "", "send", "publish_many")
    if one is None:
        del attributes["messaging.destination.name"]
    with settings.tracer.start_as_current_span(
        f"send {one}" if one is not None else "send", kind=trace.SpanKind.PRODUCER,
        attributes=attributes,
    ) as span:  # fmt: skip
        if settings.propagate:
            carrier = _carrier()
            jobs_by_queue = {
                queue: _each_with_carrier(jobs, carrier) for queue, jobs in jobs_by_queue.items()
            }
        yield _Batch(span, jobs_by_queue)


def _traced_publish_many(
    publish_many_queues: Callable[..., dict[str, list[str]]],
) -> Callable[..., dict[str, list[str]]]:
    @functools.wraps(publish_many_queues)
    def traced(
        self: Client, jobs_by_queue: Mapping[str, Iterable[Any]], **options: Any
    ) -> dict[str, list[str]]:
        settings = _settings
        if settings is None:
            return publish_many_queues(self, jobs_by_queue, **options)
        with _batch_span(settings, jobs_by_queue) as batch:
            return batch.written(publish_many_queues(self, batch.jobs_by_queue, **options))

    return traced


def _traced_publish_many_async(
    publish_many_queues: Callable[..., Awaitable[dict[str, list[str]]]],
) -> Callable[..., Any]:
    @functools.wraps(publish_many_queues)
    async def traced(
        self: Any, jobs_by_queue: Mapping[str, Iterable[Any]], **options: Any
    ) -> dict[str, list[str]]:
        settings = _settings
        if settings is None:
            return await publish_many_queues(self, jobs_by_queue, **options)
        with _batch_span(settings, jobs_by_queue) as batch:
            return batch.written(await publish_many_queues(self, batch.jobs_by_queue, **options))

    return traced


def _each_with_carrier(jobs: Iterable[Any], carrier: Mapping[str, str]) -> Iterator[Any]:
    # Lazy, so a generator of millions of jobs still streams.
    return (_with_carrier(job, carrier) for job in jobs)


# --------------------------------------------------------------------------- consumer


def _traced_consumer_init(init: Callable[..., None]) -> Callable[..., None]:
    """Either shell's consumer ``__init__``, its handler traced (the multi-queue consumers
    make one of these per queue, so they are traced too)."""

    @functools.wraps(init)
    def traced(self: Any, client: Any, queue: str, handler: Any, **options: Any) -> None:
        init(self, client, queue, _traced_handler(handler), **options)

    return traced


def _is_async(handler: Any) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)
    )


def _process_span(settings: _Settings, ctx: JobCtx) -> Any:
    """Start ``process <queue>`` as the current span (a context manager)."""
    attributes = _base_attributes(ctx.queue, "process", "process")
    attributes["messaging.message.id"] = ctx.job_id
    attributes["messaging.omniq.attempt"] = ctx.attempt
    if ctx.gid:
        attributes["messaging.omniq.gid"] = ctx.gid
    # An empty context, not the current one: a job's run is not part of whatever span
    # the thread that started the consumer happened to be in.
    parent = otel_context.Context()
    links = None
    payload = ctx.payload
    if settings.propagate and isinstance(payload, dict) and CARRIER_KEY in payload:
        carrier = payload.pop(CARRIER_KEY)
        if isinstance(carrier, dict):
            parent = otel_propagate.extract(carrier, context=parent)
            producer = trace.get_current_span(parent).get_span_context()
            if producer.is_valid:
                links = [trace.Link(producer)]
    return settings.tracer.start_as_current_span(
        f"process {ctx.queue}", context=parent, kind=trace.SpanKind.CONSUMER,
        attributes=attributes, links=links,
    )  # fmt: skip


def _traced_handler(handler: Any) -> Any:
    if _is_async(handler):

        @functools.wraps(handler)
        async def traced_async(ctx: JobCtx) -> Any:
            settings = _settings
            if settings is None:
                return await handler(ctx)
            with _process_span(settings, ctx):
                return await handler(ctx)

        return traced_async

    @functools.wraps(handler)
    def traced(ctx: JobCtx) -> Any:
        settings = _settings
        if settings is None:
            return handler(ctx)
        with _process_span(settings, ctx):
            return handler(ctx)

    return traced
