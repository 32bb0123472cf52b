from prometheus_client import CollectorRegistry

from ofsre.instrumentation import semconv
from ofsre.instrumentation.metrics import count_telemetry_error, metric


def test_metric_is_created_once_per_registry():
    reg = CollectorRegistry()
    a = metric(semconv.QUEUE_PUBLISHED, reg)
    assert metric(semconv.QUEUE_PUBLISHED, reg) is a
    a.labels(service="s", queue="q", backend="db").inc(2)
    assert reg.get_sample_value("ofsre_queue_messages_published_total",
                                {"service": "s", "queue": "q", "backend": "db"}) == 2
    assert metric(semconv.QUEUE_PUBLISHED, CollectorRegistry()) is not a


def test_every_spec_builds_and_histograms_hold_regulatory_limits():
    reg = CollectorRegistry()
    for spec in semconv.ALL:
        metric(spec, reg)
    assert {1.5, 2.0, 4.0} <= set(semconv.HTTP_DURATION.buckets)
    names = [s.name for s in semconv.ALL]
    assert len(names) == len(set(names))


def test_count_telemetry_error():
    reg = CollectorRegistry()
    count_telemetry_error("logs", reg)
    assert reg.get_sample_value("ofsre_telemetry_errors_total", {"component": "logs"}) == 1
