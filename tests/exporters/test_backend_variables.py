"""Each backend's OFSRE_* variables, read through their declarations: argument, then variable, then
default."""

from __future__ import annotations

import base64

import pytest

from ofsre.exporters._options import DATADOG, ELASTIC, LOKI
from ofsre.exporters.datadog import DatadogHandler
from ofsre.exporters.elastic import ElasticHandler
from ofsre.exporters.loki import LokiHandler


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for var in (*LOKI.values(), *DATADOG.values(), *ELASTIC.values()):
        monkeypatch.delenv(var.name, raising=False)
    for name in ("OFSRE_SERVICE", "OTEL_SERVICE_NAME", "OFSRE_ENV", "OFSRE_VERSION", "DD_SERVICE", "DD_ENV",
                 "DD_VERSION", "DD_API_KEY", "DD_SITE", "DD_TAGS"):
        monkeypatch.delenv(name, raising=False)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_loki_reads_its_variables_and_an_argument_wins(monkeypatch, registry):
    monkeypatch.setenv("OFSRE_LOKI_URL", "http://loki.env:3100")
    monkeypatch.setenv("OFSRE_LOKI_TENANT", "tenant-env")
    monkeypatch.setenv("OFSRE_LOKI_USERNAME", "u")
    monkeypatch.setenv("OFSRE_LOKI_PASSWORD", "p")
    monkeypatch.setenv("OFSRE_LOKI_LABELS", "cluster=sp1")
    monkeypatch.setenv("OFSRE_LOKI_LABEL_FIELDS", "service, level")
    monkeypatch.setenv("OFSRE_LOKI_STRUCTURED_METADATA", "yes")
    handler = LokiHandler(service="svc", env="prod", registry=registry)
    try:
        backend = handler.backend
        assert backend.url == "http://loki.env:3100/loki/api/v1/push"
        assert backend.headers["X-Scope-OrgID"] == "tenant-env"
        assert backend.headers["Authorization"] == _basic("u", "p")
        assert backend._static == {"cluster": "sp1", "service": "svc"}  # env is not a label field here
        assert backend._label_fields == ("service", "level") and backend._metadata is True
    finally:
        handler.close(timeout=1)
    handler = LokiHandler("http://loki.arg:3100", service="svc", tenant="tenant-arg", token="t",
                          label_fields=["env"], structured_metadata="false", registry=registry)
    try:
        backend = handler.backend
        assert backend.url.startswith("http://loki.arg:3100")
        assert backend.headers["X-Scope-OrgID"] == "tenant-arg"
        assert backend.headers["Authorization"] == "Bearer t" and backend._label_fields == ("env",)
        assert backend._metadata is False   # the text "false" from a dictConfig is false
    finally:
        handler.close(timeout=1)


def test_loki_defaults_and_a_bad_argument(monkeypatch, registry):
    monkeypatch.setenv("OFSRE_LOKI_URL", "http://loki:3100")
    handler = LokiHandler(service="svc", registry=registry)
    try:
        assert handler.backend._label_fields == LOKI["label_fields"].default == ("service", "env", "level")
        assert handler.backend._metadata is False and "X-Scope-OrgID" not in handler.backend.headers
    finally:
        handler.close(timeout=1)
    with pytest.raises(ValueError, match="structured_metadata"):
        LokiHandler(service="svc", structured_metadata="maybe", registry=registry)
    monkeypatch.delenv("OFSRE_LOKI_URL")
    with pytest.raises(ValueError, match="OFSRE_LOKI_URL"):
        LokiHandler(service="svc", registry=registry)


def test_datadog_takes_ofsre_then_dd_then_otel_names(monkeypatch, registry):
    monkeypatch.setenv("DD_API_KEY", "key")
    monkeypatch.setenv("OFSRE_DATADOG_URL", "http://dd.env/api/v2/logs")
    monkeypatch.setenv("DD_SERVICE", "dd-service")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "otel-service")
    monkeypatch.setenv("DD_ENV", "dd-env")
    handler = DatadogHandler(registry=registry)
    try:
        static = handler.backend._static
        assert handler.backend.url == "http://dd.env/api/v2/logs"
        assert (static["service"], static["ddsource"]) == ("dd-service", DATADOG["source"].default)
        assert static["ddtags"].startswith("env:dd-env,")
    finally:
        handler.close(timeout=1)
    monkeypatch.setenv("OFSRE_SERVICE", "ofsre-service")
    monkeypatch.setenv("OFSRE_DATADOG_SOURCE", "gunicorn")
    handler = DatadogHandler(registry=registry)
    try:
        assert (handler.backend._static["service"], handler.backend._static["ddsource"]) == (
            "ofsre-service", "gunicorn")
    finally:
        handler.close(timeout=1)
    monkeypatch.delenv("OFSRE_SERVICE")
    monkeypatch.delenv("DD_SERVICE")
    handler = DatadogHandler(source="arg", registry=registry)
    try:
        assert (handler.backend._static["service"], handler.backend._static["ddsource"]) == (
            "otel-service", "arg")
    finally:
        handler.close(timeout=1)


def test_elastic_reads_its_variables_and_derives_the_data_stream(monkeypatch, registry):
    monkeypatch.setenv("OFSRE_ELASTIC_URL", "http://es.env:9200")
    monkeypatch.setenv("OFSRE_ELASTIC_API_KEY", "k")
    handler = ElasticHandler(service="payments", env="prod", registry=registry)
    try:
        backend = handler.backend
        assert backend.url.startswith("http://es.env:9200/_bulk")
        assert backend.headers["Authorization"] == "ApiKey k" and backend.index == "logs-payments-prod"
    finally:
        handler.close(timeout=1)
    monkeypatch.setenv("OFSRE_ELASTIC_DATASET", "pix")
    monkeypatch.setenv("OFSRE_ELASTIC_NAMESPACE", "sp1")
    handler = ElasticHandler(service="payments", namespace="arg", username="u", password="p",
                             registry=registry)
    try:
        assert handler.backend.index == "logs-pix-arg"
        assert handler.backend.headers["Authorization"] == "ApiKey k"  # the API key wins over basic auth
    finally:
        handler.close(timeout=1)
