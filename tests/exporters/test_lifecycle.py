"""Lifecycle: flush/close timeouts, interpreter exit, fork, recursion, dictConfig and install_from_env.

The backend is the fake Loki of ``exporter_fakes`` (a local server speaking Loki's push API).
"""

from __future__ import annotations

import logging
import logging.config
import os
import subprocess
import sys
import threading
from collections import Counter

import pytest

from ofsre.exporters import install_from_env
from ofsre.exporters.loki import LokiHandler
from ofsre.instrumentation import semconv

from .exporter_fakes import FAST, Reply, dropped, sample, wait_until


def test_worker_is_a_named_daemon_thread(servers, handlers):
    handlers("loki", servers("loki"))
    workers = [t for t in threading.enumerate() if t.name == "ofsre-log-shipper-loki"]
    assert workers and all(t.daemon for t in workers)


def test_flush_gives_up_after_its_timeout(servers, handlers, logger):
    server = servers("loki")
    server.respond(Reply(hang=threading.Event()))
    handler = handlers("loki", server)
    logger.addHandler(handler)
    logger.info("stuck")
    assert handler.flush(timeout=0.2) is False


def test_close_counts_what_it_could_not_send_and_refuses_later_records(servers, handlers, logger, registry):
    server = servers("loki")
    server.stop()
    handler = handlers("loki", server)
    logger.addHandler(handler)
    for i in range(10):
        logger.info(f"m-{i}")
    handler.close(timeout=0.3)
    assert wait_until(lambda: dropped(registry, "loki", "shutdown") == 10)
    logger.info("after close")
    assert dropped(registry, "loki", "closed") == 1
    stats = handler.stats()
    assert stats["accepted"] == stats["settled"] == 10   # nothing pending: every record accounted for
    assert sample(registry, semconv.LOG_RECORDS_SHIPPED, backend="loki") == 0


@pytest.mark.parametrize("mode", ["", ", shipper_process=True"], ids=["thread", "process"])
def test_records_are_flushed_at_interpreter_exit(servers, mode):
    server = servers("loki")
    script = (
        "import logging\n"
        "from ofsre.exporters.loki import LokiHandler\n"
        f"handler = LokiHandler({server.url!r}, service='payments', batch_wait=60{mode})\n"
        "log = logging.getLogger('app'); log.addHandler(handler); log.setLevel(logging.INFO)\n"
        "for i in range(10): log.info(f'exit-{i}')\n"   # no flush(), no close(): atexit does it
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert server.messages() == {f"exit-{i}" for i in range(10)}


def test_a_forked_child_ships_its_own_records_and_not_its_parents(servers, handlers, logger):
    server = servers("loki")
    handler = handlers("loki", server, batch_wait=30)   # the parent's records wait in its buffer
    logger.addHandler(handler)
    for i in range(10):
        logger.info(f"parent-{i}")
    pid = os.fork()
    if pid == 0:  # child: its own buffer and shipper (thread or process); exits without pytest's teardown
        code = 1
        try:
            for i in range(5):
                logger.info(f"child-{i}")
            code = 0 if handler.flush(20) and handler.stats()["accepted"] == 5 else 1
            handler.close(5)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert handler.flush(10)
    sent = Counter(m for arrival in server.arrivals for m in arrival.messages)
    assert sent == Counter([f"parent-{i}" for i in range(10)] + [f"child-{i}" for i in range(5)])


def test_the_shipper_never_ships_its_own_logs(servers, handlers, registry):
    server = servers("loki")
    server.respond(Reply(400))   # the worker logs a warning about it, through the root logger
    handler = handlers("loki", server)
    root, quiet = logging.getLogger(), [logging.getLogger(n) for n in ("httpx", "httpcore")]
    old = [root.level] + [q.level for q in quiet]
    root.addHandler(handler)
    for log in [root, *quiet]:
        log.setLevel(logging.DEBUG)   # the HTTP client's debug logs: the classic recursion
    try:
        logging.getLogger("app").info("app-0")
        assert handler.flush(10)
        logging.getLogger("app").info("app-1")
        logging.getLogger("httpx").info("the app's own httpx log")
        assert handler.flush(10)
    finally:
        root.removeHandler(handler)
        for log, level in zip([root, *quiet], old, strict=True):
            log.setLevel(level)
    assert server.messages() == {"app-1", "the app's own httpx log"}   # app-0 went in the 400 batch
    assert dropped(registry, "loki", "shipper_thread") >= 1
    assert len(server.arrivals) == 2


def test_dict_config_builds_a_working_handler(servers, registry):
    server = servers("loki")
    name = "test.dictconfig"
    logging.config.dictConfig({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"loki": {"class": "ofsre.exporters.loki.LokiHandler", "url": server.url,
                              "service": "payments", "labels": {"cluster": "sp1"}, "registry": registry,
                              **FAST}},
        "loggers": {name: {"handlers": ["loki"], "level": "INFO", "propagate": False}},
    })
    (handler,) = logging.getLogger(name).handlers
    try:
        logging.getLogger(name).info("configured")
        assert handler.flush(10)
    finally:
        logging.getLogger(name).removeHandler(handler)
        handler.close(timeout=1)
    assert server.records[0]["_labels"]["cluster"] == "sp1"


def test_install_from_env(monkeypatch, servers, registry):
    server = servers("loki")
    monkeypatch.setenv("OFSRE_LOG_SHIPPER", "loki")
    monkeypatch.setenv("OFSRE_LOKI_URL", server.url)
    monkeypatch.setenv("OFSRE_LOG_BATCH_WAIT", "0.05")
    root = logging.getLogger()
    handler = install_from_env("payments", registry=registry)
    try:
        assert isinstance(handler, LokiHandler) and handler in root.handlers
        assert install_from_env("payments", registry=registry) is handler   # idempotent
        assert handler.options.batch_wait == 0.05
        logging.getLogger("svc").warning("via root")
        assert handler.flush(10)
    finally:
        root.removeHandler(handler)
        handler.close(timeout=1)
    assert "via root" in server.messages()


def test_install_from_env_none_and_unknown(monkeypatch):
    monkeypatch.delenv("OFSRE_LOG_SHIPPER", raising=False)
    assert install_from_env("payments") is None
    monkeypatch.setenv("OFSRE_LOG_SHIPPER", "none")
    assert install_from_env("payments") is None
    monkeypatch.setenv("OFSRE_LOG_SHIPPER", "splunk")
    with pytest.raises(ValueError, match="OFSRE_LOG_SHIPPER"):
        install_from_env("payments")


def test_a_missing_url_is_a_definition_error(monkeypatch):
    monkeypatch.delenv("OFSRE_LOKI_URL", raising=False)
    with pytest.raises(ValueError, match="URL"):
        LokiHandler(service="payments")
