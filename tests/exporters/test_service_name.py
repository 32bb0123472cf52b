"""Every shipper names the service as OpenTelemetry does: argument, OFSRE_SERVICE / OTEL_SERVICE_NAME,
then ``unknown_service:<process name>`` with a warning, never a refusal to start."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from .exporter_fakes import API_KEY, PATHS, wait_until

KINDS = ("loki", "datadog", "elastic")


def _handler(kind, server, registry, **kwargs):
    opts = {"batch_wait": 0.05, "registry": registry, **kwargs}
    if kind == "loki":
        from ofsre.exporters.loki import LokiHandler
        return LokiHandler(server.url, **opts)
    if kind == "datadog":
        from ofsre.exporters.datadog import DatadogHandler
        return DatadogHandler(API_KEY, url=server.url + PATHS["datadog"], **opts)
    from ofsre.exporters.elastic import ElasticHandler
    return ElasticHandler(server.url, **opts)


def _shipped_service(kind: str, server) -> str:
    record = server.records[-1]
    if kind == "loki":
        return record["_labels"]["service"]
    return record["service"]["name"] if kind == "elastic" else record["service"]


def _ship_one(kind, server, registry, logger, **kwargs) -> str:
    handler = _handler(kind, server, registry, **kwargs)
    try:
        logger.addHandler(handler)
        logger.info("hello")
        assert handler.flush(10)
        assert wait_until(lambda: server.records)
        return _shipped_service(kind, server)
    finally:
        handler.close(timeout=1.0)


@pytest.fixture
def no_service_env(monkeypatch):
    for name in ("OFSRE_SERVICE", "OTEL_SERVICE_NAME", "DD_SERVICE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variable", ["OTEL_SERVICE_NAME", "OFSRE_SERVICE"])
def test_the_service_name_comes_from_the_environment(kind, variable, servers, registry, logger,
                                                     no_service_env, monkeypatch):
    monkeypatch.setenv(variable, "from-env")
    assert _ship_one(kind, servers(kind), registry, logger) == "from-env"


@pytest.mark.parametrize("kind", KINDS)
def test_without_any_name_the_shipper_starts_as_unknown_service_and_warns(kind, servers, registry, logger,
                                                                          no_service_env, caplog):
    expected = f"unknown_service:{os.path.basename(sys.argv[0])}"
    with caplog.at_level(logging.WARNING, logger="ofsre.exporters"):
        assert _ship_one(kind, servers(kind), registry, logger) == expected
    assert any("no service name" in r.getMessage() and expected in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", KINDS)
def test_an_explicit_name_wins_without_warning(kind, servers, registry, logger, monkeypatch, caplog):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    with caplog.at_level(logging.WARNING, logger="ofsre.exporters"):
        assert _ship_one(kind, servers(kind), registry, logger, service="given") == "given"
    assert not [r for r in caplog.records if "no service name" in r.getMessage()]
