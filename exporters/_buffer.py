"""The bounded in-memory buffer between the application threads and a shipper's worker thread.

The application thread calls :meth:`RecordBuffer.put` (O(1), one short lock) with a record
as captured by the logging call (:mod:`._capture`); the worker calls
:meth:`RecordBuffer.wait_for_batch` then :meth:`RecordBuffer.take`, which *encodes* the
records it is about to hand out (the buffer's ``encode`` function: redaction and
serialisation, see :mod:`._core`) without holding the lock, so a logging call never waits
for an encoding. Until then a record's ``size`` is an estimate; once encoded, its exact size
replaces the estimate in the byte count. An item that is already an :class:`Entry` (no
``encode`` given) is stored as it is.

The buffer is bounded twice, by records and by bytes, and what happens when it is full is
the *overflow policy*:

``drop_newest`` (default)
    the new record is refused. Cheapest, and during a long outage it keeps the records
    from the start of the incident, which usually say what went wrong.
``drop_oldest``
    the oldest records are evicted until the new one fits (OpenTelemetry's choice). The few
    records the worker is encoding at that moment cannot be evicted.
``block``
    the caller waits up to ``block_timeout`` seconds for room, then the record is refused.
    Backpressure for batch jobs that prefer slowing down to losing logs; never the default.

With a disk spool (``spill`` on, set by the shipper while its spool has room) a full buffer
overflows to disk instead: ``put`` wakes the worker, which moves the buffer to the spool in
batch-sized chunks, and waits for room (at most :data:`SPILL_TIMEOUT` seconds: the worker
encodes and writes; there is no network on that path). The overflow policy applies only
once the spool is full too. The worker is also woken as soon as the buffer is half full, so a
burst starts going to disk before the buffer is full at all.

Every refusal or eviction is reported to the caller of ``put`` so it can be counted; a
record that ``encode`` refuses (it returns ``None`` after counting why) is settled.

The buffer also keeps the two counters :meth:`wait_settled` uses to implement ``flush()``:
``accepted`` (records that entered) and ``settled`` (records delivered or dropped after
entering). Records leave in FIFO order, so "everything accepted before the flush call is
settled" is simply ``settled >= accepted-at-call-time``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

__all__ = ["Entry", "RecordBuffer", "OVERFLOW_POLICIES", "DROP_NEWEST", "DROP_OLDEST", "BLOCK",
           "SPILL_TIMEOUT"]

DROP_NEWEST, DROP_OLDEST, BLOCK = "drop_newest", "drop_oldest", "block"
OVERFLOW_POLICIES = (DROP_NEWEST, DROP_OLDEST, BLOCK)
# Longest a log call waits for the worker to move a full buffer to the disk spool. Encoding
# and writing a chunk takes milliseconds; this bounds the wait if the disk itself stalls.
SPILL_TIMEOUT = 5.0


def linger_wait(condition: threading.Condition, done: Callable[[], bool], pending: Callable[[], bool],
                linger: float) -> None:
    """Wait on ``condition`` (its lock held) until ``done()``, or until ``linger`` seconds have passed
    since ``pending()`` (something waiting to go) became true; with nothing pending, wait unbounded."""
    deadline = None
    while not done():
        if not pending():
            deadline = None
            condition.wait()
            continue
        now = time.monotonic()
        if deadline is None:
            deadline = now + linger
        if now >= deadline:
            return
        condition.wait(deadline - now)


class Entry(NamedTuple):
    """One log record, already formatted, redacted and encoded for its backend."""

    key: bytes       # grouping key: Loki's stream labels as JSON; empty for the other backends
    body: bytes      # the record as the backend wants it (a Loki value, a Datadog item, an NDJSON pair)
    created: float   # record.created (unix seconds), for the backends' maximum record age

    @property
    def size(self) -> int:
        """Bytes this record adds to a request body (the 1 is its separator: a comma or newline)."""
        return len(self.key) + len(self.body) + 1


class RecordBuffer:
    """A FIFO bounded by ``max_records`` and ``max_bytes`` that hands out :class:`Entry`; thread-safe.

    ``encode(item) -> Entry | None`` turns a captured record into an entry on the worker
    thread (``None``: refused, already counted by ``encode``); without it, items must be
    entries already.
    """

    def __init__(self, *, max_records: int, max_bytes: int, policy: str = DROP_NEWEST,
                 block_timeout: float = 0.0, batch_records: int, batch_bytes: int,
                 encode: Callable[[Any], Entry | None] | None = None) -> None:
        if policy not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow policy must be one of {OVERFLOW_POLICIES}, not {policy!r}")
        self.max_records, self.max_bytes = max_records, max_bytes
        self.policy, self.block_timeout = policy, block_timeout
        self._batch_records, self._batch_bytes = batch_records, batch_bytes
        self._encode = encode
        self._raw: deque[Any] = deque()       # as put by the app threads, sized by estimate
        self._ready: deque[Entry] = deque()   # encoded by the worker (older than every raw item)
        self._count = 0    # records in either deque or being encoded
        self._bytes = 0    # their sizes: exact once encoded, estimated before
        lock = threading.Lock()
        self._lock = lock
        self._work = threading.Condition(lock)      # the worker waits here for a batch
        self._space = threading.Condition(lock)     # producers under the "block" policy wait here
        self._settled_cv = threading.Condition(lock)  # flush() waits here
        self.accepted = 0
        self.settled = 0
        self._flush_requested = False
        self._stopping = False
        self._closed = False
        self.spill = False           # a spool has room: overflow goes to disk (set by the shipper)
        self._spill_wanted = False   # a put() is waiting for the worker to spill

    # --- application side -------------------------------------------------------------------

    def put(self, item: Any) -> tuple[bool, int]:
        """Append ``item`` (anything with a ``size``); return ``(accepted, evicted)``.

        ``accepted`` is False when the item was refused (full buffer under ``drop_newest``,
        ``block`` timed out, or the buffer is closed); ``evicted`` counts older records
        dropped to make room under ``drop_oldest``.
        """
        size = item.size
        evicted = 0
        with self._lock:
            if self._closed or size > self.max_bytes:
                return False, 0
            if self._count >= self.max_records or self._bytes + size > self.max_bytes:
                if self.spill and self._wait_for_spill(size):
                    pass
                elif self.policy == DROP_NEWEST:
                    return False, 0
                elif self.policy == DROP_OLDEST:
                    evicted = self._evict_for(size)
                    if not self._fits(size):   # what is left is being encoded: cannot go
                        return False, evicted
                elif not self._wait_for_space(size):
                    return False, 0
            self._raw.append(item)
            self._bytes += size
            self._count += 1
            self.accepted += 1
            if self._wakes_worker(self._count - 1, self._bytes - size):
                self._work.notify()
        return True, evicted

    def put_many(self, items: Sequence[Any]) -> tuple[int, int]:
        """:meth:`put` each of ``items`` in order; return ``(refused, evicted)``.

        When they all fit, under one lock, waking the worker once if any single put would have.
        """
        count = len(items)
        if not count:
            return 0, 0
        sizes = sum(item.size for item in items)
        with self._lock:
            before, before_bytes = self._count, self._bytes
            if (not self._closed and before + count <= self.max_records
                    and before_bytes + sizes <= self.max_bytes):
                self._raw.extend(items)
                self._count, self._bytes = before + count, before_bytes + sizes
                self.accepted += count
                if self._wakes_worker(before, before_bytes):
                    self._work.notify()
                return 0, 0
        refused = evicted = 0
        for item in items:   # near or at a bound: each one its own way, as put() decides
            accepted, dropped = self.put(item)
            refused += not accepted
            evicted += dropped
        return refused, evicted

    def _wakes_worker(self, count_before: int, bytes_before: int) -> bool:
        """Whether what was just added (the buffer held ``count_before`` records of ``bytes_before``
        bytes) gives the worker something new to decide on: the first record (its linger timer
        starts), a full batch (it should send now), or half the buffer (with a spool, time to move it
        to disk). Only a bound crossed wakes it, so a burst of puts wakes it a few times, not per put."""
        return (count_before == 0 or count_before < self._batch_records <= self._count
                or bytes_before < self._batch_bytes <= self._bytes
                or count_before <= self.max_records // 2 < self._count
                or bytes_before < self.max_bytes // 2 <= self._bytes)

    def under_pressure(self) -> bool:
        """At least half full, or a producer waits for a spill."""
        return (self._spill_wanted or self._count > self.max_records // 2
                or self._bytes >= self.max_bytes // 2)

    def wait_for_pressure(self, timeout: float) -> None:
        """Worker: sleep up to ``timeout`` s, waking early when the buffer needs to go to disk or on stop."""
        with self._lock:
            if not (self._stopping or self.under_pressure()):
                self._work.wait(timeout)

    def _wait_for_spill(self, size: int) -> bool:
        """Under the lock: wake the worker to spill and wait for room; False if it did not come."""
        deadline = time.monotonic() + SPILL_TIMEOUT
        while not self._fits(size):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed or not self.spill:
                return False
            self._spill_wanted = True
            self._work.notify_all()
            self._space.wait(min(remaining, 0.05))
        return True

    def _fits(self, size: int) -> bool:
        return self._count < self.max_records and self._bytes + size <= self.max_bytes

    def _evict_for(self, size: int) -> int:
        evicted = 0
        for items in (self._ready, self._raw):   # oldest first
            while items and not self._fits(size):
                self._bytes -= items.popleft().size
                self._count -= 1
                evicted += 1
        self.settled += evicted
        self._settled_cv.notify_all()
        return evicted

    def _wait_for_space(self, size: int) -> bool:
        deadline = time.monotonic() + self.block_timeout
        while not self._fits(size):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return False
            self._space.wait(remaining)
        return True

    def close(self) -> None:
        """Refuse every later ``put`` (records logged after ``close()``)."""
        with self._lock:
            self._closed = True
            self._space.notify_all()

    # --- worker side ------------------------------------------------------------------------

    def wait_for_batch(self, linger: float) -> bool:
        """Block until a full batch is ready, the oldest record waited ``linger`` s, a flush, or stop.

        Returns True when everything should go now (flush or stop), False for a timed batch.
        """
        with self._lock:
            linger_wait(self._work, lambda: self._stopping or self._flush_requested or self.batch_ready(),
                        lambda: self._count > 0, linger)
            drain = self._stopping or self._flush_requested
            self._flush_requested = False
            return drain

    def batch_ready(self) -> bool:
        """A full batch (by records, or by bytes as far as known) is waiting."""
        return self._count >= self._batch_records or self._bytes >= self._batch_bytes

    def _prepare(self, wanted: int) -> None:
        """Encode raw items until ``wanted`` entries are ready (or none are left); worker thread only."""
        with self._lock:
            missing = wanted - len(self._ready)
            if missing <= 0 or not self._raw:
                return
            raw: Sequence[Any]
            if missing >= len(self._raw):
                raw, self._raw = self._raw, deque()
            else:
                raw = [self._raw.popleft() for _ in range(missing)]
            if self._encode is None:   # entries already, sized exactly
                self._ready.extend(raw)
                return
        encode = self._encode
        # Outside the lock: the app threads keep logging while the worker encodes.
        done = [(item if encode is None else encode(item), item.size) for item in raw]
        with self._lock:
            refused = 0
            for entry, estimate in done:
                if entry is None:
                    refused += 1
                    self._bytes -= estimate
                else:
                    self._bytes += entry.size - estimate
                    self._ready.append(entry)
            if refused:
                self._count -= refused
                self.settled += refused
                self._settled_cv.notify_all()
                self._space.notify_all()

    def take(self, max_records: int, max_bytes: int, *, strict: bool = False) -> list[Entry]:
        """Remove and return the oldest entries, at most ``max_records`` and ``max_bytes`` of them.

        Encodes raw records first as needed. Unless ``strict``, returns at least one entry
        when one is ready (a single entry is never larger than a batch: the encoder enforces
        the per-record limit).
        """
        self._prepare(max_records)
        taken: list[Entry] = []
        total = 0
        with self._lock:
            items = self._ready
            while items and len(taken) < max_records:
                size = items[0].size
                if total + size > max_bytes and (taken or strict):
                    break
                taken.append(items.popleft())
                total += size
            self._bytes -= total
            self._count -= len(taken)
            if taken:
                self._spill_wanted = False
                self._space.notify_all()   # producers waiting under "block" or for a spill
        return taken

    def discard(self) -> int:
        """Remove every record without encoding it; return how many, settled. Worker thread only."""
        with self._lock:
            count = self._count   # on the worker thread, nothing is being encoded
            self._ready.clear()
            self._raw.clear()
            self._count = self._bytes = 0
            self.settled += count
            self._settled_cv.notify_all()
        return count

    def settle(self, count: int) -> None:
        """Record that ``count`` accepted records were delivered or dropped."""
        if count:
            with self._lock:
                self.settled += count
                self._settled_cv.notify_all()

    def add_carried_over(self, count: int) -> None:
        """Count records found in the disk spool at start as accepted (so flush() waits for them)."""
        with self._lock:
            self.accepted += count

    def stop(self) -> None:
        """Ask the worker to finish: wakes it from :meth:`wait_for_batch`."""
        with self._lock:
            self._stopping = True
            self._work.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # --- flush ------------------------------------------------------------------------------

    def request_flush(self) -> int:
        """Wake the worker to send everything now; return the ``settled`` target to wait for."""
        with self._lock:
            self._flush_requested = True
            self._work.notify_all()
            return self.accepted

    def wait_settled(self, target: int, timeout: float) -> bool:
        """Wait until ``settled >= target``; False if ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.settled < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._settled_cv.wait(remaining)
            return True

    def __len__(self) -> int:
        return self._count
