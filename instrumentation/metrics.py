"""Create prometheus_client metrics from the specs in :mod:`ofsre.instrumentation.semconv`.

``metric(spec)`` returns the metric for a spec, creating it on first use and returning
the same object afterwards (per registry), so any module may ask for a metric without
caring who registered it first::

    from ofsre.instrumentation import semconv
    from ofsre.instrumentation.metrics import metric

    metric(semconv.QUEUE_PUBLISHED).labels(service="payments", queue="pix", backend="db").inc()

Under ``PROMETHEUS_MULTIPROC_DIR`` gauges get their spec's ``multiprocess_mode``.
"""

from __future__ import annotations

import threading
import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from .semconv import TELEMETRY_ERRORS, MetricSpec

__all__ = ["metric", "count_telemetry_error"]

_lock = threading.Lock()
# Per registry, by metric name. Weak keys: a registry that is gone takes its metrics with it
# (keying by id() would hand a new registry that reuses the id the old registry's metrics).
_created: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, MetricWrapperBase]] = weakref.WeakKeyDictionary()


def metric(spec: MetricSpec, registry: CollectorRegistry | None = REGISTRY) -> MetricWrapperBase:
    """The metric for ``spec`` in ``registry`` (``None``: an unregistered metric, for tests)."""
    if registry is None:
        return _build(spec, None)
    by_name = _created.get(registry)
    found = by_name.get(spec.name) if by_name is not None else None
    if found is not None:
        return found
    with _lock:
        by_name = _created.setdefault(registry, {})
        found = by_name.get(spec.name)
        if found is None:
            found = by_name[spec.name] = _build(spec, registry)
        return found


def _build(spec: MetricSpec, registry: CollectorRegistry | None) -> MetricWrapperBase:
    kwargs = {"labelnames": spec.labels, "registry": registry}
    if spec.kind == "counter":
        return Counter(spec.name, spec.doc, **kwargs)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.doc, multiprocess_mode=spec.multiprocess_mode, **kwargs)
    if spec.kind == "histogram":
        return Histogram(spec.name, spec.doc, buckets=spec.buckets or Histogram.DEFAULT_BUCKETS, **kwargs)
    raise ValueError(f"{spec.name}: unknown metric kind {spec.kind!r}")


def count_telemetry_error(component: str, registry: CollectorRegistry | None = REGISTRY) -> None:
    """Count an error swallowed inside telemetry code. Never raises."""
    try:
        metric(TELEMETRY_ERRORS, registry).labels(component=component).inc()
    except Exception:  # noqa: BLE001 - counting an error must not become one
        pass
