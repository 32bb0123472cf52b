"""The split between the logging call (capture) and the worker thread (redact, encode).

The logging call keeps what could change after it returns (the message, mutable extras,
the context ids, the exception text); the worker redacts and encodes. These tests pin what
that split must not lose: the record as it was at the call, redaction before anything
leaves the process (network or spool), and the buffer's byte bound on the app thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from ofsre.exporters._buffer import Entry, RecordBuffer
from ofsre.exporters._capture import RECORD_OVERHEAD, capture
from ofsre.instrumentation.context import use_interaction_id

from .exporter_fakes import Reply, dropped, wait_until

KINDS = ["loki", "datadog", "elastic"]
CPF, EMAIL = "123.456.789-09", "ana@example.com"


@pytest.mark.parametrize("kind", KINDS)
def test_what_is_mutated_after_the_call_ships_as_it_was(kind, servers, handlers, logger):
    server = servers(kind)
    release = threading.Event()
    server.respond(Reply(hang=release))   # the worker is stuck: encoding happens after the mutations
    handler = handlers(kind, server)
    logger.addHandler(handler)
    logger.info("first")
    assert wait_until(lambda: not server.script)
    cart, payer = ["pix"], {"name": "ana"}
    logger.info("cart %s", cart, extra={"payer": payer})
    cart.append("boleto")
    payer["name"] = "bia"
    release.set()
    assert handler.flush(10)
    record = next(r for r in server.records if r["message"].startswith("cart"))
    assert record["message"] == "cart ['pix']"
    assert record["payer"] == {"name": "ana"}


@pytest.mark.parametrize("kind", KINDS)
def test_context_ids_are_those_of_the_logging_thread(kind, servers, handlers, logger):
    server = servers(kind)
    handler = handlers(kind, server)
    logger.addHandler(handler)

    def request(interaction: str) -> None:
        with use_interaction_id(interaction):
            logger.info(interaction)

    threads = [threading.Thread(target=request, args=(f"req-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert handler.flush(10)
    for record in server.records:
        shipped = record["labels"]["interaction_id"] if kind == "elastic" else record["interaction_id"]
        assert shipped == record["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_exception_is_formatted_at_the_call_and_redacted_on_the_worker(kind, servers, handlers, logger):
    server = servers(kind)
    handler = handlers(kind, server)
    logger.addHandler(handler)
    try:
        raise ValueError(f"bad payer {CPF}")
    except ValueError:
        logger.exception("failed for %s", EMAIL)
    assert handler.flush(10)
    (record,) = server.records
    assert CPF not in str(record) and EMAIL not in str(record)
    assert record["message"] == "failed for [EMAIL]"
    if kind == "loki":
        assert "ValueError: bad payer [CPF]" in record["exception"]
    else:
        error = record["error"]
        assert error["message"] == "bad payer [CPF]"
        assert "Traceback" in error["stack" if kind == "datadog" else "stack_trace"]
        assert error["kind" if kind == "datadog" else "type"] == "ValueError"


def test_the_spool_holds_only_redacted_records(servers, handlers, logger, tmp_path):
    server = servers("loki")
    server.stop()
    handler = handlers("loki", server, spool_dir=str(tmp_path))
    logger.addHandler(handler)
    logger.info("payer %s", CPF, extra={"contact": EMAIL, "nested": {"cpf": CPF}})
    assert wait_until(lambda: handler.stats()["spooled"] == 1)
    on_disk = b"".join(path.read_bytes() for path in Path(tmp_path).rglob("*") if path.is_file())
    assert b"[CPF]" in on_disk and b"[EMAIL]" in on_disk
    assert CPF.encode() not in on_disk and EMAIL.encode() not in on_disk


def test_the_byte_bound_holds_on_the_logging_thread(servers, handlers, logger, registry):
    server = servers("loki")
    release = threading.Event()
    server.respond(Reply(hang=release))
    message = "x" * 100_000
    estimate = capture(logging.LogRecord("l", logging.INFO, __file__, 1, message, None, None)).size
    handler = handlers("loki", server, queue_bytes=3 * estimate + 10, queue_records=1000)
    logger.addHandler(handler)
    logger.info("first")
    assert wait_until(lambda: not server.script)   # "first" is in flight, out of the buffer
    for _ in range(5):
        logger.info(message)
    assert handler.stats()["queued"] == 3
    assert dropped(registry, "loki", "buffer_full") == 2
    release.set()
    assert handler.flush(10)
    assert len(server.records) == 4


def test_capture_estimates_the_size_from_the_variable_parts():
    record = logging.LogRecord("l", logging.INFO, __file__, 1, "%s", ("m" * 100,), None)
    record.note = "n" * 50
    record.items = ["i" * 30]
    captured = capture(record)
    assert captured.size >= RECORD_OVERHEAD + 100 + 50 + 30
    assert captured.getMessage() == "m" * 100 and captured.args is None


def test_the_estimate_is_replaced_by_the_exact_size_once_encoded():
    def encode(item: Entry) -> Entry:
        return Entry(b"", b"e" * 9, 0.0)    # exact size 10, whatever the estimate

    buffer = RecordBuffer(max_records=10, max_bytes=100, batch_records=10, batch_bytes=1000, encode=encode)
    big_estimate = Entry(b"", b"r" * 59, 0.0)   # estimated 60 bytes
    assert buffer.put(big_estimate) == (True, 0)
    assert buffer.put(big_estimate) == (False, 0)   # 120 > 100 on estimates
    assert [e.size for e in buffer.take(1, 1000)] == [10]
    assert buffer.put(big_estimate) == (True, 0)
    assert buffer.take(0, 1000) == []       # encodes nothing when nothing is wanted
    assert buffer.put(big_estimate) == (False, 0)   # still estimated: 60 + 60 > 100


def test_a_record_the_worker_cannot_encode_is_counted_and_settled(servers, handlers, logger, registry):
    server = servers("datadog")
    handler = handlers("datadog", server)
    record = logging.LogRecord(logger.name, logging.INFO, __file__, 1, "no level name", None, None)
    record.levelname = None    # the Datadog encoder calls .lower() on it: fails on the worker
    handler.handle(record)
    logger.addHandler(handler)
    logger.info("fine")
    assert handler.flush(10)
    assert server.messages() == {"fine"}
    assert dropped(registry, "datadog", "unformattable") == 1
