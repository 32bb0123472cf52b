"""A sampled server span is a ``tracing.LazySpan`` when the tracer's processors allow it, and
nobody can tell it from the SDK's own span: the same exported fields, child spans nested under
it, the app's own calls on the current span kept, exceptions recorded; any processor that
acts when a span starts, or an attribute length limit, gets the SDK's span instead.
"""

from __future__ import annotations

import contextlib

import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from ofsre.instrumentation import instrument_app
from ofsre.instrumentation.tracing import LazySpan

IID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


class Starts(SpanProcessor):
    """A processor that acts when a span starts (as baggage or sampling-debug processors do)."""

    def __init__(self):
        self.started = []

    def on_start(self, span, parent_context=None):
        self.started.append(span.name)
        span.set_attribute("started.by", "processor")


def _app(provider):
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str):
        return {"id": item_id}

    @app.get("/child")
    async def child():
        with trace.get_tracer("app", tracer_provider=provider).start_as_current_span("db query"):
            pass
        return {}

    @app.get("/annotated")
    async def annotated():
        span = trace.get_current_span()
        span.set_attribute("app.customer_segment", "retail")
        span.add_event("cache miss", {"key": "k1"})
        return {}

    @app.get("/boom")
    async def boom():
        raise ValueError("no such account")

    @app.get("/five-hundred")
    async def five_hundred():
        from fastapi.responses import JSONResponse

        return JSONResponse({}, status_code=503)

    instrument_app(app, "svc", registry=CollectorRegistry(), tracer_provider=provider, logs=False)
    return app


def _provider(*processors, **kwargs):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider, exporter


def _server(exporter):
    [span] = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    return span


def _fields(span):
    """What an exporter sees of a span, minus what differs between two requests (ids, times)."""
    return {"name": span.name, "kind": span.kind, "attributes": dict(span.attributes),
            "status": (span.status.status_code, span.status.description), "events": [
                (e.name, {k: v for k, v in e.attributes.items() if k != "exception.stacktrace"})
                for e in span.events], "links": list(span.links), "resource": span.resource.attributes,
            "scope": span.instrumentation_scope, "parent": span.parent, "dropped": span.dropped_attributes,
            "flags": span.context.trace_flags, "remote": span.context.is_remote,
            "sampled": span.context.trace_flags.sampled}


@pytest.mark.parametrize("path", ["/items/7", "/annotated", "/boom", "/five-hundred"])
async def test_the_lazy_span_exports_what_the_sdks_span_exports(call_asgi, path):
    lazy_provider, lazy = _provider()
    sdk_provider, sdk = _provider(SpanProcessor())   # a base processor: still lazy
    forced_provider, forced = _provider(Starts())     # a processor acting at start: the SDK's span
    for provider in (lazy_provider, sdk_provider, forced_provider):
        with contextlib.suppress(ValueError):   # /boom: the app's exception goes on, unchanged
            await call_asgi(_app(provider), "GET", path, headers=[("x-fapi-interaction-id", IID)])
    lazy_span, forced_span = _server(lazy), _server(forced)
    assert (type(lazy_span) is LazySpan) == (path == "/items/7")   # the app touched it: the SDK's span
    assert type(_server(sdk)) is type(lazy_span)
    assert type(forced_span) is not LazySpan
    expected = _fields(forced_span)
    del expected["attributes"]["started.by"]
    assert _fields(lazy_span) == expected
    assert lazy_span.start_time <= lazy_span.end_time
    assert lazy_span.attributes["fapi.interaction_id"] == IID
    if path == "/annotated":
        assert lazy_span.attributes["app.customer_segment"] == "retail"
        assert [e.name for e in lazy_span.events] == ["cache miss"]
    if path == "/boom":
        assert lazy_span.status.status_code == trace.StatusCode.ERROR
        assert lazy_span.attributes["error.type"] == "ValueError"
        assert [e.name for e in lazy_span.events] == ["exception"]


async def test_child_spans_nest_under_it_and_it_is_current_while_the_app_runs(call_asgi):
    provider, exporter = _provider()
    await call_asgi(_app(provider), "GET", "/child")
    server = _server(exporter)
    [child] = [s for s in exporter.get_finished_spans() if s.name == "db query"]
    assert type(server) is LazySpan
    assert child.parent.span_id == server.context.span_id
    assert child.context.trace_id == server.context.trace_id
    assert server.start_time <= child.start_time <= child.end_time <= server.end_time


async def test_a_processor_added_later_is_honoured_from_the_next_request(call_asgi):
    provider, exporter = _provider()
    app = _app(provider)
    await call_asgi(app, "GET", "/items/1")
    assert type(_server(exporter)) is LazySpan
    starts = Starts()
    provider.add_span_processor(starts)
    exporter.clear()
    await call_asgi(app, "GET", "/items/2")
    assert starts.started == ["GET /items/{item_id}"]
    assert _server(exporter).attributes["started.by"] == "processor"


async def test_an_attribute_length_limit_gets_the_sdks_span_and_its_truncation(call_asgi):
    provider, exporter = _provider(span_limits=SpanLimits(max_span_attribute_length=8))
    await call_asgi(_app(provider), "GET", "/items/a-very-long-item-id")
    server = _server(exporter)
    assert type(server) is not LazySpan and server.attributes["url.path"] == "/items/a"


async def test_a_batch_processor_exports_lazy_spans_over_otlp_like_the_sdks(call_asgi):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    batch = BatchSpanProcessor(exporter)
    provider.add_span_processor(batch)
    forced_provider, forced = _provider(Starts())
    await call_asgi(_app(provider), "GET", "/items/3")
    await call_asgi(_app(forced_provider), "GET", "/items/3")
    assert batch.force_flush()
    [lazy] = exporter.get_finished_spans()
    assert type(lazy) is LazySpan
    encoded, reference = encode_spans([lazy]), encode_spans([_server(forced)])
    span, expected = (e.resource_spans[0].scope_spans[0].spans[0] for e in (encoded, reference))
    assert span.trace_id == lazy.context.trace_id.to_bytes(16, "big") and span.name == expected.name
    assert {a.key for a in span.attributes} == {a.key for a in expected.attributes} - {"started.by"}
    assert span.kind == expected.kind and span.flags == expected.flags


async def test_a_lazy_span_ends_in_every_processor_once_and_not_after_shutdown(call_asgi):
    # A lazy span hands itself to a BatchSpanProcessor's queue directly (tracing._span_enders) and to
    # any other processor's on_end; a shut-down batch processor still refuses it, as its on_end would.
    from opentelemetry.sdk.trace import SpanProcessor

    class Ends(SpanProcessor):
        names: list[str] = []

        def on_end(self, span):
            self.names.append(span.name)

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    batch = BatchSpanProcessor(exporter)
    provider.add_span_processor(batch)
    provider.add_span_processor(Ends())
    app = _app(provider)
    await call_asgi(app, "GET", "/items/3")
    assert batch.force_flush()
    [span] = exporter.get_finished_spans()
    assert type(span) is LazySpan and Ends.names == [span.name]
    batch.shutdown()
    await call_asgi(app, "GET", "/items/4")
    assert len(exporter.get_finished_spans()) == 1 and len(Ends.names) == 2


async def test_after_it_ended_nothing_changes_it(call_asgi):
    provider, exporter = _provider()
    await call_asgi(_app(provider), "GET", "/items/4")
    span = _server(exporter)
    before = _fields(span)
    span.set_attribute("late", 1)
    span.add_event("late")
    span.end()
    assert not span.is_recording() and _fields(span) == before
    assert len(exporter.get_finished_spans()) == 1


def test_the_span_attacher_does_what_the_public_context_calls_do():
    from opentelemetry import baggage, context

    from ofsre.instrumentation.tracing import span_attacher

    attach, detach = span_attacher()
    span = trace.NonRecordingSpan(trace.SpanContext(1, 2, False))
    outer = context.attach(baggage.set_baggage("outer", "1"))
    try:
        for parent in (baggage.set_baggage("remote", "2", context.Context()), None):
            token = attach(span, parent)
            assert trace.get_current_span() is span
            assert dict(context.get_current()) == dict(trace.set_span_in_context(span, parent))
            assert baggage.get_baggage("remote") == ("2" if parent is not None else None)
            detach(token)
            assert baggage.get_baggage("outer") == "1" and trace.get_current_span() is trace.INVALID_SPAN
    finally:
        context.detach(outer)


async def test_each_host_gets_its_own_server_attributes_and_their_cache_stays_bounded(call_asgi):
    from ofsre.instrumentation import _asgi

    provider, exporter = _provider()
    app = _app(provider)
    for n in range(_asgi._SERVER_KEYS + 50):   # a client choosing a new Host header every time
        await call_asgi(app, "GET", f"/items/{n}", headers=[("host", f"h{n}.example:{1000 + n}")])
    spans = sorted((s for s in exporter.get_finished_spans()), key=lambda s: s.start_time)
    assert [(s.attributes["server.address"], s.attributes["server.port"], s.attributes["url.path"])
            for s in spans] == [(f"h{n}.example", 1000 + n, f"/items/{n}") for n in range(len(spans))]
    assert len(app.build_middleware_stack.ofsre_middleware._server_keys) == _asgi._SERVER_KEYS
