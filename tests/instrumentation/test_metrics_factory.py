import pytest
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
    assert {1.5, 2.0, 4.0} <= set(semconv.HTTP_DURATION.histogram_buckets())
    assert semconv.QUEUE_LATENCY.histogram_buckets()[-3:] == (30.0, 60.0, 300.0)
    assert semconv.DB_QUERY_DURATION.histogram_buckets() == semconv.DB_QUERY_DURATION.buckets
    names = [s.name for s in semconv.ALL]
    assert len(names) == len(set(names))


def test_count_telemetry_error():
    reg = CollectorRegistry()
    count_telemetry_error("logs", reg)
    assert reg.get_sample_value("ofsre_telemetry_errors_total", {"component": "logs"}) == 1


def test_lock_free_updates_store_what_the_public_methods_store():
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from ofsre.instrumentation.metrics import counter_adder, gauge_adder, histogram_observer

    fast, slow = CollectorRegistry(), CollectorRegistry()
    observations = [0.0, 0.004, 0.005, 0.0051, 0.3, 2.5, 99.0, 1e9]
    for registry, lock_free in ((fast, True), (slow, False)):
        counter = Counter("c", "c", ["l"], registry=registry).labels(l="x")
        histogram = Histogram("h", "h", ["l"], registry=registry, buckets=(0.005, 0.3, 2.5, 10)).labels(l="x")
        gauge = Gauge("g", "g", ["l"], registry=registry).labels(l="x")
        add = counter_adder(counter) if lock_free else counter.inc
        observe = histogram_observer(histogram) if lock_free else histogram.observe
        move = gauge_adder(gauge) if lock_free else gauge.inc
        if lock_free:   # the fast path, not prometheus_client's method
            assert all(getattr(f, "__self__", None) is None for f in (add, observe, move))
        for value in observations:
            add(1, {"trace_id": "ab" * 16})
            observe(value, {"trace_id": "cd" * 16})
            move(1)
        move(-3)
    def samples(registry):
        return [(s.name, s.labels, s.value, s.exemplar and (s.exemplar.labels, s.exemplar.value))
                for family in registry.collect() for s in family.samples if not s.name.endswith("_created")]
    assert samples(fast) == samples(slow)


def test_a_second_thread_switches_the_middleware_to_locked_updates(registry, tracer_provider, call_asgi):
    import asyncio
    import threading

    from ofsre.instrumentation import _asgi, semconv

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = _asgi.OfsreMiddleware(app, "svc", registry=registry, tracer_provider=tracer_provider,
                                       logs=False)
    asyncio.run(call_asgi(middleware, "GET", "/x"))
    assert middleware._owner == threading.get_ident()
    other = threading.Thread(target=lambda: asyncio.run(call_asgi(middleware, "GET", "/x")))
    other.start()
    other.join()
    assert middleware._owner is None   # from now on prometheus_client's locked methods, on every thread
    asyncio.run(call_asgi(middleware, "GET", "/x"))
    labels = {"service": "svc", "route": semconv.UNKNOWN_ROUTE, "method": "GET", "status": "200", "api": "",
              "tier": ""}
    assert registry.get_sample_value(semconv.HTTP_REQUESTS.series, labels) == 3


def test_the_lock_free_request_recorder_stores_what_the_locked_one_stores():
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from ofsre.instrumentation.metrics import request_recorders

    fast, slow = CollectorRegistry(), CollectorRegistry()
    for registry, which in ((fast, 1), (slow, 0)):
        children = [Counter("c", "c", ["l"], registry=registry).labels(l="x")]
        buckets = (0.005, 0.3, 2.5, 10, 5000)
        children += [Histogram(name, name, ["l"], registry=registry, buckets=buckets).labels(l="x")
                     for name in ("d", "q", "r")]
        recorders = request_recorders(*children)
        assert recorders[0] is not recorders[1]   # single-process values: a lock-free recorder exists
        record = recorders[which]
        for seconds, sizes in ((0.0, (0, 0)), (0.004, (12, 4000)), (0.3, (5000, 1)), (99.0, (1e9, 7))):
            record(seconds, *sizes, 0xAB if seconds < 1 else 0)

    def samples(registry):
        return [(s.name, s.labels, s.value, s.exemplar and (s.exemplar.labels, s.exemplar.value))
                for family in registry.collect() for s in family.samples if not s.name.endswith("_created")]
    assert samples(fast) == samples(slow)
    assert {"trace_id": format(0xAB, "032x")} in [s[3][0] for s in samples(fast) if s[3]]


@pytest.mark.parametrize("which", [0, 1], ids=["locked", "lock_free"])
def test_a_series_exemplars_are_replaced_at_most_once_a_second_per_bucket(which, monkeypatch):
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from ofsre.instrumentation import metrics

    clock = [1000.0]
    monkeypatch.setattr(metrics, "_now", lambda: clock[0])
    registry = CollectorRegistry()
    children = [Counter("c", "c", ["l"], registry=registry).labels(l="x")]
    children += [Histogram(name, name, ["l"], registry=registry, buckets=(0.1, 1.0)).labels(l="x")
                 for name in ("d", "q", "r")]
    record = metrics.request_recorders(*children)[which]

    def exemplars():   # sample name and le -> the exemplar's trace id
        return {(s.name, s.labels.get("le")): s.exemplar.labels["trace_id"][-2:]
                for family in registry.collect() for s in family.samples if s.exemplar}

    record(0.05, 0, 0, 0x01)
    record(0.06, 0, 0, 0x02)   # same bucket, 0 s later: the first stays
    record(0.5, 0, 0, 0x03)    # another bucket: its own exemplar at once
    record(0.07, 0, 0, 0)      # not sampled: no exemplar
    assert exemplars() == {("c_total", None): "01", ("d_bucket", "0.1"): "01", ("d_bucket", "1.0"): "03"}
    clock[0] += metrics.EXEMPLAR_REFRESH_S
    record(0.08, 0, 0, 0x04)
    assert exemplars() == {("c_total", None): "04", ("d_bucket", "0.1"): "04", ("d_bucket", "1.0"): "03"}
