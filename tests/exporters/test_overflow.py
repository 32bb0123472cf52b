"""Overflow policies of the bounded buffer: every record refused or evicted is counted.

The worker is pinned inside a request the fake Loki holds open, so the buffer fills
deterministically (no race with the worker taking records).
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _state(buffer: RecordBuffer) -> tuple:
    return buffer.accepted, buffer.settled, len(buffer), buffer._bytes, list(buffer._raw), list(buffer._ready)


@settings(max_examples=200, deadline=None)
@given(groups=st.lists(st.lists(st.integers(1, 120), max_size=8), max_size=8),
       policy=st.sampled_from(["drop_newest", "drop_oldest", "block"]), closed_after=st.integers(0, 8))
def test_put_many_is_put_one_after_another(groups, policy, closed_after):
    def make() -> RecordBuffer:
        return RecordBuffer(max_records=12, max_bytes=600, policy=policy, block_timeout=0.0, batch_records=5,
                            batch_bytes=300)
    one_by_one, together = make(), make()
    for index, group in enumerate(groups):
        if index == closed_after:
            one_by_one.close()
            together.close()
        items = [Entry(b"", str(i).encode() * size, 0.0) for i, size in enumerate(group)]
        results = [one_by_one.put(item) for item in items]
        assert together.put_many(items) == (sum(not ok for ok, _ in results), sum(ev for _, ev in results))
        assert _state(together) == _state(one_by_one)


def test_put_many_wakes_the_worker_for_a_full_batch():
    buffer = RecordBuffer(max_records=100, max_bytes=10_000, batch_records=5, batch_bytes=10_000)
    woke = []
    worker = threading.Thread(target=lambda: woke.append(buffer.wait_for_batch(linger=30)))
    worker.start()
    waiting = lambda: bool(buffer._work._waiters)  # noqa: E731 - the worker sits in wait_for_batch
    assert wait_until(waiting)
    buffer.put_many([entry(10)])   # the first record: its linger starts, no batch yet
    assert wait_until(waiting)
    buffer.put_many([entry(10)] * 4)
    worker.join(5)
    assert woke == [False] and len(buffer.take(10, 10_000)) == 5   # a full batch, not the 30 s linger
