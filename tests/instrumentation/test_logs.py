"""JSON log lines: fields, trace correlation, redaction, configuration and bad records."""

import io
import json
import logging
import re
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY

from ofsre.instrumentation.context import use_interaction_id
from ofsre.instrumentation.logs import ContextFilter, JsonFormatter, configure_logging, record_fields

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def root_logger():
    """Restore the root logger's handlers and level after a test that configures it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _telemetry_errors() -> float:
    return REGISTRY.get_sample_value("ofsre_telemetry_errors_total", {"component": "logs"}) or 0.0


def test_line_has_every_field_with_trace_and_interaction_ids(root_logger):
    out = io.StringIO()
    configure_logging("payments", env="test", version="1.2.3", stream=out)
    tracer = TracerProvider().get_tracer("test")
    with (tracer.start_as_current_span("request") as span,
          use_interaction_id("c9a3e1f0-0000-4000-8000-000000000001")):
        logging.getLogger("payments.pix").info("pix %s sent", "p-1",
                                               extra={"payment_id": "p-1", "attempt": 2})
    [line] = _lines(out)
    ctx = span.get_span_context()
    assert RFC3339_MS.match(line.pop("timestamp"))
    assert line == {
        "level": "INFO", "logger": "payments.pix", "message": "pix p-1 sent",
        "service": "payments", "env": "test", "version": "1.2.3",
        "trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x"),
        "interaction_id": "c9a3e1f0-0000-4000-8000-000000000001",
        "payment_id": "p-1", "attempt": 2,
    }


def test_outside_a_request_ids_are_null(root_logger):
    out = io.StringIO()
    configure_logging("svc", stream=out)
    logging.getLogger("x").warning("plain")
    [line] = _lines(out)
    assert (line["trace_id"], line["span_id"], line["interaction_id"]) == (None, None, None)
    assert line["level"] == "WARNING"


def test_message_extras_and_exception_are_redacted(root_logger):
    out = io.StringIO()
    configure_logging("svc", stream=out)
    try:
        raise ValueError("bad client_secret=abc123 for 529.982.247-25")
    except ValueError:
        logging.getLogger("x").exception(
            "payer %s failed", "ana@example.com",
            extra={"headers": {"Authorization": "Bearer abcdef123456"}, "cpf": "52998224725",
                   "obj": _Printable()})
    [line] = _lines(out)
    assert line["message"] == "payer [EMAIL] failed"
    assert line["headers"] == {"Authorization": "[SECRET]"}
    assert line["cpf"] == "[CPF]"
    assert line["obj"] == "customer [CPF]"          # objects become str() and are redacted too
    assert "ValueError: bad client_secret=[SECRET] for [CPF]" in line["exception"]
    assert "Traceback" in line["exception"]
    assert "52998224725" not in out.getvalue() and "529.982.247-25" not in out.getvalue()


class _Printable:
    def __str__(self) -> str:
        return "customer 529.982.247-25"


def test_extra_cannot_overwrite_core_fields():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.service = "spoofed"
    fields = record_fields(record, service="real", env="e", version="v")
    assert fields["service"] == "real" and fields["extra_service"] == "spoofed"


def test_context_filter_sets_record_attributes_and_record_fields_prefers_them():
    tracer = TracerProvider().get_tracer("test")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    with tracer.start_as_current_span("request") as span, use_interaction_id("iid-1"):
        assert ContextFilter().filter(record) is True
    assert record.trace_id == format(span.get_span_context().trace_id, "032x")
    assert record.span_id == format(span.get_span_context().span_id, "016x")
    assert record.interaction_id == "iid-1"
    # formatted later, outside the span (as a shipper thread would): the captured ids are kept
    fields = record_fields(record, service="s", env="e", version="v")
    assert (fields["trace_id"], fields["interaction_id"]) == (record.trace_id, "iid-1")
    assert "extra_trace_id" not in fields


def test_bad_record_still_logs_and_counts_an_error(root_logger):
    out = io.StringIO()
    handler = configure_logging("svc", stream=out)
    # A logger of its own: pytest's log capture on the root logger would raise on this record.
    logger = logging.getLogger("ofsre.tests.bad_record")
    logger.propagate = False
    logger.addHandler(handler)
    before = _telemetry_errors()
    logger.info("%d items for 529.982.247-25", "not-a-number")
    logger.removeHandler(handler)
    [line] = _lines(out)
    assert line["message"] == "%d items for [CPF]"
    assert line["log_error"].startswith("TypeError")
    assert line["service"] == "svc"
    assert _telemetry_errors() == before + 1


def test_unserializable_and_cyclic_extras_do_not_break_the_line(root_logger):
    out = io.StringIO()
    configure_logging("svc", stream=out)
    loop: list = []
    loop.append(loop)
    logging.getLogger("x").info("ok", extra={"loop": loop, "when": object(), "b": b"bytes"})
    [line] = _lines(out)
    assert line["message"] == "ok" and isinstance(line["loop"], list) and line["b"] == "b'bytes'"


def test_configure_logging_is_idempotent_and_keeps_foreign_handlers(root_logger):
    foreign = logging.NullHandler()
    root_logger.addHandler(foreign)
    first, second = io.StringIO(), io.StringIO()
    h1 = configure_logging("svc", stream=first)
    h2 = configure_logging("svc", stream=second)
    assert h1 not in root_logger.handlers and h2 in root_logger.handlers and foreign in root_logger.handlers
    logging.getLogger("x").info("once")
    assert first.getvalue() == "" and len(_lines(second)) == 1


def test_settings_fall_back_to_environment(root_logger, monkeypatch):
    monkeypatch.setenv("OFSRE_LOG_LEVEL", "warning")
    monkeypatch.setenv("OFSRE_ENV", "prod")
    monkeypatch.setenv("OFSRE_VERSION", "9.9.9")
    out = io.StringIO()
    configure_logging("svc", stream=out)
    logging.getLogger("x").info("dropped")
    logging.getLogger("x").warning("kept")
    [line] = _lines(out)
    assert (line["message"], line["env"], line["version"]) == ("kept", "prod", "9.9.9")
    assert root_logger.level == logging.WARNING
    # explicit arguments win over the environment
    configure_logging("svc", level="DEBUG", env="stage", stream=out)
    assert root_logger.level == logging.DEBUG
    assert JsonFormatter("svc", env="stage").env == "stage"


def test_bad_level_falls_back_to_info(root_logger):
    configure_logging("svc", level="LOUD", stream=io.StringIO())
    assert root_logger.level == logging.INFO


def test_importing_logs_does_not_import_sqlalchemy():
    code = ("import sys, ofsre.instrumentation.logs, ofsre.instrumentation.redact; print('sqlalchemy' "
            "in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
