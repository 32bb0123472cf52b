"""Overflow policies of the bounded buffer: every record refused or evicted is counted.

The worker is pinned inside a request the fake Loki holds open, so the buffer fills
deterministically (no race with the worker taking records).
"""

from __future__ import annotations

import threading

import pytest

from ofsre.exporters._buffer import Entry, RecordBuffer
from ofsre.instrumentation import semconv

from .exporter_fakes import Reply, dropped, sample, wait_until


def pinned_worker(servers, handlers, logger, **options):
    """A Loki handler whose worker is stuck sending ``first-0`` until the returned event is set."""
    server = servers("loki")
    release = threading.Event()
    server.respond(Reply(hang=release))
    handler = handlers("loki", server, queue_records=10, **options)
    logger.addHandler(handler)
    logger.info("first-0")
    assert wait_until(lambda: not server.script)  # the server holds the first request
    return server, handler, release


@pytest.mark.parametrize(("policy", "kept"), [("drop_newest", range(10)), ("drop_oldest", range(40, 50))])
def test_drop_policies_keep_ten_and_count_the_rest(policy, kept, servers, handlers, logger, registry):
    server, handler, release = pinned_worker(servers, handlers, logger, overflow=policy)
    for i in range(50):
        logger.info(f"m-{i}")
    assert dropped(registry, "loki", "buffer_full") == 40
    release.set()
    assert handler.flush(10)
    assert server.messages() == {"first-0"} | {f"m-{i}" for i in kept}
    assert sample(registry, semconv.LOG_RECORDS_SHIPPED, backend="loki") == 11


def test_block_waits_for_room_then_gives_up_and_counts(servers, handlers, logger, registry):
    server, handler, release = pinned_worker(servers, handlers, logger, overflow="block", block_timeout=0.01)
    for i in range(12):
        logger.info(f"m-{i}")
    assert dropped(registry, "loki", "buffer_full") == 2   # nobody made room within block_timeout
    release.set()
    assert handler.flush(10)
    assert len(server.messages()) == 11


def test_block_is_backpressure_when_the_backend_recovers(servers, handlers, logger, registry):
    server, handler, release = pinned_worker(servers, handlers, logger, overflow="block", block_timeout=30)
    threading.Timer(0.2, release.set).start()
    for i in range(100):   # blocks while the buffer is full, resumes as the worker drains it
        logger.info(f"m-{i}")
    assert handler.flush(10)
    assert server.messages() == {"first-0"} | {f"m-{i}" for i in range(100)}
    assert dropped(registry, "loki") == 0


def entry(size: int) -> Entry:
    return Entry(b"", b"x" * (size - 1), 0.0)


def test_buffer_is_bounded_by_bytes_too():
    buffer = RecordBuffer(max_records=100, max_bytes=250, batch_records=10, batch_bytes=1000)
    assert buffer.put(entry(100)) == (True, 0)
    assert buffer.put(entry(100)) == (True, 0)
    assert buffer.put(entry(100)) == (False, 0)
    assert len(buffer) == 2


def test_drop_oldest_evicts_as_many_as_needed_for_a_big_record():
    buffer = RecordBuffer(max_records=100, max_bytes=300, policy="drop_oldest", batch_records=10,
                          batch_bytes=1000)
    for _ in range(3):
        buffer.put(entry(100))
    assert buffer.put(entry(250)) == (True, 3)
    assert buffer.settled == 3 and buffer.accepted == 4


def test_take_respects_batch_limits_but_never_starves_a_big_record():
    buffer = RecordBuffer(max_records=100, max_bytes=10_000, batch_records=10, batch_bytes=1000)
    for size in (600, 600, 600):
        buffer.put(entry(size))
    assert len(buffer.take(10, 1000)) == 1
    assert len(buffer.take(10, 500)) == 1        # bigger than max_bytes, still taken alone
    assert buffer.take(10, 500, strict=True) == []


def test_closed_buffer_refuses_records():
    buffer = RecordBuffer(max_records=10, max_bytes=1000, batch_records=10, batch_bytes=1000)
    buffer.close()
    assert buffer.put(entry(10)) == (False, 0)


def test_unknown_policy_is_a_definition_error():
    with pytest.raises(ValueError, match="overflow"):
        RecordBuffer(max_records=10, max_bytes=1000, policy="drop_random", batch_records=10, batch_bytes=1000)
