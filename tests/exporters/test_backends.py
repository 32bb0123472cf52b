"""What is specific to each backend: Loki labels and metadata, Datadog limits and age, Elastic bulk items.

Servers are ``exporter_fakes.FakeBackend`` instances speaking each wire protocol on loopback.
"""

from __future__ import annotations

import logging
import time

import pytest

from ofsre.exporters.datadog import SITES, DatadogHandler, intake_url
from ofsre.exporters.elastic import ElasticHandler, data_stream_name
from ofsre.exporters.loki import LokiHandler, loki_label_name
from ofsre.instrumentation import semconv

from .exporter_fakes import API_KEY, Reply, dropped, sample

# --- Loki -------------------------------------------------------------------------------------


def test_loki_label_names_follow_python_logging_loki_cleaning_and_loki_rules():
    assert loki_label_name("k8s.cluster") == "k8s_cluster"
    assert loki_label_name("team-name") == "team_name"
    for bad in ("__reserved", "1abc", "", "!!"):
        with pytest.raises(ValueError, match="label name"):
            loki_label_name(bad)


def test_loki_static_labels_and_structured_metadata(servers, handlers, logger):
    server = servers("loki")
    handler = handlers("loki", server, labels={"k8s.cluster": "sp-1"}, structured_metadata=True)
    logger.addHandler(handler)
    logger.warning("hello")
    assert handler.flush(10)
    assert server.errors == []
    record = server.records[0]
    assert record["_labels"] == {"k8s_cluster": "sp-1", "service": "payments", "env": "test",
                                 "level": "warning"}
    assert record["_metadata"]["logger"] == logger.name
    assert "logger" not in record and "trace_id" not in record


def test_loki_label_fields_are_configurable(servers, handlers, logger):
    server = servers("loki")
    handler = handlers("loki", server, label_fields="service")
    logger.addHandler(handler)
    logger.error("x")
    assert handler.flush(10)
    assert server.records[0]["_labels"] == {"service": "payments"}
    assert server.records[0]["level"] == "ERROR"   # not a label any more: it stays in the line


@pytest.mark.parametrize("bad", [{"labels": {"__name__": "x"}}, {"labels": {f"l{i}": "v" for i in range(15)}},
                                 {"labels": {"ok": ""}}, {"label_fields": ["trace_id"]}])
def test_loki_rejects_bad_label_configuration(bad):
    with pytest.raises(ValueError):
        LokiHandler("http://127.0.0.1:9", service="payments", **bad)


def test_loki_timestamps_are_nanosecond_strings_of_the_log_call(servers, handlers, logger):
    server = servers("loki")
    handler = handlers("loki", server)
    logger.addHandler(handler)
    before = time.time_ns()
    logger.info("when")
    after = time.time_ns()
    assert handler.flush(10)
    assert before - 1_000_000 <= int(server.records[0]["_ts"]) <= after + 1_000_000


def test_an_oversized_message_is_truncated_and_an_oversized_extra_dropped(servers, handlers, logger,
                                                                          registry):
    server = servers("loki")
    handler = handlers("loki", server)
    logger.addHandler(handler)
    logger.info("a" * 400_000)
    logger.info("small", extra={"blob": ["b" * 1000] * 400})   # nothing truncatable is big enough
    assert handler.flush(10)
    (record,) = server.records
    assert record["message"].endswith("[truncated]") and len(record["message"]) < 256 * 1024
    assert dropped(registry, "loki", "too_large") == 1


def test_records_older_than_the_backend_accepts_are_dropped_as_too_old(servers, handlers, logger, registry):
    server = servers("datadog")
    handler = handlers("datadog", server)
    record = logging.LogRecord(logger.name, logging.INFO, __file__, 1, "stale", None, None)
    record.created -= 19 * 3600
    handler.handle(record)
    logger.addHandler(handler)
    logger.info("fresh")
    assert handler.flush(10)
    assert server.messages() == {"fresh"}
    assert dropped(registry, "datadog", "too_old") == 1
    assert server.errors == []


# --- Datadog ----------------------------------------------------------------------------------


def test_datadog_items_carry_reserved_attributes_and_trace_ids(servers, handlers, logger):
    server = servers("datadog")
    handler = handlers("datadog", server, tags="team:pix")
    logger.addHandler(handler)
    try:
        raise ValueError("boom for ana@example.com")
    except ValueError:
        logger.exception("failed")
    assert handler.flush(10)
    (item,) = server.records
    assert item["status"] == "error" and item["service"] == "payments" and item["ddsource"] == "python"
    assert item["ddtags"] == "env:test,version:unknown,team:pix"
    assert item["error"]["kind"] == "ValueError" and item["error"]["message"] == "boom for [EMAIL]"
    assert "ana@example.com" not in str(item)


def test_datadog_batches_respect_the_1000_item_limit(servers, handlers, logger, registry):
    server = servers("datadog")
    handler = handlers("datadog", server, batch_wait=5.0, queue_records=5000)
    logger.addHandler(handler)
    for i in range(2500):
        logger.info(f"m-{i}")
    assert handler.flush(20)
    assert server.errors == []
    sizes = [len(a.messages) for a in server.arrivals]
    assert max(sizes) == 1000 and sizes[0] == 1000   # full batches while records keep coming
    assert len(server.messages()) == 2500


def test_datadog_site_selection():
    assert intake_url("datadoghq.eu") == "https://http-intake.logs.datadoghq.eu/api/v2/logs"
    assert intake_url("us5.datadoghq.com") == "https://http-intake.logs.us5.datadoghq.com/api/v2/logs"
    assert len(SITES) == 7
    with pytest.raises(ValueError, match="site"):
        intake_url("datadoghq.br")


def test_datadog_reads_its_standard_environment(monkeypatch, registry):
    monkeypatch.setenv("DD_API_KEY", API_KEY)
    monkeypatch.setenv("DD_SITE", "ap1.datadoghq.com")
    monkeypatch.setenv("DD_SERVICE", "accounts")
    monkeypatch.delenv("OFSRE_SERVICE", raising=False)
    handler = DatadogHandler(registry=registry)
    try:
        assert handler.backend.url == "https://http-intake.logs.ap1.datadoghq.com/api/v2/logs"
        assert handler.backend.headers["DD-API-KEY"] == API_KEY
        assert handler.service == "accounts"
    finally:
        handler.close(timeout=0)


def test_datadog_without_an_api_key_is_a_definition_error(monkeypatch):
    monkeypatch.delenv("DD_API_KEY", raising=False)
    with pytest.raises(ValueError, match="API key"):
        DatadogHandler(service="payments")


# --- Elastic ----------------------------------------------------------------------------------


def test_elastic_partial_failures_retry_only_retryable_items(servers, handlers, logger, registry):
    server = servers("elastic")
    # First answer, per item: created, throttled, refused, server error, created, ...
    server.respond(Reply(items=[201, 429, 400, 503]))
    handler = handlers("elastic", server, batch_wait=0.2)
    logger.addHandler(handler)
    for i in range(8):
        logger.info(f"m-{i}")
    assert handler.flush(10)
    first, second = server.arrivals[0], server.arrivals[1]
    assert first.messages == [f"m-{i}" for i in range(8)]
    assert second.messages == ["m-1", "m-3", "m-5", "m-7"]           # only the 429 and 503 items
    assert second.ids == [first.ids[i] for i in (1, 3, 5, 7)]        # same _id: idempotent
    assert server.messages() == {f"m-{i}" for i in range(8)} - {"m-2", "m-6"}
    assert dropped(registry, "elastic", "rejected") == 2
    assert sample(registry, semconv.LOG_RECORDS_SHIPPED, backend="elastic") == 6
    assert sample(registry, semconv.LOG_BATCHES, backend="elastic", outcome="partial") == 1


def test_elastic_resend_after_a_lost_answer_is_idempotent(servers, handlers, logger, registry):
    server = servers("elastic")
    # The documents are indexed but the answer is lost (timeout): the resend meets 409s.
    server.respond(Reply(delay=0.5))
    handler = handlers("elastic", server, request_timeout=0.2, batch_wait=0.2)
    logger.addHandler(handler)
    for i in range(5):
        logger.info(f"m-{i}")
    assert handler.flush(10)
    assert len(server.docs) == 5
    assert sample(registry, semconv.LOG_RECORDS_SHIPPED, backend="elastic") == 5
    assert dropped(registry, "elastic") == 0


def test_elastic_ids_differ_for_identical_records(servers, handlers, logger):
    server = servers("elastic")
    handler = handlers("elastic", server)
    logger.addHandler(handler)
    record = logging.LogRecord(logger.name, logging.INFO, __file__, 1, "same", None, None)
    handler.handle(record)
    handler.handle(record)
    assert handler.flush(10)
    assert len(server.docs) == 2


def test_elastic_documents_are_ecs_without_the_unredacted_original(servers, handlers, logger):
    server = servers("elastic")
    handler = handlers("elastic", server)
    logger.addHandler(handler)
    logger.info("cpf %s", "123.456.789-09",
                extra={"log": "clashes with ECS log.*", "http": {"method": "GET"}})
    assert handler.flush(10)
    (doc,) = server.records
    assert doc["message"] == "cpf [CPF]" and "123.456.789-09" not in str(doc)
    assert doc["_index"] == "logs-payments-test"
    assert doc["data_stream"] == {"type": "logs", "dataset": "payments", "namespace": "test"}
    assert doc["service"] == {"name": "payments", "environment": "test", "version": "unknown"}
    assert doc["log"]["logger"] == logger.name and "original" not in doc["log"]
    assert doc["extra"]["log"] == "clashes with ECS log.*"


def test_elastic_data_stream_naming():
    assert data_stream_name("payments", "prod") == "logs-payments-prod"
    with pytest.raises(ValueError, match="dataset"):
        data_stream_name("pay-ments", "prod")
    with pytest.raises(ValueError):
        ElasticHandler("http://127.0.0.1:9", service="payments", namespace="Prod")
    handler = ElasticHandler("http://127.0.0.1:9", service="Open-Payments", env="", registry=None)
    try:
        assert handler.backend.index == "logs-open_payments-default"
    finally:
        handler.close(timeout=0)
