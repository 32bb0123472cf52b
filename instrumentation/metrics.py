"""Create prometheus_client metrics from the specs in :mod:`ofsre.instrumentation.semconv`.

``metric(spec)`` returns the metric for a spec, creating it on first use and returning
the same object afterwards (per registry), so any module may ask for a metric without
caring who registered it first::

    from ofsre.instrumentation import semconv
    from ofsre.instrumentation.metrics import metric

    metric(semconv.QUEUE_PUBLISHED).labels(service="payments", queue="pix", backend="db").inc()

``counter``, ``gauge`` and ``histogram`` are the same, typed: they return a ``Counter``,
``Gauge`` or ``Histogram`` (a type checker sees ``.inc``/``.set``/``.observe``) and raise
``TypeError`` when the spec is of another kind.

Under ``PROMETHEUS_MULTIPROC_DIR`` gauges get their spec's ``multiprocess_mode``.

Hot paths (the ASGI middleware) update their cached children through :func:`counter_adder`
and :func:`histogram_observer`: the same stored values, without the per-call lock, label
checks and bucket loop of prometheus_client's methods. Only for one thread at a time: the
caller keeps the public methods for any other thread (see ``OfsreMiddleware._observe``).
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.samples import Exemplar

from .catalog import Catalog
from .semconv import TELEMETRY_ERRORS, MetricSpec

__all__ = ["metric", "counter", "gauge", "histogram", "count_telemetry_error", "counter_adder",
           "histogram_observer"]

_lock = threading.Lock()
# Per registry, by metric name. Weak keys: a registry that is gone takes its metrics with it
# (keying by id() would hand a new registry that reuses the id the old registry's metrics).
_created: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, MetricWrapperBase]]
_created = weakref.WeakKeyDictionary()


def metric(spec: MetricSpec, registry: CollectorRegistry | None = REGISTRY,
           catalog: Catalog | None = None) -> MetricWrapperBase:
    """The metric for ``spec`` in ``registry`` (``None``: an unregistered metric, for tests).

    A latency histogram's buckets come from ``catalog`` (default: the loaded catalog) when the
    metric is created; later calls for the same registry return that metric as it is.
    """
    if registry is None:
        return _build(spec, None, catalog)
    by_name = _created.get(registry)
    found = by_name.get(spec.name) if by_name is not None else None
    if found is not None:
        return found
    with _lock:
        by_name = _created.setdefault(registry, {})
        found = by_name.get(spec.name)
        if found is None:
            found = by_name[spec.name] = _build(spec, registry, catalog)
        return found


def counter(spec: MetricSpec, registry: CollectorRegistry | None = REGISTRY) -> Counter:
    """:func:`metric` for a counter spec."""
    return _of_kind(Counter, metric(spec, registry), spec)


def gauge(spec: MetricSpec, registry: CollectorRegistry | None = REGISTRY) -> Gauge:
    """:func:`metric` for a gauge spec."""
    return _of_kind(Gauge, metric(spec, registry), spec)


def histogram(spec: MetricSpec, registry: CollectorRegistry | None = REGISTRY,
              catalog: Catalog | None = None) -> Histogram:
    """:func:`metric` for a histogram spec (latency buckets from ``catalog``)."""
    return _of_kind(Histogram, metric(spec, registry, catalog), spec)


_M = TypeVar("_M", Counter, Gauge, Histogram)


def _of_kind(kind: type[_M], found: MetricWrapperBase, spec: MetricSpec) -> _M:
    if not isinstance(found, kind):
        raise TypeError(f"{spec.name} is a {spec.kind}, not a {kind.__name__.lower()}")
    return found


def _build(spec: MetricSpec, registry: CollectorRegistry | None,
           catalog: Catalog | None) -> MetricWrapperBase:
    labels, doc = spec.labels, spec.doc
    if spec.kind == "counter":
        return Counter(spec.name, doc, labelnames=labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, doc, labelnames=labels, registry=registry,
                     multiprocess_mode=spec.multiprocess_mode)
    if spec.kind == "histogram":
        buckets = spec.histogram_buckets(catalog) or Histogram.DEFAULT_BUCKETS
        return Histogram(spec.name, doc, labelnames=labels, registry=registry, buckets=buckets)
    raise ValueError(f"{spec.name}: unknown metric kind {spec.kind!r}")


def count_telemetry_error(component: str, registry: CollectorRegistry | None = REGISTRY) -> None:
    """Count an error swallowed inside telemetry code. Never raises."""
    try:
        counter(TELEMETRY_ERRORS, registry).labels(component=component).inc()
    except Exception:  # noqa: BLE001 - counting an error must not become one
        pass


# --- lock-free updates for one thread ------------------------------------------------------------

Update = Callable[[float, "dict[str, str] | None"], None]


def _plain(value: object) -> bool:
    """A single-process value (a float behind a mutex), not the multiprocess mmap one."""
    return type(value) is values.MutexValue and hasattr(value, "_value") and hasattr(value, "_exemplar")


def counter_adder(child: Counter) -> Update:
    """``add(amount, exemplar)`` for a counter child: a float addition, the exemplar stored as is.

    Falls back to ``child.inc`` for any other value class (multiprocess mode). The exemplar
    labels must be valid already (the caller builds them: a 32-hex ``trace_id``).
    """
    value: Any = getattr(child, "_value", None)   # prometheus_client's private value object
    if not _plain(value):
        return child.inc

    def add(amount: float, exemplar: dict[str, str] | None = None) -> None:
        value._value += amount
        if exemplar:
            value._exemplar = Exemplar(exemplar, amount, time.time())

    return add


def gauge_adder(child: Gauge) -> Callable[[float], None]:
    """``add(amount)`` for a gauge child (``-1`` to decrement); ``child.inc`` for any other value class."""
    value: Any = getattr(child, "_value", None)
    if not _plain(value):
        return child.inc

    def add(amount: float) -> None:
        value._value += amount

    return add


def _histogram_parts(child: Histogram) -> tuple[Any, list[Any], list[float]] | None:
    """(sum value, bucket values, upper bounds) of a single-process histogram child, else None."""
    total: Any = getattr(child, "_sum", None)
    buckets = list(getattr(child, "_buckets", None) or ())
    bounds = list(getattr(child, "_upper_bounds", None) or ())
    if not (_plain(total) and buckets and len(buckets) == len(bounds) and all(map(_plain, buckets))
            and bounds[-1] == float("inf")):
        return None
    return total, buckets, bounds


def histogram_observer(child: Histogram) -> Update:
    """``observe(amount, exemplar)`` for a histogram child: one bisection, two float additions."""
    parts = _histogram_parts(child)
    if parts is None:
        return child.observe
    total, buckets, bounds = parts

    def observe(amount: float, exemplar: dict[str, str] | None = None) -> None:
        total._value += amount
        bucket = buckets[bisect_left(bounds, amount)]   # the first bound >= amount, as observe() finds it
        bucket._value += 1
        if exemplar:
            bucket._exemplar = Exemplar(exemplar, amount, time.time())

    return observe


Record = Callable[[float, float, float, int], None]

# A series' exemplars (the counter's, each duration bucket's) are replaced at most this often: a
# scrape every few seconds sees one per bucket either way, and the request path builds no exemplar
# most of the time (the first sampled request of a bucket always leaves one).
EXEMPLAR_REFRESH_S = 1.0
_now = time.time


def _due_exemplars(due: list[float], index: int, trace_id: int, now: float) -> tuple[Any, Any]:
    """The exemplar labels for (the counter, duration bucket ``index``), each None unless it is due;
    ``due[index]`` / ``due[-1]`` (the counter's) move on for those that are."""
    labels = {"trace_id": format(trace_id, "032x")}
    counted = observed = None
    if now >= due[-1]:
        counted, due[-1] = labels, now + EXEMPLAR_REFRESH_S
    if now >= due[index]:
        observed, due[index] = labels, now + EXEMPLAR_REFRESH_S
    return counted, observed


def request_recorders(requests: Counter, duration: Histogram, request_size: Histogram,
                      response_size: Histogram) -> tuple[Record, Record]:
    """``(locked, lock_free)``: each ``record(seconds, request_bytes, response_bytes, trace_id)``
    counts one request in a counter child and its duration and sizes in three histogram
    children, as ``inc``/``observe`` do. A non-zero ``trace_id`` (a sampled request) is an exemplar
    for the counter and the duration bucket, each replaced at most every :data:`EXEMPLAR_REFRESH_S`.

    ``locked`` calls prometheus_client's methods; ``lock_free`` makes the same updates as
    :func:`counter_adder` and :func:`histogram_observer`, in one call, for the one thread that
    serves (it is ``locked`` too for any other value class: multiprocess mode). Both keep the same
    exemplar times, so switching from one to the other changes nothing.
    """
    d_bounds: list[float] = list(getattr(duration, "_upper_bounds", None) or (float("inf"),))
    due = [0.0] * (len(d_bounds) + 1)   # when each bucket's exemplar may be replaced; [-1]: the counter's

    def locked(seconds: float, request_bytes: float, response_bytes: float, trace_id: int) -> None:
        counted = observed = None
        if trace_id:
            now, index = _now(), bisect_left(d_bounds, seconds)
            if now >= due[index] or now >= due[-1]:
                counted, observed = _due_exemplars(due, index, trace_id, now)
        requests.inc(1, counted)
        duration.observe(seconds, observed)
        request_size.observe(request_bytes)
        response_size.observe(response_bytes)

    count: Any = getattr(requests, "_value", None)
    parts = [_histogram_parts(child) for child in (duration, request_size, response_size)]
    if not _plain(count) or None in parts:
        return locked, locked
    (d_sum, d_buckets, _), (q_sum, q_buckets, q_bounds), (r_sum, r_buckets, r_bounds) = parts  # type: ignore[misc]

    def lock_free(seconds: float, request_bytes: float, response_bytes: float, trace_id: int) -> None:
        count._value += 1
        d_sum._value += seconds
        index = bisect_left(d_bounds, seconds)
        bucket = d_buckets[index]
        bucket._value += 1
        q_sum._value += request_bytes
        q_buckets[bisect_left(q_bounds, request_bytes)]._value += 1
        r_sum._value += response_bytes
        r_buckets[bisect_left(r_bounds, response_bytes)]._value += 1
        if trace_id:
            now = _now()
            if now >= due[index] or now >= due[-1]:
                counted, observed = _due_exemplars(due, index, trace_id, now)
                if counted is not None:
                    count._exemplar = Exemplar(counted, 1, now)
                if observed is not None:
                    bucket._exemplar = Exemplar(observed, seconds, now)

    return locked, lock_free
