"""The sampling shortcut (``tracing.Presampler``) takes the SDK's own decision, only earlier.

A dropped server span is the SDK's ``NonRecordingSpan`` (ids in logs and in outgoing
``traceparent``, flags unsampled); a sampled one is a ``LazySpan`` on the trace id the decision
was taken on (test_lazy_span.py), or the SDK's span made by the tracer on that trace id when a
processor needs it; a sampled remote parent still wins; user samplers get no shortcut (they
may read attributes) and keep seeing every span.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from prometheus_client import CollectorRegistry

from ofsre.instrumentation import instrument_app
from ofsre.instrumentation.context import current_log_context
from ofsre.instrumentation.tracing import Presampler

REMOTE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED_PARENT = f"00-{REMOTE_TRACE}-00f067aa0ba902b7-01"
UNSAMPLED_PARENT = f"00-{REMOTE_TRACE}-00f067aa0ba902b7-00"


def _app(sampler):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI()
    seen = []

    @app.get("/work")
    async def work():
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        with trace.get_tracer("app", tracer_provider=provider).start_as_current_span("child"):
            seen.append((current_log_context(), carrier, trace.get_current_span().get_span_context()))
        return {}

    instrument_app(app, "svc", registry=CollectorRegistry(), tracer_provider=provider, logs=False)
    return app, exporter, seen


def _middleware(app):
    return app.build_middleware_stack.ofsre_middleware


async def test_at_zero_percent_nothing_is_exported_but_ids_and_propagation_remain(call_asgi):
    app, exporter, seen = _app(ParentBased(TraceIdRatioBased(0.0)))
    assert (await call_asgi(app, "GET", "/work"))[0] == 200
    assert _middleware(app)._presampler is not None
    assert exporter.get_finished_spans() == ()
    [(ids, carrier, child)] = seen
    assert ids["trace_id"] and len(ids["trace_id"]) == 32 and ids["interaction_id"]
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    # The flags the SDK itself gives a dropped root span (unsampled; W3C level 2 random-trace-id bit).
    sdk_flags = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0))).get_tracer("sdk").start_span(
        "x").get_span_context().trace_flags
    assert trace_id == ids["trace_id"] and int(flags, 16) == sdk_flags and not sdk_flags.sampled
    assert not child.trace_flags.sampled and format(child.trace_id, "032x") == trace_id   # same trace


async def test_a_sampled_remote_parent_is_followed_even_at_zero_percent(call_asgi):
    app, exporter, _ = _app(ParentBased(TraceIdRatioBased(0.0)))
    await call_asgi(app, "GET", "/work", headers=[("traceparent", SAMPLED_PARENT)])
    server = next(s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER)
    child = next(s for s in exporter.get_finished_spans() if s.name == "child")
    assert format(server.context.trace_id, "032x") == REMOTE_TRACE
    assert server.parent.span_id == 0x00f067aa0ba902b7 and child.parent.span_id == server.context.span_id


async def test_an_unsampled_remote_parent_is_followed_at_a_hundred_percent(call_asgi):
    app, exporter, seen = _app(ParentBased(TraceIdRatioBased(1.0)))
    await call_asgi(app, "GET", "/work", headers=[("traceparent", UNSAMPLED_PARENT)])
    assert exporter.get_finished_spans() == ()
    [(ids, carrier, _)] = seen
    assert ids["trace_id"] == REMOTE_TRACE and not int(carrier["traceparent"][-2:], 16) & 1


async def test_at_a_ratio_the_decision_is_the_sdks_on_the_same_trace_id(call_asgi):
    sampler = ParentBased(TraceIdRatioBased(0.5))
    app, exporter, seen = _app(sampler)
    for _ in range(200):
        await call_asgi(app, "GET", "/work")
    servers = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    bound = TraceIdRatioBased(0.5).bound
    assert 65 < len(servers) < 135   # ~100: one decision per request (two would keep ~50)
    # Every exported server span is one the ratio keeps, and every dropped request's trace id is one it drops.
    assert all(s.context.trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < bound for s in servers)
    exported = {format(s.context.trace_id, "032x") for s in servers}
    for ids, carrier, _ in seen:
        kept = int(ids["trace_id"], 16) & TraceIdRatioBased.TRACE_ID_LIMIT < bound
        assert kept == (ids["trace_id"] in exported) == bool(int(carrier["traceparent"][-2:], 16) & 1)


class ByAttribute(Sampler):
    """A user sampler that reads the attributes: it must see them, so no shortcut."""

    def __init__(self):
        self.seen = []

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None):
        self.seen.append(dict(attributes or {}))
        keep = (attributes or {}).get("http.route") == "/work"
        return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP)

    def get_description(self):
        return "ByAttribute"


async def test_a_user_sampler_gets_no_shortcut_and_sees_the_attributes(call_asgi):
    sampler = ByAttribute()
    app, exporter, _ = _app(sampler)
    await call_asgi(app, "GET", "/work")
    assert _middleware(app)._presampler is None
    assert sampler.seen[0]["http.route"] == "/work" and sampler.seen[0]["fapi.interaction_id"]
    assert any(s.kind == trace.SpanKind.SERVER for s in exporter.get_finished_spans())


@pytest.mark.parametrize("sampler",
                         [ALWAYS_OFF, ParentBased(TraceIdRatioBased(0.0)), TraceIdRatioBased(0.25)])
def test_the_shortcut_applies_to_the_sdks_own_samplers(sampler):
    tracer = TracerProvider(sampler=sampler).get_tracer("t")
    assert Presampler.of(tracer) is not None


def test_no_shortcut_with_sdk_internal_metrics(monkeypatch):
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    assert Presampler.of(TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")) is None


SAMPLERS = [ParentBased(TraceIdRatioBased(0.3)), TraceIdRatioBased(0.3), ParentBased(ALWAYS_OFF),
            ParentBased(TraceIdRatioBased(0.3), remote_parent_sampled=ALWAYS_OFF)]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=["parent-ratio", "ratio", "parent-off", "custom-delegates"])
@pytest.mark.parametrize("parent", [None, SAMPLED_PARENT, UNSAMPLED_PARENT])
def test_the_inline_decision_is_the_samplers_own(sampler, parent):
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    tracer = TracerProvider(sampler=sampler).get_tracer("t")
    presampler = Presampler.of(tracer)
    context = TraceContextTextMapPropagator().extract({"traceparent": parent}) if parent else None
    parent_span = trace.get_current_span(context).get_span_context() if parent else None
    for trace_id in range(1, 2 ** 64, 2 ** 64 // 97):
        expected = sampler.should_sample(context, trace_id, "GET /x").decision.is_sampled()
        decide = presampler.decide or (lambda p,
                                       t: sampler.should_sample(context, t, "x").decision.is_sampled())
        assert decide(parent_span if parent_span and parent_span.is_valid else None, trace_id) == expected


@pytest.mark.parametrize("current", [None, trace.INVALID_SPAN],
                         ids=["no-current-span", "invalid-current-span"])
def test_a_new_traces_span_is_the_one_the_sdk_makes(current):
    """Both ways to a new trace (the shortcut with no current span, the general path past an invalid
    one): the SDK's decision on the span's own trace id, its flags, a valid context built as its
    constructor builds it; a dropped span is a plain NonRecordingSpan, a kept one a LazySpan."""
    from opentelemetry import context as otel_context

    from ofsre.instrumentation.tracing import LazySpan

    sampler = ParentBased(TraceIdRatioBased(0.5))
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    tracer = provider.get_tracer("t")
    presampler = Presampler.of(tracer)
    sdk_flags = int(TracerProvider(sampler=ALWAYS_OFF).get_tracer("sdk").start_span("x").get_span_context()
                    .trace_flags)   # a new trace's flags, unsampled (the W3C random bit where the API has it)
    token = otel_context.attach(trace.set_span_in_context(current)) if current is not None else None
    kept = 0
    try:
        for _ in range(200):
            span = presampler.start(None, trace.SpanKind.SERVER, lambda: ("GET /x", {"k": "v"}))
            context = span.get_span_context()
            sampled = sampler.should_sample(None, context.trace_id, "GET /x").decision.is_sampled()
            assert context.trace_flags.sampled == sampled and int(context.trace_flags) & ~1 == sdk_flags
            assert context == trace.SpanContext(context.trace_id, context.span_id, False, context.trace_flags,
                                                context.trace_state) and context.is_valid
            if sampled:
                kept += 1
                assert type(span) is LazySpan and span.parent is None
                assert (span.name, dict(span.attributes)) == ("GET /x", {"k": "v"})
            else:
                assert type(span) is trace.NonRecordingSpan
                assert vars(span) == vars(trace.NonRecordingSpan(context))
    finally:
        if token is not None:
            otel_context.detach(token)
    assert 60 < kept < 140
