"""Telemetry never hurts the request: each failure inside it is counted and swallowed."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY, Histogram

from ofsre.instrumentation import _asgi, context, instrumented_client, instrumented_sync_client, semconv
from ofsre.instrumentation.metrics import metric

from .conftest import Boom

LABELS = {"service": "svc", "route": "/items/{item_id}", "method": "GET", "status": "200", "api": "",
          "tier": ""}


def telemetry_errors(registry, component="asgi"):
    return registry.get_sample_value(semconv.TELEMETRY_ERRORS.series, {"component": component}) or 0


class Broken(RuntimeError):
    pass


def explode(*args, **kwargs):
    raise Broken("telemetry bug")


class BrokenProvider(TracerProvider):
    """Its tracers fail to start any span: the SDK's ``start_span`` raises, and so does the id
    generator the middleware's own span path (tracing.Presampler) draws its ids from."""

    def get_tracer(self, *args, **kwargs):
        tracer = super().get_tracer(*args, **kwargs)
        tracer.start_span = explode
        tracer.id_generator = BrokenIds()
        return tracer


class BrokenIds:
    generate_trace_id = generate_span_id = explode

    def is_trace_id_random(self):
        return True


async def test_a_metric_child_that_raises(make_app, registry, call_asgi):
    app = make_app()
    expected = await call_asgi(app, "GET", "/items/1")  # creates and caches the children
    child = metric(semconv.HTTP_REQUESTS, registry).labels(**LABELS)
    child._value._value = None  # the very value the middleware updates: None + 1 raises TypeError
    for _ in range(3):
        status, headers, body = await call_asgi(app, "GET", "/items/1")
        assert (status, headers[:-1], body) == (expected[0], expected[1][:-1], expected[2])
    assert telemetry_errors(registry) == 3
    assert registry.get_sample_value(semconv.HTTP_IN_FLIGHT.name, {k: LABELS[k] for k in
                                                                   semconv.HTTP_IN_FLIGHT.labels}) == 0


async def test_every_histogram_raising_keeps_the_app_exception_unchanged(make_app, registry, monkeypatch,
                                                                         call_asgi):
    app = make_app()
    # Every histogram value the middleware would update (the lock-free path and the public one).
    monkeypatch.setattr(Histogram, "observe", explode)
    monkeypatch.setattr(_asgi, "request_recorders", lambda *children: (explode, explode))
    with pytest.raises(Boom) as caught:
        await call_asgi(app, "GET", "/boom")
    assert caught.value is app.state.raised[0]
    assert telemetry_errors(registry) == 1


async def test_a_tracer_that_raises(registry, call_asgi, make_app):
    bare = await call_asgi(make_app(instrument=False), "GET", "/items/7")
    status, headers, body = await call_asgi(make_app(tracer_provider=BrokenProvider()), "GET", "/items/7")
    assert (status, body) == bare[::2]
    assert [h[0] for h in headers][-1] == b"x-fapi-interaction-id"  # set before the span failed
    assert telemetry_errors(registry) == 1
    assert context.interaction_id() is None and not trace.get_current_span().get_span_context().is_valid


async def test_a_span_that_fails_to_end_still_restores_the_context(make_app, registry, monkeypatch,
                                                                   call_asgi):
    monkeypatch.setattr(_asgi, "_end_span", explode)
    monkeypatch.setattr(_asgi.LazySpan, "end_as_server", explode)   # the sampled span's usual end
    status, _, _ = await call_asgi(make_app(), "GET", "/items/1")
    assert status == 200 and telemetry_errors(registry) == 1
    assert registry.get_sample_value(semconv.HTTP_REQUESTS.series, LABELS) == 1
    assert context.interaction_id() is None and not trace.get_current_span().get_span_context().is_valid


async def test_a_header_injection_failure_sends_the_response_unchanged(make_app, registry, monkeypatch,
                                                                       call_asgi):
    bare = await call_asgi(make_app(instrument=False), "GET", "/items/1")
    monkeypatch.setattr(_asgi._Exchange, "_with_interaction_id", explode)
    assert await call_asgi(make_app(), "GET", "/items/1") == bare
    assert telemetry_errors(registry) == 1


async def test_a_route_table_that_cannot_be_read(registry, tracer_provider, call_asgi):
    class App:
        @property
        def routes(self):
            raise Broken("routes")

        async def __call__(self, scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"fine"})

    wrapped = _asgi.instrument_app(App(), "svc", registry=registry, tracer_provider=tracer_provider)
    for _ in range(2):
        status, headers, body = await call_asgi(wrapped, "GET", "/x")
        # Only the app's own routes are lost (the path is __unknown__): the interaction id is still echoed.
        assert (status, body) == (200, b"fine")
        assert [name for name, _ in headers] == [b"x-fapi-interaction-id"]
    assert telemetry_errors(registry) == 1  # read once, failed once: not a cost per request
    assert registry.get_sample_value(semconv.HTTP_REQUESTS.series, {
        "service": "svc", "route": semconv.UNKNOWN_ROUTE, "method": "GET", "status": "200", "api": "",
        "tier": ""}) == 2


async def test_even_the_error_counter_failing_does_not_reach_the_request(make_app, monkeypatch, call_asgi):
    app = make_app()
    monkeypatch.setattr(Histogram, "observe", explode)
    monkeypatch.setattr(type(metric(semconv.TELEMETRY_ERRORS, REGISTRY)), "inc", explode)
    status, _, body = await call_asgi(app, "GET", "/items/2")
    assert (status, body) == (200, b'{"id":2}')


async def test_an_http_client_whose_tracer_raises_still_sends():
    before = telemetry_errors(REGISTRY, "httpclient")
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="pong"))
    async with instrumented_client(transport=transport, tracer_provider=BrokenProvider()) as client:
        response = await client.get("http://downstream.local/ping")
    assert response.text == "pong"
    assert telemetry_errors(REGISTRY, "httpclient") == before + 1


async def test_an_http_client_counts_its_errors_in_its_own_registry(registry, monkeypatch):
    from opentelemetry.sdk.trace import Span

    global_before = telemetry_errors(REGISTRY, "httpclient")
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="pong"))
    async with instrumented_client(transport=transport, tracer_provider=BrokenProvider(),
                                   registry=registry) as client:
        assert (await client.get("http://downstream.local/ping")).text == "pong"  # the span failed to start
    monkeypatch.setattr(Span, "end", explode)
    with instrumented_sync_client(transport=transport, tracer_provider=TracerProvider(),
                                  registry=registry) as sync_client:
        assert sync_client.get("http://downstream.local/ping").text == "pong"  # the span failed to end
    assert telemetry_errors(registry, "httpclient") == 2
    assert telemetry_errors(REGISTRY, "httpclient") == global_before
