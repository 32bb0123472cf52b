"""A malformed request header costs the telemetry of its own step, never the rest of it.

Uvicorn's parsers refuse some malformed ``Content-Length`` values themselves; other ASGI
servers (and proxies in front of the app) may pass them on, so the middleware is called
here directly with each one, the way such a server would call it.
"""

from __future__ import annotations

import json

import pytest

from ofsre.instrumentation import _asgi, semconv
from ofsre.instrumentation._asgi import is_valid_interaction_id

from .test_never_hurts import explode, telemetry_errors

IID = "3f2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4d"
MALFORMED = ["abc", "1e3", "", " ", "-1", "+5", "1_000", "0x10", "12abc", "1.5", "\xb2", "\xb9\xb2", "3, 3",
             "5\x00"]
SIZE_LABELS = {"service": "svc", "route": "/echo", "method": "POST", "status": "200", "api": "", "tier": ""}


def _header(headers, name: bytes) -> bytes | None:
    return next((v for k, v in headers if k == name), None)


@pytest.mark.parametrize("value", MALFORMED)
async def test_a_malformed_content_length_keeps_id_span_metrics_and_body(value, make_app, registry, spans,
                                                                       call_asgi):
    app = make_app()
    headers = [("content-length", value), ("x-fapi-interaction-id", IID)]
    status, sent, body = await call_asgi(app, "POST", "/echo", headers=headers, body=b"")
    assert status == 200
    assert _header(sent, b"x-fapi-interaction-id") == IID.encode()
    [span] = spans[1].get_finished_spans()
    assert span.name == "POST /echo" and span.attributes["fapi.interaction_id"] == IID
    assert registry.get_sample_value(semconv.HTTP_REQUESTS.series, SIZE_LABELS) == 1
    # Not a length: the request size is what the app read (nothing), never a parse of garbage.
    assert registry.get_sample_value(semconv.HTTP_REQUEST_SIZE.name + "_sum", SIZE_LABELS) == 0
    in_flight = {k: SIZE_LABELS[k] for k in semconv.HTTP_IN_FLIGHT.labels}
    assert registry.get_sample_value(semconv.HTTP_IN_FLIGHT.name, in_flight) == 0
    assert telemetry_errors(registry) == 0


@pytest.mark.parametrize("value", ["abc", "1e3", "-1", "1_000"])
async def test_a_malformed_content_length_with_a_body_counts_the_body_read(value, make_app, registry,
                                                                          call_asgi):
    app = make_app()
    status, _, body = await call_asgi(app, "POST", "/echo", headers=[("content-length", value)],
                                      body=b"x" * 7)
    assert (status, body) == (200, b"x" * 7)
    assert registry.get_sample_value(semconv.HTTP_REQUEST_SIZE.name + "_sum", SIZE_LABELS) == 7


@pytest.mark.parametrize("value", MALFORMED)
@pytest.mark.parametrize("interaction", [None, "not-a-uuid"])
async def test_require_interaction_id_still_answers_400_with_a_malformed_content_length(
        value, interaction, make_app, call_asgi):
    app = make_app(require_interaction_id=True)
    called = []

    @app.middleware("http")
    async def spy(request, call_next):  # inside the instrumentation: runs only if the app is called
        called.append(request.url.path)
        return await call_next(request)

    headers = [("content-length", value)] + ([("x-fapi-interaction-id", interaction)] if interaction else [])
    status, sent, body = await call_asgi(app, "POST", "/echo", headers=headers)
    assert status == 400 and called == []
    echoed = _header(sent, b"x-fapi-interaction-id")
    assert echoed is not None and is_valid_interaction_id(echoed)
    code = json.loads(body)["errors"][0]["code"]
    assert code == ("PARAMETRO_NAO_INFORMADO" if interaction is None else "PARAMETRO_INVALIDO")


# --- each step fails alone -------------------------------------------------------------------------

async def test_a_failing_route_step_keeps_the_id_the_400_and_a_span(make_app, registry, spans, monkeypatch,
                                                                    call_asgi):
    monkeypatch.setattr(_asgi.OfsreMiddleware, "_route_of", explode)
    app = make_app()
    status, sent, _ = await call_asgi(app, "GET", "/items/1", headers=[("x-fapi-interaction-id", IID)])
    assert status == 200 and _header(sent, b"x-fapi-interaction-id") == IID.encode()
    [span] = spans[1].get_finished_spans()
    assert span.name == "HTTP" and span.attributes["fapi.interaction_id"] == IID
    assert telemetry_errors(registry) == 1
    strict = make_app(require_interaction_id=True)
    status, _, _ = await call_asgi(strict, "GET", "/items/1")
    assert status == 400


async def test_a_failing_interaction_step_keeps_route_span_and_metrics(make_app, registry, spans, monkeypatch,
                                                                       call_asgi):
    monkeypatch.setattr(_asgi.OfsreMiddleware, "_start_interaction", explode)
    app = make_app()
    status, sent, _ = await call_asgi(app, "GET", "/items/1", headers=[("x-fapi-interaction-id", IID)])
    assert status == 200 and _header(sent, b"x-fapi-interaction-id") is None
    [span] = spans[1].get_finished_spans()
    assert span.name == "GET /items/{item_id}"
    labels = {**SIZE_LABELS, "route": "/items/{item_id}", "method": "GET"}
    assert registry.get_sample_value(semconv.HTTP_REQUESTS.series, labels) == 1
    assert telemetry_errors(registry) == 1


async def test_a_failing_span_step_keeps_id_and_metrics(make_app, registry, spans, monkeypatch, call_asgi):
    monkeypatch.setattr(_asgi.OfsreMiddleware, "_start_span", explode)
    app = make_app()
    status, sent, _ = await call_asgi(app, "GET", "/items/1", headers=[("x-fapi-interaction-id", IID)])
    assert status == 200 and _header(sent, b"x-fapi-interaction-id") == IID.encode()
    assert spans[1].get_finished_spans() == ()
    labels = {**SIZE_LABELS, "route": "/items/{item_id}", "method": "GET"}
    assert registry.get_sample_value(semconv.HTTP_REQUESTS.series, labels) == 1
    assert telemetry_errors(registry) == 1


async def test_a_failing_in_flight_gauge_keeps_everything_else(make_app, registry, spans, monkeypatch,
                                                               call_asgi):
    app = make_app()
    await call_asgi(app, "GET", "/items/1")
    route = next(iter(app.build_middleware_stack.ofsre_middleware._routes.values()))
    monkeypatch.setattr(route.in_flight, "inc", explode)
    monkeypatch.setattr(route, "in_flight_add", explode)   # the lock-free update of the serving thread
    status, sent, _ = await call_asgi(app, "GET", "/items/1", headers=[("x-fapi-interaction-id", IID)])
    assert status == 200 and _header(sent, b"x-fapi-interaction-id") == IID.encode()
    assert len(spans[1].get_finished_spans()) == 2
    labels = {**SIZE_LABELS, "route": "/items/{item_id}", "method": "GET"}
    assert registry.get_sample_value(semconv.HTTP_REQUESTS.series, labels) == 2
    in_flight = {k: labels[k] for k in semconv.HTTP_IN_FLIGHT.labels}
    assert registry.get_sample_value(semconv.HTTP_IN_FLIGHT.name, in_flight) == 0   # never decremented alone
    assert telemetry_errors(registry) == 1
