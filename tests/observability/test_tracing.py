"""Tracing against a real server, recorded by the OpenTelemetry SDK's in-memory exporter:
producer and consumer spans, their kinds and attributes, parent and child across
producer -> consumer with propagation on, and nothing added to payloads with it off."""

from __future__ import annotations

import asyncio
import json
from types import ModuleType
from typing import Any, Iterator

import pytest
import redis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from omniq_fast import AsyncClient, AsyncConsumer, Client, Consumer, Job, JobCtx, tracing
from support import job_hash, wait_until
from test_consumer import FAST, running


@pytest.fixture
def client(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    with shell(redis_url, _core=core) as c:
        yield c


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Finished spans; tracing is undone after the test."""
    yield InMemorySpanExporter()
    tracing.uninstrument()


def _provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def stored_payload(r: redis.Redis, queue: str, job_id: str) -> Any:
    return json.loads(job_hash(r, queue, job_id)["payload"])


def _handler(mode: str, tracer: Any, seen: list[Any]) -> Any:
    def work(ctx: JobCtx) -> None:
        with tracer.start_as_current_span("work"):
            seen.append((ctx.payload, ctx.payload_raw))

    async def work_async(ctx: JobCtx) -> None:
        await asyncio.sleep(0)
        with tracer.start_as_current_span("work"):
            seen.append((ctx.payload, ctx.payload_raw))

    return work_async if mode == "async" else work


@pytest.mark.parametrize("mode, concurrency", [("inline", 1), ("threads", 3), ("async", 3)])
def test_propagation_makes_the_consumer_span_a_child_of_the_producer_span(
    client: Client, r: redis.Redis, qname: str, spans: InMemorySpanExporter,
    mode: str, concurrency: int,
) -> None:  # fmt: skip
    provider = _provider(spans)
    tracing.instrument(tracer_provider=provider, propagate=True)
    tracer = provider.get_tracer("test")
    given = {"n": 1, "name": "é"}
    job_id = client.publish(qname, given)
    assert given == {"n": 1, "name": "é"}  # the caller's dict is not changed
    stored = stored_payload(r, qname, job_id)
    assert set(stored) == {"n", "name", tracing.CARRIER_KEY}
    seen: list[Any] = []
    with running(client, qname, _handler(mode, tracer, seen), concurrency=concurrency) as run:
        wait_until(lambda: run.consumer.stats.succeeded == 1, "the job acked")
        run.stop()
    # The handler sees the payload as published; the raw text keeps the carrier.
    assert seen[0][0] == given
    assert json.loads(seen[0][1]) == stored

    (send,) = named(spans, f"send {qname}")
    (process,) = named(spans, f"process {qname}")
    (work,) = named(spans, "work")
    assert send.kind == SpanKind.PRODUCER and process.kind == SpanKind.CONSUMER
    assert dict(send.attributes or {}) == {
        "messaging.system": "omniq", "messaging.destination.name": qname,
        "messaging.operation.type": "send", "messaging.operation.name": "publish",
        "messaging.message.id": job_id,
    }  # fmt: skip
    assert dict(process.attributes or {}) == {
        "messaging.system": "omniq", "messaging.destination.name": qname,
        "messaging.operation.type": "process", "messaging.operation.name": "process",
        "messaging.message.id": job_id, "messaging.omniq.attempt": 1,
    }  # fmt: skip
    send_ctx, process_ctx = send.get_span_context(), process.get_span_context()
    assert send_ctx is not None and process_ctx is not None
    # Producer -> consumer -> the handler's own span, one trace.
    assert process.parent is not None and process.parent.span_id == send_ctx.span_id
    assert process_ctx.trace_id == send_ctx.trace_id
    assert [link.context.span_id for link in process.links] == [send_ctx.span_id]
    assert work.parent is not None and work.parent.span_id == process_ctx.span_id
    assert stored[tracing.CARRIER_KEY]["traceparent"] == (
        f"00-{send_ctx.trace_id:032x}-{send_ctx.span_id:016x}-{send_ctx.trace_flags:02x}"
    )
    assert process.status.status_code == StatusCode.UNSET


def test_without_propagation_nothing_is_injected_and_spans_still_carry_the_job_id(
    client: Client, r: redis.Redis, qname: str, spans: InMemorySpanExporter
) -> None:
    provider = _provider(spans)
    tracing.instrument(tracer_provider=provider)
    ids = [client.publish(qname, {"n": i}) for i in range(3)]
    for i, job_id in enumerate(ids):
        assert stored_payload(r, qname, job_id) == {"n": i}  # byte for byte what was given
        assert job_hash(r, qname, job_id)["payload"] == f'{{"n":{i}}}'
    seen: list[Any] = []
    with running(client, qname, lambda ctx: seen.append(ctx.payload)) as run:
        wait_until(lambda: run.consumer.stats.succeeded == 3, "three jobs acked")
        run.stop()
    assert seen == [{"n": 0}, {"n": 1}, {"n": 2}]
    sends = named(spans, f"send {qname}")
    processes = named(spans, f"process {qname}")
    assert [s.attributes["messaging.message.id"] for s in sends] == ids  # type: ignore[index]
    assert [s.attributes["messaging.message.id"] for s in processes] == ids  # type: ignore[index]
    trace_ids = {s.get_span_context().trace_id for s in sends}  # type: ignore[union-attr]
    for process in processes:
        assert process.parent is None and not process.links  # a root of its own trace
        assert process.get_span_context().trace_id not in trace_ids  # type: ignore[union-attr]


def test_publish_many_is_one_span_and_injects_into_dict_payloads_only(
    client: Client, r: redis.Redis, qname: str, spans: InMemorySpanExporter
) -> None:
    tracing.instrument(tracer_provider=_provider(spans), propagate=True)
    mine = {"a": 1}
    jobs = [mine, [1, 2], Job({"b": 2}, max_attempts=5), Job([3])]
    ids = client.publish_many(qname, iter(jobs), batch_size=2)
    assert mine == {"a": 1}
    (send,) = named(spans, f"send {qname}")
    assert send.kind == SpanKind.PRODUCER
    attrs = dict(send.attributes or {})
    assert attrs["messaging.operation.name"] == "publish_many"
    assert attrs["messaging.batch.message_count"] == 4
    assert "messaging.message.id" not in attrs
    payloads = [stored_payload(r, qname, job_id) for job_id in ids]
    carrier = payloads[0].pop(tracing.CARRIER_KEY)
    assert payloads[0] == {"a": 1} and payloads[1] == [1, 2] and payloads[3] == [3]
    assert payloads[2].pop(tracing.CARRIER_KEY) == carrier
    assert payloads[2] == {"b": 2}
    assert job_hash(r, qname, ids[2])["max_attempts"] == "5"
    ctx = send.get_span_context()
    assert ctx is not None and carrier["traceparent"].split("-")[2] == f"{ctx.span_id:016x}"
    # Several queues: one span with no single destination.
    spans.clear()
    client.publish_many_queues({qname: [{"x": 1}], qname + "b": [{"y": 2}]})
    (both,) = named(spans, "send")
    assert "messaging.destination.name" not in (both.attributes or {})
    assert (both.attributes or {})["messaging.batch.message_count"] == 2


def test_a_raising_handler_marks_its_span_and_attempts_count_up(
    client: Client, qname: str, spans: InMemorySpanExporter
) -> None:
    tracing.instrument(tracer_provider=_provider(spans))
    job_id = client.publish(qname, {"x": 1}, max_attempts=2, backoff_ms=0)

    def handler(ctx: JobCtx) -> None:
        raise ValueError("nope")

    with running(client, qname, handler) as run:
        wait_until(lambda: run.consumer.stats.failed == 2, "two failed attempts")
        run.stop()
    processes = named(spans, f"process {qname}")
    attempts = [(s.attributes or {})["messaging.omniq.attempt"] for s in processes]
    assert attempts == [1, 2]
    for span in processes:
        assert span.attributes["messaging.message.id"] == job_id  # type: ignore[index]
        assert span.status.status_code == StatusCode.ERROR
        assert [e.name for e in span.events] == ["exception"]
        assert span.events[0].attributes["exception.type"] == "ValueError"  # type: ignore[index]


def test_a_handler_publishing_makes_a_child_producer_span_and_grouped_jobs_say_so(
    client: Client, qname: str, spans: InMemorySpanExporter
) -> None:
    tracing.instrument(tracer_provider=_provider(spans), propagate=True)
    client.publish(qname, {"step": 1}, gid="g1")

    def handler(ctx: JobCtx) -> None:
        if ctx.payload["step"] == 1:
            ctx.exec.publish(queue=qname, payload={"step": 2})

    with running(client, qname, handler) as run:
        wait_until(lambda: run.consumer.stats.succeeded == 2, "both jobs acked")
        run.stop()
    first, second = named(spans, f"send {qname}")
    process_1, process_2 = named(spans, f"process {qname}")
    assert process_1.attributes["messaging.omniq.gid"] == "g1"  # type: ignore[index]
    assert "messaging.omniq.gid" not in (process_2.attributes or {})
    # publish -> process -> publish (from the handler) -> process: one trace, a chain.
    chain = [first, process_1, second, process_2]
    for parent, child in zip(chain, chain[1:]):
        assert child.parent is not None
        assert child.parent.span_id == parent.get_span_context().span_id  # type: ignore[union-attr]


def _patched() -> tuple[Any, ...]:
    return (
        Client.publish, Client.publish_json, Client.publish_many_queues, Consumer.__init__,
        AsyncClient.publish, AsyncClient.publish_json, AsyncClient.publish_many_queues,
        AsyncConsumer.__init__,
    )  # fmt: skip


def test_uninstrument_puts_the_methods_back(
    client: Client, qname: str, spans: InMemorySpanExporter
) -> None:
    originals = _patched()
    tracing.instrument(tracer_provider=_provider(spans), propagate=True)
    assert tracing.is_instrumented()
    assert all(now is not before for now, before in zip(_patched(), originals))
    tracing.instrument(tracer_provider=_provider(spans))  # again: settings only
    assert Client.publish.__wrapped__ is originals[0]  # type: ignore[attr-defined]
    assert AsyncClient.publish.__wrapped__ is originals[4]  # type: ignore[attr-defined]
    tracing.uninstrument()
    assert _patched() == originals
    client.publish(qname, {"x": 1})
    client.publish_many(qname, [{"x": 2}])
    assert spans.get_finished_spans() == ()


def test_a_consumer_run_inside_a_span_still_makes_root_spans(
    redis_url: str, core: ModuleType, qname: str, spans: InMemorySpanExporter
) -> None:
    provider = _provider(spans)
    tracing.instrument(tracer_provider=provider)
    with Client(redis_url, _core=core) as client:
        client.publish(qname, {"x": 1})
        with provider.get_tracer("test").start_as_current_span("ambient"):
            # Inline: the handler runs on this very thread, inside "ambient".
            Consumer(client, qname, lambda ctx: None, max_jobs=1, stop_on_ctrl_c=False,
                     **FAST).run()  # fmt: skip
    (process,) = named(spans, f"process {qname}")
    assert process.parent is None


def test_async_publishes_in_one_loop_turn_get_a_span_each_and_their_jobs_nest_under_them(
    redis_url: str, core: ModuleType, qname: str, spans: InMemorySpanExporter
) -> None:
    """The asyncio way: many tasks publish at once (one coalesced script call), each in
    its own ``send`` span, each job's carrier naming its own span; an ``async def``
    handler on the AsyncConsumer runs in a ``process`` span that is its child, inside an
    ambient span of the task that runs the consumer (which is not the parent)."""
    provider = _provider(spans)
    tracing.instrument(tracer_provider=provider, propagate=True)
    tracer = provider.get_tracer("test")
    seen: list[Any] = []

    async def handler(ctx: Any) -> None:
        await asyncio.sleep(0)
        with tracer.start_as_current_span("work"):
            seen.append(ctx.payload)

    async def main() -> list[str]:
        async with AsyncClient(redis_url, _core=core) as client:
            ids = await asyncio.gather(*(client.publish(qname, {"i": i}) for i in range(20)))
            with tracer.start_as_current_span("ambient"):
                await AsyncConsumer(client, qname, handler, max_jobs=20, concurrency=4,
                                    stop_on_ctrl_c=False, **FAST).run()  # fmt: skip
            return list(ids)

    ids = asyncio.run(main())
    assert sorted(p["i"] for p in seen) == list(range(20))  # the carrier was taken out
    sends = {s.attributes["messaging.message.id"]: s  # type: ignore[index]
             for s in named(spans, f"send {qname}")}  # fmt: skip
    assert set(sends) == set(ids)
    processes = named(spans, f"process {qname}")
    works = {w.parent.span_id: w for w in named(spans, "work")}  # type: ignore[union-attr]
    assert len(processes) == len(works) == 20
    for process in processes:
        send = sends[process.attributes["messaging.message.id"]]  # type: ignore[index]
        assert process.parent is not None
        assert process.parent.span_id == send.get_span_context().span_id  # type: ignore[union-attr]
        assert process.get_span_context().span_id in works  # type: ignore[union-attr]
