"""Server spans, ``setup_tracing`` and trace propagation through the instrumented httpx clients."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once
from prometheus_client import CollectorRegistry

from ofsre.instrumentation import instrument_app, instrumented_client, instrumented_sync_client, tracing

from ..http_stub import HttpStub, Reply
from ..http_stub import Request as StubRequest
from .conftest import BALANCES, Boom

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
IID = "3f2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4d"


async def test_server_span_continues_the_incoming_trace(make_app, span_exporter, call_asgi):
    await call_asgi(make_app(), "GET", "/open-banking/accounts/v2/accounts/acc-1/balances",
                    [("traceparent", TRACEPARENT), ("x-fapi-interaction-id", IID)])
    [span] = span_exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID and span.parent.is_remote
    assert span.kind is SpanKind.SERVER
    assert span.name == f"GET {BALANCES}"
    assert dict(span.attributes) == {
        "http.request.method": "GET", "http.route": BALANCES, "http.response.status_code": 200,
        "url.path": "/open-banking/accounts/v2/accounts/acc-1/balances", "url.scheme": "http",
        "server.address": "testserver", "server.port": 8080, "fapi.interaction_id": IID,
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_without_traceparent_a_new_trace_starts(make_app, span_exporter, call_asgi):
    await call_asgi(make_app(), "GET", "/items/1")
    [span] = span_exporter.get_finished_spans()
    assert span.parent is None and span.context.trace_id != int(TRACE_ID, 16)


async def test_unmatched_route_span_has_no_route(make_app, span_exporter, call_asgi):
    await call_asgi(make_app(), "GET", "/no/such/path")
    [span] = span_exporter.get_finished_spans()
    assert span.name == "GET" and "http.route" not in span.attributes
    assert span.attributes["http.response.status_code"] == 404
    assert span.status.status_code is StatusCode.UNSET  # 4xx is the client's error on a server span


async def test_exception_marks_the_span(make_app, span_exporter, call_asgi):
    with pytest.raises(Boom):
        await call_asgi(make_app(), "GET", "/boom")
    [span] = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "Boom" and span.attributes["http.response.status_code"] == 500
    assert [e.name for e in span.events] == ["exception"]


async def test_the_server_span_is_current_inside_the_app(registry, tracer_provider, span_exporter, call_asgi):
    seen = []

    async def app(scope, receive, send):
        seen.append(trace.get_current_span().get_span_context())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await call_asgi(instrument_app(app, "svc", registry=registry, tracer_provider=tracer_provider), "GET",
                    "/")
    [span] = span_exporter.get_finished_spans()
    assert seen == [span.context]
    assert not trace.get_current_span().get_span_context().is_valid  # detached afterwards


# -- setup_tracing ----------------------------------------------------------------------------

@pytest.fixture
def fresh_global_tracing(monkeypatch):
    """Let a test install the global provider, then put OpenTelemetry's globals back."""
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE, tracing._installed)
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE, tracing._installed = None, Once(), None
    yield
    provider = tracing._installed
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE, tracing._installed = saved
    if provider is not None:
        provider.shutdown()


def processors(provider: TracerProvider):
    return provider._active_span_processor._span_processors


def test_setup_tracing_installs_once_and_exports_nowhere_by_default(fresh_global_tracing):
    provider = tracing.setup_tracing("accounts", version="1.0.0")
    assert trace.get_tracer_provider() is provider
    assert tracing.setup_tracing("other", sampler_ratio=0.5) is provider
    assert processors(provider) == ()
    assert provider.resource.attributes["service.name"] == "accounts"
    assert provider.resource.attributes["service.version"] == "1.0.0"
    sampler = provider.sampler
    assert isinstance(sampler, ParentBased) and isinstance(sampler._root, TraceIdRatioBased)
    assert sampler._root.rate == 1.0


def test_setup_tracing_respects_an_sdk_provider_installed_before(fresh_global_tracing):
    theirs = TracerProvider()
    trace.set_tracer_provider(theirs)
    assert tracing.setup_tracing("accounts") is theirs


def test_sampler_ratio_argument_and_environment(monkeypatch):
    assert tracing.build_sampler(0.25)._root.rate == 0.25
    with pytest.raises(ValueError):
        tracing.build_sampler(1.5)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    assert tracing.build_sampler()._root.rate == 0.1
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "lots")
    assert tracing.build_sampler()._root.rate == 1.0
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert tracing.build_sampler() is None  # the SDK reads OTEL_TRACES_SAMPLER itself
    assert tracing.build_tracer_provider("svc").sampler.get_description() == "AlwaysOffSampler"


def test_otlp_exporter_sends_spans_to_the_configured_endpoint(monkeypatch):
    received = []

    def collect(request: StubRequest) -> Reply:
        received.append((request.path, request.headers["content-type"], request.body))
        return 200, {}, b""

    with HttpStub(collect, methods=("POST",), name="otlp-collector") as server:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.url)
        provider = tracing.build_tracer_provider("accounts")
        provider.get_tracer("t").start_span("hello").end()
        assert provider.force_flush(10_000)
        provider.shutdown()
    assert [(path, ctype) for path, ctype, _ in received] == [("/v1/traces", "application/x-protobuf")]
    assert b"hello" in received[0][2] and b"accounts" in received[0][2]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.exporter_from_env() is None


async def test_instrument_app_installs_tracing_and_turns_off_fastapis_own_span(fresh_global_tracing,
                                                                               call_asgi):
    app = FastAPI()

    @app.get("/x")
    async def x():
        return {}

    instrument_app(app, "svc", registry=CollectorRegistry())
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    assert app._telemetry["tracing"] is False  # one server span per request: ours
    status, _, _ = await call_asgi(app, "GET", "/x")
    assert status == 200


# -- outgoing calls -----------------------------------------------------------------------------

@pytest.fixture
def serve():
    """``serve(app)`` -> base URL of a real uvicorn serving ``app`` on a free loopback port."""
    running = []

    def start(app) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(10)


def downstream_app(tracer_provider) -> FastAPI:
    app = FastAPI()

    @app.get("/headers")
    async def headers(request: Request):
        return dict(request.headers)

    @app.get("/fail")
    async def fail():
        from fastapi.responses import JSONResponse

        return JSONResponse({"error": True}, status_code=503)

    instrument_app(app, "downstream", registry=CollectorRegistry(), tracer_provider=tracer_provider)
    return app


async def test_outgoing_call_propagates_the_trace_but_not_the_interaction_id(
        serve, make_app, tracer_provider, span_exporter):
    base = serve(downstream_app(tracer_provider))
    upstream = make_app()

    @upstream.get("/calls-downstream")
    async def calls_downstream():
        async with instrumented_client(base_url=base, tracer_provider=tracer_provider, timeout=10) as client:
            response = await client.get("/headers", params={"token": "secret"})
        return response.json()

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream), base_url="http://up") as client:
        response = await client.get("/calls-downstream",
                                    headers={"traceparent": TRACEPARENT, "x-fapi-interaction-id": IID})
    seen_downstream = response.json()
    assert "x-fapi-interaction-id" not in seen_downstream
    spans = {(s.kind, s.name): s for s in span_exporter.get_finished_spans()}
    upstream_span = spans[(SpanKind.SERVER, "GET /calls-downstream")]
    client_span = spans[(SpanKind.CLIENT, "GET")]
    downstream_span = spans[(SpanKind.SERVER, "GET /headers")]
    assert {s.context.trace_id for s in (upstream_span, client_span, downstream_span)} == {int(TRACE_ID, 16)}
    assert client_span.parent.span_id == upstream_span.context.span_id
    assert downstream_span.parent.span_id == client_span.context.span_id
    assert seen_downstream["traceparent"].split("-")[2] == format(client_span.context.span_id, "016x")
    port = int(base.rsplit(":", 1)[1])
    assert dict(client_span.attributes) == {
        "http.request.method": "GET", "server.address": "127.0.0.1", "server.port": port,
        "url.full": f"{base}/headers", "http.response.status_code": 200}
    assert downstream_span.attributes["fapi.interaction_id"] != IID  # its own, generated


def test_sync_client_traces_errors_and_failures(serve, tracer_provider, span_exporter):
    base = serve(downstream_app(tracer_provider))
    with instrumented_sync_client(base_url=base, tracer_provider=tracer_provider, timeout=10) as client:
        assert client.get("/fail").status_code == 503
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    with instrumented_sync_client(tracer_provider=tracer_provider, timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(f"http://user:pw@127.0.0.1:{dead_port}/x?q=1")
    client_spans = [s for s in span_exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    failed, unreachable = client_spans
    assert failed.attributes["http.response.status_code"] == 503 and failed.attributes["error.type"] == "503"
    assert failed.status.status_code is StatusCode.ERROR
    assert unreachable.attributes["error.type"] == "ConnectError"
    assert unreachable.attributes["url.full"] == f"http://127.0.0.1:{dead_port}/x"  # no credentials, no query
    assert unreachable.status.status_code is StatusCode.ERROR


async def test_suppressed_instrumentation_sends_no_trace(tracer_provider, span_exporter):
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(request.headers)
        return httpx.Response(204)

    token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        async with instrumented_client(transport=httpx.MockTransport(handler),
                                       tracer_provider=tracer_provider) as c:
            await c.get("http://exporter.local/v1/traces")
    finally:
        otel_context.detach(token)
    assert "traceparent" not in seen and span_exporter.get_finished_spans() == ()
