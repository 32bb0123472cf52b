"""The shipping guarantees, for each backend, against local servers speaking its wire protocol.

Loki, Datadog and Elasticsearch are replaced by ``exporter_fakes.FakeBackend``: a real HTTP
server on 127.0.0.1 that validates what it receives and injects faults (down, 429 with
Retry-After, 500, 400, slow answers). The invariant checked everywhere: every record
emitted is delivered or dropped-and-counted, with zero drops while the buffer had room.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY

from ofsre.instrumentation import semconv
from ofsre.instrumentation.context import use_interaction_id

from .exporter_fakes import Reply, dropped, sample, wait_until

KINDS = ["loki", "datadog", "elastic"]


def emit(logger: logging.Logger, count: int, prefix: str = "m") -> list[str]:
    messages = [f"{prefix}-{i}" for i in range(count)]
    for message in messages:
        logger.info(message)
    return messages


def shipped(registry, kind: str) -> float:
    return sample(registry, semconv.LOG_RECORDS_SHIPPED, backend=kind)


def assert_accounted(registry, kind: str, emitted: int) -> None:
    assert shipped(registry, kind) + dropped(registry, kind) == emitted


@pytest.mark.parametrize("kind", KINDS)
def test_records_arrive_batched_with_context_and_redaction(kind, servers, handlers, logger, registry):
    server = servers(kind, tenant="openfinance" if kind == "loki" else None)
    handler = handlers(kind, server)
    logger.addHandler(handler)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span, use_interaction_id("c9a3-interaction"):
        logger.info("payer cpf 123.456.789-09 paid", extra={"payment_id": "p-1"})
        trace_id = format(span.get_span_context().trace_id, "032x")
    messages = emit(logger, 99)

    assert handler.flush(10)
    assert server.errors == []
    assert server.messages() == set(messages) | {"payer cpf [CPF] paid"}
    assert len(server.arrivals) < 100  # batched, not one request per record
    first = next(r for r in server.records if r["message"] == "payer cpf [CPF] paid")
    if kind == "elastic":
        assert first["trace"]["id"] == trace_id and first["labels"]["interaction_id"] == "c9a3-interaction"
        assert first["payment_id"] == "p-1" and first["service"]["name"] == "payments"
    else:
        assert first["trace_id"] == trace_id and first["interaction_id"] == "c9a3-interaction"
        assert first["payment_id"] == "p-1"
    if kind == "loki":
        assert first["_labels"] == {"service": "payments", "env": "test", "level": "info"}
    assert shipped(registry, kind) == 100
    assert dropped(registry, kind) == 0
    assert sample(registry, semconv.LOG_BATCHES, backend=kind, outcome="ok") == len(server.arrivals)
    assert registry.get_sample_value(semconv.LOG_SEND_DURATION.name + "_count", {"backend": kind}) >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_backend_down_for_a_while_loses_nothing(kind, servers, handlers, logger, registry):
    server = servers(kind)
    server.stop()
    handler = handlers(kind, server)
    logger.addHandler(handler)
    messages = emit(logger, 30)
    assert wait_until(lambda: sample(registry, semconv.LOG_BATCHES, backend=kind,
                                     outcome="network_error") >= 2)
    server.start()

    assert handler.flush(10)
    assert server.messages() == set(messages)
    assert dropped(registry, kind) == 0
    assert sample(registry, semconv.LOG_RECORDS_RETRIED, backend=kind) >= 30
    assert_accounted(registry, kind, 30)


@pytest.mark.parametrize("kind", KINDS)
def test_429_retry_after_seconds_is_honoured(kind, servers, handlers, logger, registry):
    server = servers(kind)
    server.respond(Reply(429, {"Retry-After": "1"}))
    handler = handlers(kind, server)
    logger.addHandler(handler)
    messages = emit(logger, 10)

    assert handler.flush(10)
    first, second = server.arrivals[0], server.arrivals[1]
    assert first.status == 429
    assert second.monotonic - first.monotonic >= 1.0
    assert server.messages() == set(messages)
    assert sample(registry, semconv.LOG_BATCHES, backend=kind, outcome="throttled") == 1
    assert dropped(registry, kind) == 0


def test_429_retry_after_http_date_is_honoured(servers, handlers, logger, registry):
    server = servers("loki")
    not_before = int(time.time()) + 2   # an HTTP-date has whole seconds
    server.respond(Reply(429, {"Retry-After": email.utils.formatdate(not_before, usegmt=True)}))
    handler = handlers("loki", server)
    logger.addHandler(handler)
    emit(logger, 5)

    assert handler.flush(10)
    assert server.arrivals[0].status == 429
    assert server.arrivals[1].wall >= not_before
    assert shipped(registry, "loki") == 5


@pytest.mark.parametrize("kind", KINDS)
def test_server_errors_are_retried_with_backoff(kind, servers, handlers, logger, registry):
    server = servers(kind)
    server.respond(Reply(500), Reply(503))
    handler = handlers(kind, server)
    logger.addHandler(handler)
    messages = emit(logger, 20)

    assert handler.flush(10)
    assert [a.status for a in server.arrivals[:2]] == [500, 503]
    assert server.messages() == set(messages)
    assert sample(registry, semconv.LOG_BATCHES, backend=kind, outcome="server_error") == 2
    assert dropped(registry, kind) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_400_batch_is_dropped_and_counted_and_the_pipeline_moves_on(kind, servers, handlers, logger,
                                                                      registry):
    server = servers(kind)
    server.respond(Reply(400))
    handler = handlers(kind, server)
    logger.addHandler(handler)
    first = emit(logger, 10, "first")
    assert handler.flush(10) is True
    rejected = dropped(registry, kind, "rejected")
    assert rejected == len(server.arrivals[0].messages) > 0

    later = emit(logger, 10, "later")
    assert handler.flush(10)
    assert set(later) <= server.messages()
    assert len(server.messages() & set(first)) == 10 - rejected
    assert sample(registry, semconv.LOG_BATCHES, backend=kind, outcome="rejected") == 1
    assert_accounted(registry, kind, 20)


@pytest.mark.parametrize("kind", KINDS)
def test_slow_answers_beyond_the_timeout_are_retried(kind, servers, handlers, logger, registry):
    server = servers(kind)
    server.respond(Reply(delay=0.5))
    handler = handlers(kind, server, request_timeout=0.2)
    logger.addHandler(handler)
    messages = emit(logger, 10)

    assert handler.flush(10)
    assert set(messages) <= server.messages()   # the slow batch may have landed twice: at least once
    assert shipped(registry, kind) == 10
    assert sample(registry, semconv.LOG_BATCHES, backend=kind, outcome="network_error") >= 1
    assert dropped(registry, kind) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_hanging_backend_never_blocks_the_log_call(kind, servers, handlers, logger, registry):
    server = servers(kind)
    release = threading.Event()
    server.respond(Reply(hang=release))
    handler = handlers(kind, server)
    logger.addHandler(handler)
    emit(logger, 1, "first")
    assert wait_until(lambda: not server.script)  # the server holds the first request

    # The worker is stuck in a request; the application keeps logging and returns at once.
    messages = emit(logger, 200, "during")
    assert handler.stats()["queued"] == 200
    release.set()
    assert handler.flush(10)
    assert set(messages) | {"first-0"} == server.messages()
    assert dropped(registry, kind) == 0


def test_a_batch_failing_past_max_retry_time_is_dropped_and_counted(servers, handlers, logger, registry):
    server = servers("loki")
    server.default = Reply(500)   # never recovers
    handler = handlers("loki", server, max_retry_time=0.3)
    logger.addHandler(handler)
    emit(logger, 10)
    assert handler.flush(10)      # settled: every record is accounted for
    assert dropped(registry, "loki", "retries_exhausted") == 10
    assert len(server.arrivals) >= 2
    assert_accounted(registry, "loki", 10)


def test_an_unformattable_record_is_dropped_and_counted(servers, handlers, logger, registry):
    server = servers("loki")
    handler = handlers("loki", server)
    errors_before = sample(REGISTRY, semconv.TELEMETRY_ERRORS, component="exporters")
    bad = logging.LogRecord(logger.name, logging.INFO, __file__, 1, "%d apples", ("three",), None)
    handler.handle(bad)   # bad %-arguments: the caller must not see an exception
    logger.addHandler(handler)
    logger.info("fine")
    assert handler.flush(10)
    assert server.messages() == {"fine"}
    assert dropped(registry, "loki", "unformattable") == 1
    # The swallowed error is counted in the shipper's own registry, not the global one.
    assert sample(registry, semconv.TELEMETRY_ERRORS, component="exporters") == 1
    assert sample(REGISTRY, semconv.TELEMETRY_ERRORS, component="exporters") == errors_before


def test_queue_depth_gauge_follows_the_buffer(servers, handlers, logger, registry):
    server = servers("loki")
    release = threading.Event()
    server.respond(Reply(hang=release))
    handler = handlers("loki", server)
    logger.addHandler(handler)
    emit(logger, 1, "first")
    assert wait_until(lambda: not server.script)
    emit(logger, 5)
    release.set()
    assert handler.flush(10)
    assert sample(registry, semconv.LOG_QUEUE_DEPTH, backend="loki") == 0
    assert handler.stats()["queued"] == 0
