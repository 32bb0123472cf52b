"""What every backend shares: the message, the subscription loop, telemetry, dead-lettering.

A backend subclasses :class:`Queue` and implements a handful of primitives (``_send``,
``_fetch``, ``_ack``, ``_retry``, ``_dead_letter``, ``_release`` plus ``_ping``, ``depth``,
``dead_letters`` and ``_close``; the public ``ping`` adds the closed check). Everything a caller sees (trace
propagation, metrics, the attempt limit, backoff when the queue is empty, graceful stop on ``close()``) lives
here once, so the four backends behave the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prometheus_client import REGISTRY, CollectorRegistry

from ofsre.instrumentation.messaging import QueueTelemetry, inject_headers
from ofsre.instrumentation.metrics import count_telemetry_error

from ._config import QueueConfig

__all__ = ["Queue", "Message", "Subscription", "DeadLetter", "QueueError", "UnsupportedOperation",
           "ATTEMPT_HEADER", "MESSAGE_ID_HEADER", "REASON_HEADER", "KEY_HEADER"]

_log = logging.getLogger("ofsre.platform.queue")

# Headers the queue itself adds next to the messaging helpers' traceparent/interaction id/published-at.
MESSAGE_ID_HEADER = "ofsre-message-id"   # stable id where the broker's id changes on retry (Kafka)
ATTEMPT_HEADER = "ofsre-attempt"         # deliveries so far, where the broker does not count (Kafka)
REASON_HEADER = "ofsre-dead-letter-reason"
KEY_HEADER = "ofsre-key"                 # the publish key, where the broker has no key field

# Names valid as an SQS queue, a Kafka topic and a Pub/Sub topic alike (the suffixes added stay valid).
_TOPIC = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")


class QueueError(Exception):
    """The queue cannot do what was asked (closed, or the broker refused)."""


class UnsupportedOperation(QueueError):
    """The backend has no way to answer this (see the README's table of backends)."""


@dataclass(frozen=True)
class DeadLetter:
    """A message that was dead-lettered, as :meth:`Queue.dead_letters` returns it."""

    id: str
    topic: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    attempt: int = 0
    reason: str = ""


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        raise ValueError(f"invalid topic {topic!r}: a letter, then up to 62 letters, digits, '-' or '_'")
    return topic


def decode_body(raw: str | bytes) -> tuple[Any, str | None]:
    """``(body, None)`` for a JSON object, ``(raw text, reason)`` for anything else."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else raw
    try:
        body = json.loads(text)
    except ValueError:
        return text, "body is not JSON"
    if not isinstance(body, dict):
        return body, "body is not a JSON object"
    return body, None


class Message:
    """One delivery of a message. Settle it exactly once: ``ack()``, ``nack()`` or ``dead_letter()``.

    ``body`` is the published dict, ``headers`` the carried strings (``traceparent``,
    ``x-fapi-interaction-id``…), ``attempt`` the delivery number (1 the first time),
    ``id`` the message's id (stable across redeliveries). Settling again is a no-op.
    """

    __slots__ = ("id", "topic", "group", "body", "payload", "headers", "attempt", "receipt", "invalid",
                 "_queue", "_settled", "_lock", "__weakref__")

    def __init__(self, queue: Queue, topic: str, group: str, *, id: str, raw_body: str | bytes,
                 headers: dict[str, str], attempt: int, receipt: Any = None) -> None:
        self.id, self.topic, self.group, self.headers = id, topic, group, headers
        self.attempt = max(1, int(attempt))
        self.payload = raw_body.decode("utf-8", "replace") if isinstance(raw_body, bytes) else raw_body
        self.body, self.invalid = decode_body(self.payload)  # payload: the text as published
        self.receipt = receipt  # the backend's handle: lease token, receipt handle, offset, ack id
        self._queue = queue
        self._settled = False
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<Message {self.topic}/{self.id} attempt={self.attempt} settled={self._settled}>"

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        """Processing succeeded: remove the message from the queue."""
        await self._settle(self._queue._ack(self))

    async def nack(self, requeue: bool = True) -> None:
        """Processing failed. ``requeue=True``: deliver again later (``attempt`` + 1), or
        dead-letter it when this was the last allowed attempt. ``requeue=False``: the
        message is rejected for good and dead-lettered with reason ``rejected``."""
        queue = self._queue
        if not requeue:
            await self._settle(queue._dead_letter(self, "rejected"), outcome="rejected")
        elif self.attempt >= queue.config.max_attempts:
            reason = f"max attempts ({queue.config.max_attempts}) reached"
            await self._settle(queue._dead_letter(self, reason), outcome="dead_letter")
        else:
            await self._settle(queue._retry(self, queue.config.retry_delay_seconds), outcome="nack")

    async def dead_letter(self, reason: str) -> None:
        """Give up on the message now: move it to the dead-letter queue with ``reason``."""
        await self._settle(self._queue._dead_letter(self, str(reason)[:1000]), outcome="dead_letter")

    async def _settle(self, operation: Awaitable[None], outcome: str | None = None) -> None:
        async with self._lock:
            if self._settled:
                operation.close()  # type: ignore[attr-defined]  # an un-awaited coroutine
                return
            await operation
            self._settled = True
            self._queue._in_flight.discard(self)
        if outcome is not None:
            # Inside the consumer's loop body this also marks the CONSUMER span as failed.
            self._queue.telemetry(self.topic).failed(outcome)


class Subscription:
    """``async for message in queue.subscribe(topic)`` — also an async context manager.

    While the loop body runs, the message's CONSUMER span (child of the producer's span)
    and its interaction id are current, so logs and outgoing calls continue the trace;
    the span ends when the loop asks for the next message. Use ``async with`` (or
    ``aclose()``) to hand prefetched messages back when leaving the loop early. The loop
    ends by itself when the queue is closed.

    Settle each message in the loop body (or in a task started there): metrics count a
    message as consumed when its loop iteration ends without a failed settlement.
    """

    def __init__(self, queue: Queue, topic: str, group: str) -> None:
        self._queue, self.topic, self.group = queue, check_topic(topic), group
        self._buffer: deque[Message] = deque()
        self._scope: Any = None
        self._backoff = queue.config.poll_min_seconds
        self._closed = False

    def __aiter__(self) -> Subscription:
        return self

    def __del__(self) -> None:
        # Left by ``break`` or an exception without ``async with``: end the open CONSUMER span here
        # rather than let the garbage collector close it noisily from a foreign context.
        if getattr(self, "_scope", None) is not None:
            self._end_scope()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self._end_scope(exc)
        await self.aclose()

    async def __anext__(self) -> Message:
        self._end_scope()
        while True:
            if self._closed or self._queue.closed:
                await self.aclose()
                raise StopAsyncIteration
            if not self._buffer:
                await self._fill()
                continue
            message = self._buffer.popleft()
            if await self._refuse(message):
                continue
            self._queue._in_flight.add(message)
            self._begin_scope(message)
            return message

    async def aclose(self) -> None:
        """Stop: unsettled prefetched messages go back to the queue for other consumers."""
        self._end_scope()
        self._closed = True
        await self._release_buffer()

    async def _release_buffer(self) -> None:
        if self._buffer:
            pending, self._buffer = list(self._buffer), deque()
            try:
                await self._queue._release(pending)
            except Exception:  # noqa: BLE001 - their lease expires and they are redelivered anyway
                _log.warning("could not release %d prefetched messages of %s", len(pending), self.topic,
                             exc_info=True)

    async def _fill(self) -> None:
        queue = self._queue
        wake = queue._wake_event(self.topic)
        wake.clear()  # before fetching: a publish racing the fetch sets it again and we don't sleep
        try:
            if queue.long_polls:
                fetched = await queue._until_closed(
                    queue._fetch(self.topic, self.group, queue.config.batch_size, self._backoff)) or []
            else:
                fetched = await queue._fetch(self.topic, self.group, queue.config.batch_size, 0)
        except Exception:  # noqa: BLE001 - a broker blip must not end the consumer; readiness reports it
            _log.warning("fetching from %s failed; retrying in %.2fs", self.topic, self._backoff,
                         exc_info=True)
            fetched = None
        if fetched:
            self._backoff = queue.config.poll_min_seconds
            self._buffer.extend(fetched)
            return
        if fetched is None or not queue.long_polls:  # a failed long poll returns at once: wait here
            await queue._until_closed(wake.wait(), timeout=self._backoff)
        self._backoff = min(self._backoff * 2, queue.config.poll_max_seconds)

    async def _refuse(self, message: Message) -> bool:
        """Dead-letter, without handing it out, a message past the attempt limit or unreadable."""
        limit = self._queue.config.max_attempts
        if message.invalid is None and message.attempt <= limit:
            return False
        reason = message.invalid or f"max attempts ({limit}) exceeded"
        try:
            with self._queue.telemetry(self.topic).consume(message.headers):
                await message.dead_letter(reason)
        except Exception:  # noqa: BLE001 - it stays leased, comes back and is refused again
            _log.warning("could not dead-letter %r", message, exc_info=True)
        return True

    def _begin_scope(self, message: Message) -> None:
        scope = self._queue.telemetry(self.topic).consume(message.headers)
        try:
            scope.__enter__()
        except Exception:  # noqa: BLE001 - telemetry never stops a delivery
            count_telemetry_error("queue", self._queue._registry)
            return
        self._scope = scope

    def _end_scope(self, exc: BaseException | None = None) -> None:
        scope, self._scope = self._scope, None
        if scope is None:
            return
        try:
            scope.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
        except Exception as raised:  # noqa: BLE001
            if raised is not exc:
                count_telemetry_error("queue", self._queue._registry)


class Queue(ABC):
    """The queue: ``publish``, ``subscribe``, ``ping``, ``depth``, ``dead_letters``, ``close``.

    Open one with :func:`ofsre.platform.queue.open_queue`; see the package docstring.
    """

    backend: ClassVar[str]
    long_polls: ClassVar[bool] = False  # True: _fetch itself waits up to wait_seconds for messages

    def __init__(self, config: QueueConfig, *, registry: CollectorRegistry | None = REGISTRY,
                 tracer_provider: Any = None) -> None:
        self.config = config
        self._registry, self._tracer_provider = registry, tracer_provider
        self._telemetry: dict[str, QueueTelemetry] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._closed_event = asyncio.Event()
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._in_flight: weakref.WeakSet[Message] = weakref.WeakSet()  # handed out, not yet settled

    # -- the public interface ---------------------------------------------------------------
    async def publish(self, topic: str, body: dict, *, key: str | None = None) -> str:
        """Publish ``body`` (a JSON-serialisable dict) to ``topic``; returns the message id.

        The headers carry the current trace context and interaction id. ``key`` groups
        related messages (Kafka partition key; stored alongside elsewhere).
        """
        if self.closed:
            raise QueueError("the queue is closed")
        check_topic(topic)
        if not isinstance(body, dict):
            raise TypeError(f"body must be a dict, not {type(body).__name__}")
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        telemetry = self.telemetry(topic)
        with telemetry.publish_span():
            headers = inject_headers(registry=self._registry)
            message_id = await self._send(topic, payload, key, headers)
        telemetry.published()
        if topic in self._wake:
            self._wake[topic].set()
        return message_id

    def subscribe(self, topic: str, group: str = "worker") -> Subscription:
        """Consume ``topic`` as a member of consumer ``group``: ``async for msg in queue.subscribe(t)``."""
        if self.closed:
            raise QueueError("the queue is closed")
        subscription = Subscription(self, topic, group)
        self._subscriptions.add(subscription)
        return subscription

    @property
    def closed(self) -> bool:
        return self._closed_event.is_set()

    async def close(self, timeout: float = 10.0) -> None:
        """Stop every subscription (their loops end), give messages being processed up to
        ``timeout`` seconds to be settled, then release the backend's connections.

        A message still unsettled after that is delivered again once its lease runs out.
        """
        if self.closed:
            return
        self._closed_event.set()
        for event in self._wake.values():
            event.set()
        for subscription in list(self._subscriptions):
            await subscription._release_buffer()  # while the connections are still open
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)  # shutdown only: a short poll beats wiring an event per message
        await self._close()

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ping(self) -> bool:
        """True when the queue is open and the broker answers; never raises (readiness probes
        call it, so a queue being closed for shutdown reports not-ready at once)."""
        return not self.closed and await self._ping()

    @abstractmethod
    async def _ping(self) -> bool:
        """True when the broker answers; never raises."""

    @abstractmethod
    async def depth(self, topic: str, group: str = "worker") -> int:
        """Messages waiting or in flight on ``topic`` for ``group`` (what KEDA scales on)."""

    @abstractmethod
    async def dead_letters(self, topic: str, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead-lettered messages of ``topic``, oldest first, left in place."""

    def telemetry(self, topic: str) -> QueueTelemetry:
        found = self._telemetry.get(topic)
        if found is None:
            found = self._telemetry[topic] = QueueTelemetry(
                self.config.service, topic, self.backend, self._registry, self._tracer_provider)
        return found

    # -- what a backend implements --------------------------------------------------------------
    @abstractmethod
    async def _send(self, topic: str, payload: str, key: str | None, headers: dict[str, str]) -> str:
        """Hand one message to the broker; returns its id."""

    @abstractmethod
    async def _fetch(self, topic: str, group: str, max_messages: int, wait_seconds: float) -> list[Message]:
        """Claim up to ``max_messages`` for ``group`` (each leased for ``config.lease_seconds``)."""

    @abstractmethod
    async def _ack(self, message: Message) -> None: ...

    @abstractmethod
    async def _retry(self, message: Message, delay_seconds: float) -> None:
        """Make the message deliverable again after ``delay_seconds``, counting one more attempt."""

    @abstractmethod
    async def _dead_letter(self, message: Message, reason: str) -> None: ...

    @abstractmethod
    async def _release(self, messages: Sequence[Message]) -> None:
        """Return claimed messages that were never handed to the caller."""

    @abstractmethod
    async def _close(self) -> None: ...

    # -- helpers for the subscription loop --------------------------------------------------------
    def _wake_event(self, topic: str) -> asyncio.Event:
        event = self._wake.get(topic)
        if event is None:
            event = self._wake[topic] = asyncio.Event()
        return event

    async def _until_closed(self, awaitable: Awaitable[Any], timeout: float | None = None) -> Any:
        """The awaitable's result, or None when the queue closes (or ``timeout`` passes) first."""
        task = asyncio.ensure_future(awaitable)
        closing = asyncio.ensure_future(self._closed_event.wait())
        try:
            done, _ = await asyncio.wait({task, closing}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, closing):
                pending.cancel()
        return task.result() if task in done else None
