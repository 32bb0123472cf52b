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

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from .semconv import TELEMETRY_ERRORS, MetricSpec

__all__ = ["metric", "count_telemetry_error"]

_lock = threading.Lock()
_created: dict[tuple[int, str], MetricWrapperBase] = {}


def metric(spec: MetricSpec, registry: CollectorRegistry | None = REGISTRY) -> MetricWrapperBase:
    """The metric for ``spec`` in ``registry`` (``None``: an unregistered metric, for tests)."""
    key = (id(registry), spec.name)
    found = _created.get(key)
    if found is not None:
        return found
    with _lock:
        found = _created.get(key)
        if found is None:
            found = _build(spec, registry)
            if registry is not None:
                _created[key] = found
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
