"""Bursts: what fits the byte budget is never dropped at default settings, and with a spool a
burst bigger than memory goes to disk and is delivered once the backend is back.

These run the real handler at its default shipping settings (no test-short waits) against the
fake Loki, in a tight logging loop, the way an incident's burst of log lines arrives.
"""

from __future__ import annotations

import threading

import pytest

from ofsre.exporters.loki import LokiHandler
from ofsre.instrumentation import semconv

from .exporter_fakes import dropped, sample, wait_until

PAD = "x" * 80   # with "burst-<n> " a message of ~100 bytes


def _burst(logger, count: int) -> None:
    for i in range(count):
        logger.info("burst-%d %s", i, PAD)


def _delivered(server, count: int) -> set[str]:
    expected = {f"burst-{i} {PAD}" for i in range(count)}
    assert server.messages() == expected
    return expected


@pytest.mark.parametrize("down_for", [0.0, 3.0])
def test_fifty_thousand_short_records_at_default_settings_are_all_delivered(down_for, servers, registry,
                                                                            logger):
    server = servers("loki")
    if down_for:
        server.stop()
        restart = threading.Timer(down_for, server.start)
        restart.start()
    handler = LokiHandler(server.url, service="payments", registry=registry)   # defaults only
    try:
        logger.addHandler(handler)
        _burst(logger, 50_000)
        assert dropped(registry, "loki") == 0, handler.stats()
        assert handler.flush(120), handler.stats()
        _delivered(server, 50_000)
        assert sample(registry, semconv.LOG_RECORDS_SHIPPED, backend="loki") == 50_000
        assert dropped(registry, "loki") == 0
    finally:
        handler.close(timeout=5)


def test_a_burst_larger_than_memory_goes_to_the_spool_while_the_backend_is_down(servers, registry, logger,
                                                                                 tmp_path):
    server = servers("loki")
    server.stop()
    # The memory buffer holds a small part of the burst; the rest must overflow to disk.
    handler = LokiHandler(server.url, service="payments", registry=registry, spool_dir=str(tmp_path),
                          queue_bytes=4 * 1024 * 1024, backoff_initial=0.05, backoff_max=0.2)
    try:
        logger.addHandler(handler)
        _burst(logger, 200_000)
        assert dropped(registry, "loki") == 0, handler.stats()
        assert wait_until(lambda: handler.stats()["spooled"] == 200_000, timeout=60), handler.stats()
        assert handler.stats()["queued"] == 0   # out of memory, on disk
        assert not server.messages()   # nothing could have been sent
        server.start()
        assert handler.flush(180), handler.stats()
        _delivered(server, 200_000)
        assert dropped(registry, "loki") == 0
        assert handler.stats()["spooled"] == 0
    finally:
        handler.close(timeout=5)
