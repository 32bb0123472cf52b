"""``shipper_process=True``: the same shipping guarantees with the encoding in a child process.

The app keeps only the capture (``_process.capture_frame``); a child Python process runs the
ordinary shipper. Checked here against the fake backends of ``exporter_fakes``: what arrives is
what the thread shipper sends (same fields, redacted), a killed child loses nothing, flush/close,
fork, bounds, and the shipper's own threads never ship their logs. Several tests are the thread
shipper's own (``test_shipping``, ``test_capture``), run through handlers in this mode.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from enum import IntEnum

import pytest

from ofsre.exporters import install_from_env
from ofsre.exporters._capture import capture
from ofsre.exporters._core import Shipper
from ofsre.exporters._process import ProcessShipper, capture_frame, record_of_frame
from ofsre.exporters.loki import LokiHandler
from ofsre.instrumentation import semconv
from ofsre.instrumentation.logs import ContextFilter, record_fields

from . import test_capture, test_lifecycle, test_shipping
from .exporter_fakes import Reply, dropped, sample, wait_until

KINDS = ["loki", "datadog", "elastic"]


@pytest.fixture
def process_handlers(handlers):
    """Like ``handlers``, with the shipper process on."""
    return lambda kind, server, **options: handlers(kind, server, shipper_process=True, **options)


def _child(handler) -> int:
    assert wait_until(lambda: handler._shipper._child is not None)
    return handler._shipper._child.pid


# --- the thread shipper's own tests, in this mode ------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_records_arrive_with_context_and_redaction(kind, servers, process_handlers, logger, registry):
    server = servers(kind)
    handler = process_handlers(kind, server)
    logger.addHandler(handler)
    from opentelemetry.sdk.trace import TracerProvider

    from ofsre.instrumentation.context import use_interaction_id
    with TracerProvider().get_tracer("t").start_as_current_span("r") as span, use_interaction_id("iid-1"):
        logger.info("payer cpf 123.456.789-09 paid", extra={"payment_id": "p-1", "cpf": "123.456.789-09"})
        trace_id = format(span.get_span_context().trace_id, "032x")
    messages = test_shipping.emit(logger, 99)
    assert handler.flush(10)
    assert server.errors == []
    assert server.messages() == set(messages) | {"payer cpf [CPF] paid"}
    first = next(r for r in server.records if r["message"] == "payer cpf [CPF] paid")
    if kind == "elastic":
        assert first["trace"]["id"] == trace_id and first["labels"]["interaction_id"] == "iid-1"
    else:
        assert first["trace_id"] == trace_id and first["interaction_id"] == "iid-1"
    assert first["payment_id"] == "p-1" and "123.456.789-09" not in str(first)
    assert test_shipping.shipped(registry, kind) == 100 and dropped(registry, kind) == 0
    assert sample(registry, semconv.LOG_BATCHES, backend=kind, outcome="ok") == len(server.arrivals)


@pytest.mark.parametrize("kind", KINDS)
def test_backend_down_for_a_while_loses_nothing(kind, servers, process_handlers, logger, registry):
    test_shipping.test_backend_down_for_a_while_loses_nothing(kind, servers, process_handlers, logger,
                                                              registry)


@pytest.mark.parametrize("kind", KINDS)
def test_what_is_mutated_after_the_call_ships_as_it_was(kind, servers, process_handlers, logger):
    test_capture.test_what_is_mutated_after_the_call_ships_as_it_was(kind, servers, process_handlers, logger)


@pytest.mark.parametrize("kind", KINDS)
def test_context_ids_are_those_of_the_logging_thread(kind, servers, process_handlers, logger):
    test_capture.test_context_ids_are_those_of_the_logging_thread(kind, servers, process_handlers, logger)


@pytest.mark.parametrize("kind", KINDS)
def test_an_exception_is_formatted_at_the_call_and_redacted_later(kind, servers, process_handlers, logger):
    test_capture.test_an_exception_is_formatted_at_the_call_and_redacted_on_the_worker(
        kind, servers, process_handlers, logger)


def test_the_spool_holds_only_redacted_records(servers, process_handlers, logger, tmp_path):
    test_capture.test_the_spool_holds_only_redacted_records(servers, process_handlers, logger, tmp_path)


def test_an_unformattable_record_is_dropped_and_counted(servers, process_handlers, logger, registry):
    test_shipping.test_an_unformattable_record_is_dropped_and_counted(servers, process_handlers, logger,
                                                                      registry)


# --- the frame ---------------------------------------------------------------------------------

class Level(IntEnum):
    HIGH = 25


class Opaque:
    def __str__(self) -> str:
        return "opaque token=abc123"


def _records() -> list[logging.LogRecord]:
    log = logging.getLogger("test.frames")
    try:
        raise ValueError("cpf 123.456.789-09")
    except ValueError:
        exc_info = sys.exc_info()
    made = [
        log.makeRecord(log.name, logging.INFO, "f.py", 1, "plain", (), None),
        log.makeRecord(log.name, logging.WARNING, "f.py", 2, "pay %s of %d", ("p-1", 10), None,
                       extra={"payment_id": "p-1", "amount": 10.5, "ok": True, "none": None,
                              "nested": {"client_secret": "s", "items": [1, {"cpf": "123.456.789-09"}]},
                              "level_enum": Level.HIGH, "obj": Opaque(), "tags": ("a", "b"), "_private": 1}),
        log.makeRecord(log.name, logging.ERROR, "f.py", 3, "failed", (), exc_info, sinfo="Stack (most)"),
        log.makeRecord(log.name, logging.INFO, "f.py", 4, "message", (), None, extra={"extra_message": "x"}),
    ]
    with_ids = log.makeRecord(log.name, logging.INFO, "f.py", 5, "filtered", (), None)
    ContextFilter().filter(with_ids)
    with_ids.trace_id = "a" * 32
    return [*made, with_ids]


@pytest.mark.parametrize("index", range(5))
def test_a_frame_gives_the_fields_the_thread_shipper_gives(index):
    record = _records()[index]
    identity = {"service": "s", "env": "e", "version": "v"}
    expected = record_fields(capture(record), **identity)
    rebuilt = record_of_frame(capture_frame(record))
    assert record_fields(rebuilt, **identity) == expected
    assert rebuilt.getMessage() == record.getMessage()
    assert (rebuilt.exc_info is None) == (record.exc_info is None)
    if record.exc_info:
        assert rebuilt.exc_info[0].__name__ == "ValueError"


# --- what only this mode has -------------------------------------------------------------------

def test_the_variable_turns_it_on_for_install_from_env_and_an_argument_wins(monkeypatch, servers, registry,
                                                                             caplog):
    server = servers("loki")
    monkeypatch.setenv("OFSRE_LOG_SHIPPER", "loki")
    monkeypatch.setenv("OFSRE_LOKI_URL", server.url)
    monkeypatch.setenv("OFSRE_LOG_BATCH_WAIT", "0.05")
    monkeypatch.setenv("OFSRE_LOG_SHIPPER_PROCESS", "on")
    root = logging.getLogger()
    handler = install_from_env("payments", registry=registry)
    try:
        assert isinstance(handler._shipper, ProcessShipper)
        logging.getLogger("svc").warning("via the shipper process")
        assert handler.flush(10)
        assert handler._shipper._child is not None and handler._shipper._child.pid != os.getpid()
    finally:
        root.removeHandler(handler)
        handler.close(timeout=1)
    assert server.messages() == {"via the shipper process"}
    for value, given, expected in (("on", False, Shipper), ("on", "false", Shipper), ("off", None, Shipper),
                                   ("off", True, ProcessShipper), ("maybe", None, Shipper)):
        monkeypatch.setenv("OFSRE_LOG_SHIPPER_PROCESS", value)
        handler = LokiHandler(server.url, service="payments", registry=registry, shipper_process=given)
        try:
            assert type(handler._shipper) is expected, (value, given)
        finally:
            handler.close(timeout=1)
    assert "OFSRE_LOG_SHIPPER_PROCESS='maybe' is not valid" in caplog.text   # logged, the default used
    with pytest.raises(ValueError, match="shipper_process"):
        LokiHandler(server.url, service="payments", registry=registry, shipper_process="maybe")


def _moved(registry) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """The shipper's series that moved from zero (a histogram by its count and sum, not its buckets)."""
    return {(s.name, tuple(sorted(s.labels.items())))
            for metric in registry.collect()
            if metric.name.startswith("ofsre_log_") or metric.name == semconv.TELEMETRY_ERRORS.name
            for s in metric.samples
            if s.value > 0 and not s.name.endswith(("_created", "_bucket"))}


@pytest.mark.parametrize("mode", [{}, {"shipper_process": True}], ids=["thread", "process"])
def test_both_modes_move_the_same_self_metrics(mode, servers, handlers, logger, registry):
    server = servers("loki")
    server.respond(Reply(500))   # one failed request, then the default success
    handler = handlers("loki", server, **mode)
    logger.addHandler(handler)
    test_shipping.emit(logger, 20)
    assert handler.flush(10)
    requests = len(server.arrivals)
    assert requests >= 2
    duration = semconv.LOG_SEND_DURATION.name
    loki = (("backend", "loki"),)
    assert _moved(registry) == {
        (semconv.LOG_RECORDS_SHIPPED.series, loki), (semconv.LOG_RECORDS_RETRIED.series, loki),
        (semconv.LOG_BATCHES.series, (("backend", "loki"), ("outcome", "ok"))),
        (semconv.LOG_BATCHES.series, (("backend", "loki"), ("outcome", "server_error"))),
        (duration + "_count", loki), (duration + "_sum", loki)}
    assert registry.get_sample_value(duration + "_count", {"backend": "loki"}) == requests
    assert registry.get_sample_value(duration + "_bucket", {"backend": "loki", "le": "+Inf"}) == requests


def test_the_shipper_process_s_swallowed_errors_are_counted_in_the_app_s_registry(servers, process_handlers,
                                                                                  logger, registry):
    from prometheus_client import REGISTRY
    server = servers("loki")
    handler = process_handlers("loki", server)
    errors_before = sample(REGISTRY, semconv.TELEMETRY_ERRORS, component="exporters")
    handler._shipper.submit(b"not a frame")   # the child cannot rebuild it: dropped and counted there
    logger.addHandler(handler)
    logger.info("fine")
    assert handler.flush(10)
    assert server.messages() == {"fine"}
    assert wait_until(lambda: dropped(registry, "loki", "unformattable") == 1)
    assert wait_until(lambda: sample(registry, semconv.TELEMETRY_ERRORS, component="exporters") == 1)
    assert sample(REGISTRY, semconv.TELEMETRY_ERRORS, component="exporters") == errors_before


def test_a_killed_shipper_process_loses_nothing(servers, process_handlers, logger, registry):
    server = servers("loki")
    handler = process_handlers("loki", server)
    logger.addHandler(handler)
    first = test_shipping.emit(logger, 500, "before")
    os.kill(_child(handler), signal.SIGKILL)
    second = test_shipping.emit(logger, 500, "after")
    assert handler.flush(20)
    assert server.messages() == set(first) | set(second)   # at least once: a few may arrive twice
    assert handler.stats()["restarts"] >= 1
    assert dropped(registry, "loki") == 0
    assert wait_until(lambda: handler.stats()["queued"] == 0)


def test_a_shipper_process_that_cannot_start_holds_the_records(servers, process_handlers, logger):
    server = servers("loki")
    handler = process_handlers("loki", server)
    shipper = handler._shipper
    os.kill(_child(handler), signal.SIGKILL)
    command = shipper._command
    shipper._command = ["/nonexistent/python"]   # every restart fails for a while
    logger.addHandler(handler)
    messages = test_shipping.emit(logger, 50)
    assert handler.flush(0.5) is False
    assert handler.stats()["queued"] == 50
    shipper._command = command
    assert handler.flush(20)
    assert server.messages() == set(messages)


def test_a_full_buffer_drops_newest_and_never_blocks(servers, process_handlers, logger, registry):
    server = servers("loki")
    handler = process_handlers("loki", server, queue_records=20)
    shipper = handler._shipper
    os.kill(_child(handler), signal.SIGKILL)
    shipper._command = ["/nonexistent/python"]
    logger.addHandler(handler)
    test_shipping.emit(logger, 30)
    assert dropped(registry, "loki", "buffer_full") == 10
    assert handler.stats()["queued"] == 20


def test_close_sends_what_it_holds_then_refuses_later_records(servers, process_handlers, logger, registry):
    server = servers("loki")
    handler = process_handlers("loki", server, batch_wait=30)
    logger.addHandler(handler)
    messages = test_shipping.emit(logger, 20)
    _child(handler)
    child = handler._shipper._child
    handler.close(timeout=10)
    assert server.messages() == set(messages)
    assert child.poll() is not None   # the child exited
    logger.info("after close")
    assert dropped(registry, "loki", "closed") == 1
    stats = handler.stats()
    assert stats["accepted"] == stats["settled"] == 20


def test_close_counts_what_it_could_not_send(servers, process_handlers, logger, registry):
    server = servers("loki")
    server.stop()
    handler = process_handlers("loki", server)
    logger.addHandler(handler)
    test_shipping.emit(logger, 10)
    handler.close(timeout=0.5)
    assert dropped(registry, "loki", "shutdown") == 10
    assert sample(registry, semconv.LOG_RECORDS_SHIPPED, backend="loki") == 0


def test_a_forked_child_ships_its_own_records_and_not_its_parents(servers, process_handlers, logger):
    test_lifecycle.test_a_forked_child_ships_its_own_records_and_not_its_parents(servers, process_handlers,
                                                                                 logger)


def test_the_shipper_threads_never_ship_their_own_logs(servers, process_handlers, registry):
    server = servers("loki")
    handler = process_handlers("loki", server)
    shipper = handler._shipper
    shipper._command = ["/nonexistent/python"]   # the feeder logs the failed start through the root logger
    os.kill(_child(handler), signal.SIGKILL)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        assert wait_until(lambda: dropped(registry, "loki", "shipper_thread") >= 1)
    finally:
        root.removeHandler(handler)
    assert handler.stats()["accepted"] == 0


def test_a_record_marshal_refuses_is_made_plain_and_shipped(servers, process_handlers, logger, registry):
    server = servers("loki")
    handler = process_handlers("loki", server)
    logger.addHandler(handler)
    logger.info("before")
    logger.log(Level.HIGH, "an IntEnum level")   # levelno is an int subclass: not marshallable as is
    logger.info("after")
    assert handler.flush(10)
    assert server.messages() == {"before", "an IntEnum level", "after"}
    assert dropped(registry, "loki") == 0


def test_a_burst_larger_than_memory_goes_to_the_spool_while_the_backend_is_down(servers, registry, logger,
                                                                                 tmp_path):
    server = servers("loki")
    server.stop()
    handler = LokiHandler(server.url, service="payments", registry=registry, spool_dir=str(tmp_path),
                          queue_bytes=2 * 1024 * 1024, backoff_initial=0.05, backoff_max=0.2,
                          shipper_process=True)
    try:
        logger.addHandler(handler)
        messages = test_shipping.emit(logger, 50_000, "burst")   # ~20 MB of frames: 10x the memory bound
        assert dropped(registry, "loki") == 0, handler.stats()
        assert wait_until(lambda: handler.stats()["spooled"] == 50_000, timeout=60), handler.stats()
        assert handler.stats()["queued"] == 0   # out of the app's memory, on the child's disk
        server.start()
        assert handler.flush(120), handler.stats()
        assert server.messages() == set(messages)
        assert dropped(registry, "loki") == 0
    finally:
        handler.close(timeout=5)


def test_a_shipper_process_killed_with_records_in_its_spool_hands_them_to_the_next(servers, registry, logger,
                                                                                   tmp_path):
    server = servers("loki")
    server.stop()
    handler = LokiHandler(server.url, service="payments", registry=registry, spool_dir=str(tmp_path),
                          batch_wait=0.05, backoff_initial=0.05, backoff_max=0.2, shipper_process=True)
    try:
        logger.addHandler(handler)
        spooled = test_shipping.emit(logger, 2_000, "spooled")
        assert wait_until(lambda: handler.stats()["spooled"] == 2_000, timeout=30), handler.stats()
        assert handler.stats()["queued"] == 0   # the app let them go: only the child's disk holds them
        first = _child(handler)
        os.kill(first, signal.SIGKILL)
        shipper = handler._shipper
        assert wait_until(lambda: shipper._child is not None and shipper._child.pid != first
                          and shipper._child_ready, timeout=30)
        later = test_shipping.emit(logger, 100, "later")
        server.start()
        assert handler.flush(60), handler.stats()
        assert server.messages() == set(spooled) | set(later)   # the next child adopted the spool
        # At least once: a record may arrive twice; the backend's copies are what was counted shipped.
        duplicates = len(server.delivered) - len(server.messages())
        assert duplicates >= 0
        assert test_shipping.shipped(registry, "loki") == 2_100 + duplicates
        assert dropped(registry, "loki") == 0
        assert wait_until(lambda: handler.stats()["spooled"] == 0)   # the next child acknowledged them
    finally:
        handler.close(timeout=5)


def test_a_full_spool_stops_the_waits_and_the_overflow_is_dropped_and_counted(servers, registry, logger,
                                                                              tmp_path):
    server = servers("loki")
    server.stop()
    handler = LokiHandler(server.url, service="payments", registry=registry, spool_dir=str(tmp_path),
                          spool_bytes=2 * 1024 * 1024, queue_bytes=256 * 1024,
                          backoff_initial=0.05, backoff_max=0.2, shipper_process=True)
    try:
        logger.addHandler(handler)
        burst = threading.Thread(target=test_shipping.emit, args=(logger, 20_000, "x" * 100))
        burst.start()
        burst.join(60)   # 5 s per call past the bound would take hours
        assert not burst.is_alive()
        assert dropped(registry, "loki", "buffer_full") > 0
        stats = handler.stats()
        assert stats["accepted"] + stats["dropped_buffer_full"] == 20_000
        assert stats["spooled"] > 0   # the spool took what it could
    finally:
        handler.close(timeout=1)
