"""Trace context and interaction id through a queue's headers; queue metrics."""

import time

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from ofsre.instrumentation.context import current_log_context, interaction_id, use_interaction_id
from ofsre.instrumentation.messaging import (
    PUBLISHED_AT_HEADER,
    QueueTelemetry,
    extract_context,
    inject_headers,
)

LABELS = {"service": "payments", "queue": "pix", "backend": "memory"}


def _sample(registry, name, **extra):
    return registry.get_sample_value(name, {**LABELS, **extra}) or 0.0


def _telemetry(registry, provider):
    return QueueTelemetry("payments", "pix", "memory", registry=registry, tracer_provider=provider)


def test_consumer_span_continues_the_producer_trace(spans, registry):
    provider, exporter = spans
    telemetry = _telemetry(registry, provider)
    with use_interaction_id("0f8fad5b-d9cb-469f-a165-70867728950e"), telemetry.publish_span():
        headers = inject_headers({"content-type": "application/json"})
    telemetry.published()

    # the message travels as a plain dict; the consumer runs in another (here: empty) context
    assert interaction_id() is None
    seen = {}
    with telemetry.consume(dict(headers)) as span:
        seen.update(current_log_context())
        assert span.is_recording()

    producer, consumer = exporter.get_finished_spans()
    assert producer.kind == SpanKind.PRODUCER and consumer.kind == SpanKind.CONSUMER
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.attributes["messaging.system"] == "memory"
    assert consumer.attributes["messaging.destination.name"] == "pix"
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert producer.attributes["messaging.operation.type"] == "send"
    # logs inside the consumer carry the producer's interaction id and the consumer span
    assert seen["interaction_id"] == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert seen["trace_id"] == format(producer.context.trace_id, "032x")
    assert headers["content-type"] == "application/json"

    assert _sample(registry, "ofsre_queue_messages_published_total") == 1
    assert _sample(registry, "ofsre_queue_messages_consumed_total") == 1
    assert _sample(registry, "ofsre_queue_publish_to_consume_seconds_count") == 1
    assert _sample(registry, "ofsre_queue_processing_duration_seconds_count") == 1


def test_inject_headers_content(spans):
    provider, _ = spans
    with provider.get_tracer("t").start_as_current_span("send") as span, use_interaction_id("iid"):
        headers = inject_headers()
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert headers["traceparent"].split("-")[1] == trace_id
    assert headers["x-fapi-interaction-id"] == "iid"
    assert abs(float(headers[PUBLISHED_AT_HEADER]) - time.time()) < 3600
    # an interaction id set by the caller is kept
    with use_interaction_id("current"):
        assert inject_headers({"x-fapi-interaction-id": "mine"})["x-fapi-interaction-id"] == "mine"
    # outside any span or request: only the publish time
    assert set(inject_headers()) == {PUBLISHED_AT_HEADER}


def test_extract_context_accepts_kafka_style_byte_headers(spans):
    provider, _ = spans
    with provider.get_tracer("t").start_as_current_span("send") as span:
        headers = inject_headers()
    kafka_headers = [(key, value.encode()) for key, value in headers.items()]
    ctx = trace.get_current_span(extract_context(kafka_headers)).get_span_context()
    assert ctx.trace_id == span.get_span_context().trace_id
    assert not trace.get_current_span(extract_context(None)).get_span_context().is_valid


def test_exception_in_consume_is_reraised_and_counted_failed(spans, registry):
    provider, exporter = spans
    telemetry = _telemetry(registry, provider)
    with pytest.raises(RuntimeError, match="settlement down"):
        with telemetry.consume(inject_headers()):
            raise RuntimeError("settlement down")
    assert _sample(registry, "ofsre_queue_messages_failed_total", outcome="error") == 1
    assert _sample(registry, "ofsre_queue_messages_consumed_total") == 0
    assert _sample(registry, "ofsre_queue_processing_duration_seconds_count") == 1
    [consumer] = exporter.get_finished_spans()
    assert consumer.status.status_code == StatusCode.ERROR
    assert consumer.events[0].name == "exception"


def test_failed_inside_consume_is_not_also_consumed(spans, registry):
    provider, exporter = spans
    telemetry = _telemetry(registry, provider)
    with telemetry.consume({}):
        telemetry.failed("dead_letter")
    with telemetry.consume({}):
        telemetry.failed("nack")
    # failed() and then an exception: still one failure for this message
    with pytest.raises(ValueError), telemetry.consume({}):
        telemetry.failed("retry")
        raise ValueError
    telemetry.failed("something-unbounded-1234")  # outside consume: just counted, bounded label
    assert _sample(registry, "ofsre_queue_messages_failed_total", outcome="dead_letter") == 1
    assert _sample(registry, "ofsre_queue_messages_failed_total", outcome="nack") == 1
    assert _sample(registry, "ofsre_queue_messages_failed_total", outcome="retry") == 1
    assert _sample(registry, "ofsre_queue_messages_failed_total", outcome="error") == 0
    assert _sample(registry, "ofsre_queue_messages_failed_total", outcome="other") == 1
    assert _sample(registry, "ofsre_queue_messages_consumed_total") == 0
    assert all(s.status.status_code == StatusCode.ERROR for s in exporter.get_finished_spans())
    # headers without trace context: the consumer span is a new root
    assert all(s.parent is None for s in exporter.get_finished_spans())


def test_bad_headers_are_telemetry_errors_not_consumer_errors(spans, registry):
    provider, _ = spans
    telemetry = _telemetry(registry, provider)
    with telemetry.consume({PUBLISHED_AT_HEADER: "yesterday", "traceparent": "garbage", 7: "x"}):
        pass
    assert _sample(registry, "ofsre_queue_messages_consumed_total") == 1
    assert registry.get_sample_value("ofsre_telemetry_errors_total", {"component": "messaging"}) == 1


def test_publish_time_in_the_future_counts_as_zero_wait(spans, registry):
    provider, _ = spans
    telemetry = _telemetry(registry, provider)
    with telemetry.consume({PUBLISHED_AT_HEADER: str(time.time() + 600)}):
        pass
    assert _sample(registry, "ofsre_queue_publish_to_consume_seconds_sum") == 0
    assert _sample(registry, "ofsre_queue_publish_to_consume_seconds_count") == 1


async def test_consume_in_async_code_scopes_the_interaction_id(spans, registry):
    provider, _ = spans
    telemetry = _telemetry(registry, provider)
    with use_interaction_id("iid-async"):
        headers = inject_headers()
    with telemetry.consume(headers):
        assert interaction_id() == "iid-async"
    assert interaction_id() is None
    assert _sample(registry, "ofsre_queue_messages_consumed_total") == 1


class _BrokenTracerProvider:
    """A tracer provider whose tracers fail: telemetry must not take the consumer down."""

    def get_tracer(self, *args, **kwargs):
        return self

    def start_span(self, *args, **kwargs):
        raise RuntimeError("tracer down")


def test_a_failing_tracer_does_not_reach_producer_or_consumer(registry):
    telemetry = QueueTelemetry("payments", "pix", "memory", registry=registry,
                               tracer_provider=_BrokenTracerProvider())
    with telemetry.publish_span():
        headers = inject_headers()
    with telemetry.consume(headers) as span:
        assert not span.is_recording()
    assert _sample(registry, "ofsre_queue_messages_consumed_total") == 1
    assert registry.get_sample_value("ofsre_telemetry_errors_total", {"component": "messaging"}) == 2


def test_inject_and_extract_count_their_errors_in_the_callers_registry(registry, monkeypatch):
    from opentelemetry import propagate
    from prometheus_client import REGISTRY

    def broken(*args, **kwargs):
        raise RuntimeError("propagator down")

    monkeypatch.setattr(propagate, "inject", broken)
    monkeypatch.setattr(propagate, "extract", broken)
    global_before = REGISTRY.get_sample_value("ofsre_telemetry_errors_total", {"component": "messaging"}) or 0
    assert inject_headers(registry=registry) == {}  # publishing goes on, without the headers
    context = extract_context({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}, registry=registry)
    assert not trace.get_current_span(context).get_span_context().is_valid
    assert registry.get_sample_value("ofsre_telemetry_errors_total", {"component": "messaging"}) == 2
    assert (REGISTRY.get_sample_value("ofsre_telemetry_errors_total", {"component": "messaging"}) or 0
            ) == global_before
