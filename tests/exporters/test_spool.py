"""The on-disk spool: at-least-once delivery across restarts, damaged files tolerated.

Unit tests drive :class:`ofsre.exporters._spool.Spool` directly (including a Hypothesis
model test, the way Vector tests its disk buffer); the end-to-end tests run real
processes against the fake Loki (a local server speaking Loki's push API), one of them
killed with SIGKILL while a batch is in flight.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ofsre.exporters._buffer import Entry
from ofsre.exporters._spool import Spool
from ofsre.instrumentation import semconv

from .exporter_fakes import Reply, dropped, sample, wait_until


def entries(*names: str) -> list[Entry]:
    return [Entry(b"key", name.encode(), 1.0) for name in names]


def bodies(batch: list[Entry]) -> list[str]:
    return [e.body.decode() for e in batch]


def read_all(spool: Spool) -> list[str]:
    out = []
    while True:
        batch, position = spool.read(1000, 1 << 20)
        if not batch:
            return out
        out += bodies(batch)
        spool.ack(position, len(batch))


def segments(spool: Spool) -> list:
    return sorted(spool.directory.glob("*.seg"))


def test_append_read_ack_and_resume_after_a_clean_restart(tmp_path):
    spool = Spool.claim(tmp_path, max_bytes=1 << 20)
    spool.append(entries("a", "b", "c"))
    batch, position = spool.read(2, 1 << 20)
    assert bodies(batch) == ["a", "b"] and batch[0].key == b"key" and batch[0].created == 1.0
    spool.ack(position, 2)
    assert spool.pending == 1
    spool.close()

    again = Spool.claim(tmp_path, max_bytes=1 << 20)
    assert again.directory == spool.directory and again.pending == 1
    assert read_all(again) == ["c"]
    again.close()


def crashed_with(tmp_path, *names: str):
    """A spool that got ``names`` appended (and sent, never acknowledged), then its process died."""
    spool = Spool.claim(tmp_path, max_bytes=1 << 20)
    spool.append(entries(*names))
    spool.read(10, 1 << 20)
    path = segments(spool)[-1]
    spool.abandon()                  # no clean close
    return path


def test_unacknowledged_records_survive_a_crash(tmp_path):
    crashed_with(tmp_path, "a", "b")
    again = Spool.claim(tmp_path, max_bytes=1 << 20)
    assert again.pending == 2 and read_all(again) == ["a", "b"]
    again.close()


def test_a_torn_tail_is_skipped_and_counted_once(tmp_path):
    path = crashed_with(tmp_path, "a", "b", "c")
    os.truncate(path, path.stat().st_size - 2)   # killed in the middle of writing "c"
    again = Spool.claim(tmp_path, max_bytes=1 << 20)
    assert again.pending == 2
    assert read_all(again) == ["a", "b"]
    assert again.damaged == 1
    again.append(entries("d"))                   # new records go to a new segment, readable
    assert read_all(again) == ["d"]
    again.close()


def test_a_corrupted_frame_ends_its_segment_but_not_the_spool(tmp_path):
    first = crashed_with(tmp_path, "aaaa", "bbbb", "cccc")
    data = bytearray(first.read_bytes())
    data[data.index(b"bbbb")] ^= 0xFF            # a flipped bit: the checksum no longer matches
    first.write_bytes(bytes(data))
    again = Spool.claim(tmp_path, max_bytes=1 << 20)
    again.append(entries("dddd"))
    assert read_all(again) == ["aaaa", "dddd"]
    assert again.damaged == 1
    again.close()


def test_segments_roll_over_and_are_deleted_once_acknowledged(tmp_path):
    spool = Spool.claim(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    for i in range(10):
        spool.append(entries(f"record-{i:02d}" * 3))
    assert len(segments(spool)) > 3
    assert read_all(spool) == [f"record-{i:02d}" * 3 for i in range(10)]
    assert len(segments(spool)) == 1             # only the segment being written remains
    spool.close()


def test_free_bytes_shrink_and_grow(tmp_path):
    spool = Spool.claim(tmp_path, max_bytes=1000, segment_bytes=100)
    spool.append(entries("x" * 200))
    assert spool.free_bytes() < 800
    spool.append(entries("y" * 10))              # rolls over: the first segment can now be deleted
    read_all(spool)
    assert spool.free_bytes() > 900
    spool.close()


def test_each_live_process_claims_its_own_directory(tmp_path):
    first = Spool.claim(tmp_path, max_bytes=1 << 20)
    second = Spool.claim(tmp_path, max_bytes=1 << 20)
    assert first.directory != second.directory
    first.close()
    third = Spool.claim(tmp_path, max_bytes=1 << 20)
    assert third.directory == first.directory    # a free directory is adopted, not a new one made
    second.close()
    third.close()


class SpoolModel(RuleBasedStateMachine):
    """The spool behaves like a FIFO of unacknowledged records, across clean and crashing restarts."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile
        self.root = tempfile.mkdtemp(prefix="ofsre-spool-model-")
        self.spool = Spool.claim(self.root, max_bytes=1 << 20, segment_bytes=64)
        self.model: list[str] = []
        self.counter = 0

    @rule(count=st.integers(1, 5))
    def append(self, count):
        names = [f"r{self.counter + i}" for i in range(count)]
        self.counter += count
        self.spool.append(entries(*names))
        self.model += names

    @rule(limit=st.integers(1, 4), ack=st.booleans())
    def read(self, limit, ack):
        batch, position = self.spool.read(limit, 1 << 20)
        assert bodies(batch) == self.model[:len(batch)]
        assert len(batch) <= limit and (bool(batch) == bool(self.model))
        if ack:
            self.spool.ack(position, len(batch))
            del self.model[:len(batch)]

    @rule(crash=st.booleans())
    def restart(self, crash):
        self.spool.abandon() if crash else self.spool.close()
        self.spool = Spool.claim(self.root, max_bytes=1 << 20, segment_bytes=64)

    @invariant()
    def pending_matches(self):
        assert self.spool.pending == len(self.model)

    def teardown(self):
        self.spool.close()


TestSpoolModel = SpoolModel.TestCase
TestSpoolModel.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)


# --- the spool under a handler ---------------------------------------------------------------------

def spooled_while_down(servers, handlers, logger, tmp_path, count):
    """A handler with a spool whose backend is down, after ``count`` records reached the disk."""
    server = servers("loki")
    server.stop()
    handler = handlers("loki", server, spool_dir=str(tmp_path))
    logger.addHandler(handler)
    for i in range(count):
        logger.info(f"m-{i}")
    assert wait_until(lambda: handler.stats()["spooled"] == count)
    return server, handler


def test_backend_down_records_wait_on_disk_and_are_delivered_later(servers, handlers, logger, registry,
                                                                   tmp_path):
    server, handler = spooled_while_down(servers, handlers, logger, tmp_path, 50)
    assert handler.stats()["queued"] == 0        # out of memory, on disk
    server.start()
    assert handler.flush(10)
    assert server.messages() == {f"m-{i}" for i in range(50)}
    assert handler.stats()["spooled"] == 0
    assert dropped(registry, "loki") == 0


def test_close_with_the_backend_down_keeps_records_for_the_next_handler(servers, handlers, logger, registry,
                                                                       tmp_path):
    server, first = spooled_while_down(servers, handlers, logger, tmp_path, 20)
    first.close(timeout=0.2)
    assert wait_until(lambda: not first._shipper._thread.is_alive())
    assert dropped(registry, "loki") == 0        # nothing lost: it is all on disk
    server.start()
    second = handlers("loki", server, spool_dir=str(tmp_path))
    assert second.flush(10)
    assert server.messages() == {f"m-{i}" for i in range(20)}
    assert sample(registry, semconv.LOG_RECORDS_SHIPPED, backend="loki") == 20


CHILD = """
import logging, sys, time
from ofsre.exporters.loki import LokiHandler
url, spool, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
handler = LokiHandler(url, service="payments", spool_dir=spool, batch_wait=0.5,
                      backoff_initial=0.05, backoff_max=0.2)
log = logging.getLogger("app"); log.addHandler(handler); log.setLevel(logging.INFO)
if mode == "first":
    for i in range(count):
        log.info(f"r-{i}")
    while handler.stats()["spooled"] < count:
        time.sleep(0.01)
    print("spooled", flush=True)
    time.sleep(120)   # killed before this ends
else:
    delivered = handler.flush(20)
    stats = handler.stats()
    print("flushed", delivered, stats["shipped"], stats["spooled"], flush=True)
"""


def test_a_process_killed_mid_flight_has_its_records_sent_after_restart(servers, tmp_path):
    server = servers("loki")
    release = threading.Event()
    server.respond(Reply(503, hang=release))     # the first batch is in flight when the kill comes
    args = [server.url, str(tmp_path), "first", "200"]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "spooled"
        assert wait_until(lambda: not server.script)   # the server is holding the request
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        release.set()
    assert server.messages() == set()

    args[2] = "second"
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["flushed", "True", "200", "0"]
    assert server.messages() == {f"r-{i}" for i in range(200)}
    assert server.errors == []


@pytest.mark.parametrize("value", ["none", "inf"])
def test_spool_defaults_to_retrying_forever(tmp_path, value, monkeypatch):
    from ofsre.exporters._options import resolve_options
    from ofsre.exporters.loki import LOKI_LIMITS
    assert resolve_options(LOKI_LIMITS, spool_dir=str(tmp_path)).max_retry_time is None
    assert resolve_options(LOKI_LIMITS).max_retry_time == 300.0
    monkeypatch.setenv("OFSRE_LOG_RETRY_TIME", value)
    assert resolve_options(LOKI_LIMITS).max_retry_time is None


def test_damaged_leftovers_are_counted_and_the_rest_delivered(servers, handlers, registry, tmp_path):
    stream = b'{"service":"payments","level":"info"}'
    spool = Spool.claim(tmp_path / "loki", max_bytes=1 << 20)   # what a killed LokiHandler left
    spool.append([Entry(stream, f'["{time.time_ns()}","{{\\"message\\":\\"left-{i}\\"}}"]'.encode(),
                        time.time()) for i in range(2)])
    path = segments(spool)[-1]
    spool.abandon()
    os.truncate(path, path.stat().st_size - 3)   # the second frame is torn
    server = servers("loki")
    handler = handlers("loki", server, spool_dir=str(tmp_path))
    assert handler.flush(10)
    assert server.errors == []
    assert server.messages() == {"left-0"}
    # The damage is found when reading reaches it, just after the good record went out.
    assert wait_until(lambda: dropped(registry, "loki", "spool_corrupt") == 1)


def test_an_unusable_spool_directory_degrades_to_memory_only(servers, handlers, logger, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    server = servers("loki")
    handler = handlers("loki", server, spool_dir=str(blocker))
    logger.addHandler(handler)
    logger.info("still shipped")
    assert handler.flush(10)
    assert server.messages() == {"still shipped"}
    assert handler.stats()["spooled"] == 0
