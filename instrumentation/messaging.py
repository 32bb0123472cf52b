"""Carry the trace and the interaction id through a queue, and measure it.

A message's headers (any ``dict[str, str]`` the queue can store next to the body) take
the W3C ``traceparent``/``tracestate`` of the publishing span, the request's
``x-fapi-interaction-id`` and the publish time. The consumer continues the same trace,
logs under the same interaction id, and the publish-to-consume latency is observed::

    from ofsre.instrumentation.messaging import QueueTelemetry, inject_headers

    telemetry = QueueTelemetry("payments", queue="pix-settlement", backend="sqs")

    # producer
    with telemetry.publish_span():
        headers = inject_headers()              # captures the PRODUCER span's context
        await queue.send(body, headers=headers)
    telemetry.published()

    # consumer
    async for message in queue:
        with telemetry.consume(message.headers) as span:   # CONSUMER span, child of the producer
            await settle(message.body)                      # an exception counts failed{outcome="error"}
        # to nack without raising, call telemetry.failed("nack") inside the block

Metrics (names in :mod:`ofsre.instrumentation.semconv`): ``QUEUE_PUBLISHED``,
``QUEUE_CONSUMED``, ``QUEUE_FAILED`` (``outcome`` is one of :data:`OUTCOMES`, anything
else becomes ``other``), ``QUEUE_PROCESSING_DURATION``, ``QUEUE_LATENCY``. Spans follow
the OpenTelemetry messaging conventions (``messaging.system`` = backend,
``messaging.destination.name`` = queue, ``messaging.operation.type`` = ``send``/``process``).

Telemetry never breaks the queue: any error inside this module is swallowed and counted
in ``ofsre_telemetry_errors_total{component="messaging"}``, in the ``registry=`` of the
:class:`QueueTelemetry` or of the ``inject_headers``/``extract_context`` call (the global
one by default); the consumer's own exception is always re-raised unchanged.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry

from . import semconv
from .context import INTERACTION_ID_HEADER, interaction_id, use_interaction_id
from .metrics import count_telemetry_error, counter, histogram

__all__ = ["PUBLISHED_AT_HEADER", "OUTCOMES", "inject_headers", "extract_context", "QueueTelemetry"]

PUBLISHED_AT_HEADER = "ofsre-published-at"
OUTCOMES = frozenset({"nack", "retry", "dead_letter", "error", "timeout", "rejected"})
_OTHER_OUTCOME = "other"
_COMPONENT = "messaging"

Headers = Mapping[str, Any] | Iterable[tuple[str, Any]]


def inject_headers(headers: dict[str, str] | None = None, *,
                   registry: CollectorRegistry | None = REGISTRY) -> dict[str, str]:
    """Add ``traceparent``/``tracestate``, ``x-fapi-interaction-id`` and ``ofsre-published-at`` to
    ``headers``.

    Mutates and returns ``headers`` (a new dict when None). An interaction id the caller
    already put in ``headers`` is kept. A failure is counted in ``registry``.
    """
    carrier = headers if headers is not None else {}
    try:
        propagate.inject(carrier)
        current = interaction_id()
        if current is not None:
            carrier.setdefault(INTERACTION_ID_HEADER, current)
        carrier[PUBLISHED_AT_HEADER] = f"{time.time():.6f}"
    except Exception:  # noqa: BLE001 - publishing must go on without trace headers
        count_telemetry_error(_COMPONENT, registry)
    return carrier


def _as_str_dict(headers: Headers | None) -> dict[str, str]:
    """Headers as a lowercase ``str -> str`` dict. Accepts Kafka-style ``[(key, bytes)]`` too."""
    if not headers:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for key, value in pairs:
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", "replace")
        if isinstance(key, str) and isinstance(value, str):
            out[key.lower()] = value
    return out


def extract_context(headers: Headers | None, *,
                    registry: CollectorRegistry | None = REGISTRY) -> otel_context.Context:
    """The OpenTelemetry context the publisher injected into ``headers`` (empty when none; a failure
    is counted in ``registry``)."""
    try:
        return propagate.extract(_as_str_dict(headers))
    except Exception:  # noqa: BLE001
        count_telemetry_error(_COMPONENT, registry)
        return otel_context.Context()


class _Delivery:
    """Outcome of the message being consumed, so ``failed()`` inside ``consume()`` is not also counted
    consumed."""

    __slots__ = ("owner", "failed", "span")

    def __init__(self, owner: QueueTelemetry, span: Span) -> None:
        self.owner, self.failed, self.span = owner, False, span


_delivery: contextvars.ContextVar[_Delivery | None] = contextvars.ContextVar("ofsre_queue_delivery",
                                                                             default=None)


class QueueTelemetry:
    """Metrics and spans for one queue as seen by one service (see the module docstring).

    Create one per (service, queue) at startup and keep it: the metric children are
    resolved once here, so the per-message cost is a few increments.
    """

    def __init__(self, service: str, queue: str, backend: str, registry: CollectorRegistry | None = REGISTRY,
                 tracer_provider: TracerProvider | None = None) -> None:
        self.service, self.queue, self.backend = service, queue, backend
        self._registry = registry
        labels = {"service": service, "queue": queue, "backend": backend}
        self._published = counter(semconv.QUEUE_PUBLISHED, registry).labels(**labels)
        self._consumed = counter(semconv.QUEUE_CONSUMED, registry).labels(**labels)
        self._processing = histogram(semconv.QUEUE_PROCESSING_DURATION, registry).labels(**labels)
        self._latency = histogram(semconv.QUEUE_LATENCY, registry).labels(**labels)
        failed = counter(semconv.QUEUE_FAILED, registry)
        self._failed = {outcome: failed.labels(outcome=outcome, **labels)
                        for outcome in (*OUTCOMES, _OTHER_OUTCOME)}
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._attributes = {"messaging.system": backend, "messaging.destination.name": queue}

    def _error(self) -> None:
        count_telemetry_error(_COMPONENT, self._registry)

    def published(self, n: int = 1) -> None:
        """Count ``n`` messages handed to the broker."""
        try:
            self._published.inc(n)
        except Exception:  # noqa: BLE001
            self._error()

    def failed(self, outcome: str) -> None:
        """Count one message whose processing failed (``nack``, ``retry``, ``dead_letter``, ``error``…).

        Called inside :meth:`consume`, the message is not also counted as consumed and the
        consumer span is marked as an error.
        """
        try:
            self._failed.get(outcome, self._failed[_OTHER_OUTCOME]).inc()
            delivery = _delivery.get()
            if delivery is not None and delivery.owner is self and not delivery.failed:
                delivery.failed = True
                delivery.span.set_status(Status(StatusCode.ERROR, f"message {outcome}"))
        except Exception:  # noqa: BLE001
            self._error()

    def _span(self, name: str, kind: SpanKind, operation: str,
              parent: otel_context.Context | None = None) -> AbstractContextManager[Span]:
        """Start a span and make it current; a failing tracer gives a non-recording span instead."""
        try:
            span = self._tracer.start_span(
                name, context=parent, kind=kind,
                attributes={**self._attributes, "messaging.operation.type": operation,
                            "messaging.operation.name": operation})
        except Exception:  # noqa: BLE001
            self._error()
            span = trace.INVALID_SPAN
        # Ends the span on exit and records an exception escaping the block as an error.
        return trace.use_span(span, end_on_exit=True)

    def publish_span(self) -> AbstractContextManager[Span]:
        """A PRODUCER span around publishing; ``inject_headers()`` inside it carries this span's context.

        Use it as ``with telemetry.publish_span() as span:``. It does not count the message:
        call :meth:`published` once the broker accepted it.
        """
        return self._span(f"send {self.queue}", SpanKind.PRODUCER, "send")

    def _observe_latency(self, headers: dict[str, str]) -> None:
        raw = headers.get(PUBLISHED_AT_HEADER)
        if raw is None:
            return
        try:
            # Clocks of publisher and consumer hosts may disagree: a negative wait counts as 0.
            self._latency.observe(max(0.0, time.time() - float(raw)))
        except Exception:  # noqa: BLE001 - a malformed header from another producer
            self._error()

    @contextmanager
    def consume(self, headers: Headers | None) -> Iterator[Span]:
        """Process one message under a CONSUMER span continuing the producer's trace.

        Inside the block the interaction id from the headers is current (for logs); on
        normal exit the message counts as consumed, on an exception as
        ``failed(outcome="error")`` and the exception propagates. Cancellation
        (``BaseException``) propagates without counting either.
        """
        start = time.perf_counter()
        try:
            carrier = _as_str_dict(headers)
            parent = propagate.extract(carrier)
            self._observe_latency(carrier)
        except Exception:  # noqa: BLE001
            self._error()
            carrier, parent = {}, otel_context.Context()
        with self._span(f"process {self.queue}", SpanKind.CONSUMER, "process", parent) as span, \
                use_interaction_id(carrier.get(INTERACTION_ID_HEADER)):
            delivery = _Delivery(self, span)
            token = _delivery.set(delivery)
            try:
                yield span
            except Exception:
                if not delivery.failed:
                    self.failed("error")
                raise
            else:
                if not delivery.failed:
                    self._count_consumed()
            finally:
                _delivery.reset(token)
                self._observe_processing(time.perf_counter() - start)

    def _count_consumed(self) -> None:
        try:
            self._consumed.inc()
        except Exception:  # noqa: BLE001
            self._error()

    def _observe_processing(self, seconds: float) -> None:
        try:
            self._processing.observe(seconds)
        except Exception:  # noqa: BLE001
            self._error()
