"""The ASGI middleware: labels, cardinality, status accounting, byte-identical responses, /metrics."""

from __future__ import annotations

import random
import string
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from ofsre.instrumentation import OfsreMiddleware, instrument_app, semconv
from ofsre.instrumentation._asgi import route_templates
from ofsre.instrumentation.exposition import render

from .conftest import BALANCES, Boom

IID = "3f2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4d"


def requests_count(registry, **labels):
    base = {"service": "svc", "method": "GET", "status": "200", "api": "", "tier": ""}
    return registry.get_sample_value(semconv.HTTP_REQUESTS.series, {**base, **labels})


def series(registry, spec):
    """Every (labels) of a metric's samples named exactly ``spec.series``."""
    name = (spec.series if spec.kind == "counter"
            else spec.name + "_count" if spec.kind == "histogram" else spec.name)
    return [s.labels for m in registry.collect() for s in m.samples if s.name == name]


async def test_labels_use_route_template_and_catalog_api_and_tier(make_app, registry, call_asgi):
    app = make_app()
    for path in ("/items/1", "/items/2", "/open-banking/accounts/v2/accounts/acc-9/balances"):
        status, _, _ = await call_asgi(app, "GET", path)
        assert status == 200
    assert requests_count(registry, route="/items/{item_id}") == 2
    assert requests_count(registry, route=BALANCES, api="accounts", tier="alta") == 1
    routes = {labels["route"] for labels in series(registry, semconv.HTTP_REQUESTS)}
    assert routes == {"/items/{item_id}", BALANCES}  # never a raw path
    assert registry.get_sample_value(semconv.HTTP_DURATION.name + "_count",
                                     {"service": "svc", "route": BALANCES, "method": "GET", "status": "200",
                                      "api": "accounts", "tier": "alta"}) == 1


async def test_catalog_route_is_labelled_even_when_the_app_does_not_serve_it(make_app, registry, call_asgi):
    status, _, _ = await call_asgi(make_app(), "GET", "/open-banking/consents/v3/consents/urn:x:1")
    assert status == 404
    assert requests_count(registry, route="/open-banking/consents/v3/consents/{consentId}", status="404",
                          api="consents", tier="alta") == 1


async def test_ten_thousand_random_unmatched_paths_add_exactly_one_route_series(make_app, registry,
                                                                                call_asgi):
    app = make_app()
    rng = random.Random(7)
    for _ in range(10_000):
        depth = rng.randint(1, 5)
        path = "/" + "/".join("".join(rng.choices(string.ascii_letters + string.digits,
                                                  k=8)) for _ in range(depth))
        await call_asgi(app, "GET", path)
    labels = series(registry, semconv.HTTP_REQUESTS)
    assert labels == [{"service": "svc", "route": semconv.UNKNOWN_ROUTE, "method": "GET", "status": "404",
                       "api": "", "tier": ""}]
    assert requests_count(registry, route=semconv.UNKNOWN_ROUTE, status="404") == 10_000


async def test_unknown_methods_collapse_into_other(make_app, registry, span_exporter, call_asgi):
    app = make_app()
    for method in ("BREW", "PROPFIND", "FOO", "get2"):
        await call_asgi(app, method, "/items/1")
    methods = {labels["method"] for labels in series(registry, semconv.HTTP_REQUESTS)}
    assert methods == {semconv.OTHER_METHOD}
    assert requests_count(registry, route="/items/{item_id}", method=semconv.OTHER_METHOD, status="405") == 4
    span = span_exporter.get_finished_spans()[0]
    assert span.name == "HTTP /items/{item_id}"
    assert span.attributes["http.request.method"] == semconv.OTHER_METHOD
    assert span.attributes["http.request.method_original"] == "BREW"


async def test_unhandled_exception_counts_500_and_is_reraised_unchanged(make_app, registry, call_asgi):
    app = make_app()
    with pytest.raises(Boom) as caught:
        await call_asgi(app, "GET", "/boom")
    assert caught.value is app.state.raised[0]
    assert requests_count(registry, route="/boom", status="500") == 1


async def test_plain_asgi_app_exception_without_response_counts_500(registry, tracer_provider, call_asgi):
    error = ValueError("no response at all")

    async def broken(scope, receive, send):
        raise error

    app = instrument_app(broken, "svc", registry=registry, tracer_provider=tracer_provider)
    assert isinstance(app, OfsreMiddleware)
    with pytest.raises(ValueError) as caught:
        await call_asgi(app, "GET", "/x")
    assert caught.value is error
    assert requests_count(registry, route=semconv.UNKNOWN_ROUTE, status="500") == 1


async def test_client_disconnect_before_any_response_counts_499(registry, tracer_provider, call_asgi):
    async def waits_for_body(scope, receive, send):
        message = await receive()
        assert message["type"] == "http.disconnect"  # the client left: nothing to answer

    app = instrument_app(waits_for_body, "svc", registry=registry, tracer_provider=tracer_provider)
    status, _, _ = await call_asgi(app, "POST", "/upload", disconnect=True)
    assert status is None
    assert requests_count(registry, route=semconv.UNKNOWN_ROUTE, method="POST", status="499") == 1


@pytest.mark.parametrize("method,path,body,headers", [
    ("GET", "/items/5", b"", [("x-fapi-interaction-id", IID)]),
    ("GET", "/items/5", b"", []),
    ("POST", "/echo", b'{"a": "\xc3\xa9"}' * 50, [("content-type", "application/json")]),
    ("GET", "/stream", b"", []),
    ("GET", "/nope/nothing/here", b"", []),
    ("DELETE", "/items/5", b"", []),
    ("GET", "/items/not-an-int", b"", []),
])
async def test_responses_are_byte_identical_except_the_interaction_id(make_app, call_asgi, method, path, body,
                                                                      headers):
    bare = await call_asgi(make_app(instrument=False), method, path, headers, body)
    instrumented = await call_asgi(make_app(), method, path, headers, body)
    status, raw_headers, payload = instrumented
    added = [h for h in raw_headers if h[0] == b"x-fapi-interaction-id"]
    assert len(added) == 1 and raw_headers[-1] == added[0]
    assert (status, raw_headers[:-1], payload) == bare


async def test_sizes_are_observed_from_content_length_and_body(make_app, registry, call_asgi):
    body = b"x" * 1234
    _, _, payload = await call_asgi(make_app(), "POST", "/echo", [], body)
    labels = {"service": "svc", "route": "/echo", "method": "POST", "status": "200", "api": "", "tier": ""}
    assert registry.get_sample_value(semconv.HTTP_REQUEST_SIZE.name + "_sum", labels) == 1234
    assert registry.get_sample_value(semconv.HTTP_RESPONSE_SIZE.name + "_sum", labels) == len(payload) == 1234


async def test_in_flight_gauge_counts_the_request_being_served(registry, tracer_provider, call_asgi):
    seen = []

    async def app(scope, receive, send):
        seen.append(registry.get_sample_value(semconv.HTTP_IN_FLIGHT.name, {
            "service": "svc", "route": semconv.UNKNOWN_ROUTE, "method": "GET", "api": "", "tier": ""}))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = instrument_app(app, "svc", registry=registry, tracer_provider=tracer_provider)
    await call_asgi(wrapped, "GET", "/x")
    assert seen == [1.0]
    assert registry.get_sample_value(semconv.HTTP_IN_FLIGHT.name, {
        "service": "svc", "route": semconv.UNKNOWN_ROUTE, "method": "GET", "api": "", "tier": ""}) == 0


async def test_excluded_paths_pass_through_untouched(make_app, registry, call_asgi):
    app = make_app()
    bare = await call_asgi(make_app(instrument=False), "GET", "/healthz")
    assert await call_asgi(app, "GET", "/healthz") == bare
    assert series(registry, semconv.HTTP_REQUESTS) == []


async def test_build_info_is_one(make_app, registry):
    make_app(version="1.2.3", commit="abc123")
    from ofsre._version import __version__

    assert registry.get_sample_value(semconv.BUILD_INFO.name, {
        "service": "svc", "version": "1.2.3", "commit": "abc123", "ofsre_version": __version__}) == 1


async def test_settings_come_from_the_environment(monkeypatch, registry, tracer_provider, call_asgi):
    monkeypatch.setenv("OFSRE_SERVICE", "from-env")
    monkeypatch.setenv("OFSRE_VERSION", "9.9.9")
    monkeypatch.setenv("OFSRE_COMMIT", "deadbeef")
    app = instrument_app(PlainTextResponse("ok"), registry=registry, tracer_provider=tracer_provider)
    await call_asgi(app, "GET", "/")
    info = [s for m in registry.collect() for s in m.samples if s.name == semconv.BUILD_INFO.name]
    assert [(s.labels["service"], s.labels["version"], s.labels["commit"], s.value) for s in info] == [
        ("from-env", "9.9.9", "deadbeef", 1.0)]
    assert requests_count(registry, service="from-env", route=semconv.UNKNOWN_ROUTE) == 1


def test_a_service_name_is_required(monkeypatch, registry):
    monkeypatch.delenv("OFSRE_SERVICE", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    with pytest.raises(ValueError, match="service name"):
        instrument_app(PlainTextResponse("ok"), registry=registry)


async def test_instrumenting_twice_is_a_no_op(make_app, registry, tracer_provider, call_asgi):
    app = make_app()
    assert instrument_app(app, "svc", registry=registry, tracer_provider=tracer_provider) is app
    await call_asgi(app, "GET", "/items/1")
    assert requests_count(registry, route="/items/{item_id}") == 1


async def test_starlette_mounts_give_prefixed_templates(registry, tracer_provider, call_asgi):
    async def user(request):
        return PlainTextResponse(request.path_params["name"])

    app = Starlette(routes=[Mount("/api/v1", routes=[Route("/users/{name}", user)])])
    assert list(route_templates(app.routes)) == ["/api/v1/users/{name}"]
    assert instrument_app(app, "svc", registry=registry, tracer_provider=tracer_provider) is app
    status, _, body = await call_asgi(app, "GET", "/api/v1/users/ana")
    assert (status, body) == (200, b"ana")
    assert requests_count(registry, route="/api/v1/users/{name}") == 1


async def test_fastapi_included_routers_give_prefixed_templates(registry, tracer_provider, call_asgi):
    inner = APIRouter()

    @inner.post("/{consentId}/authorise")
    async def authorise(consentId: str):  # noqa: N803 - the Open Finance parameter name
        return {"id": consentId}

    outer = APIRouter()
    outer.include_router(inner, prefix="/consents")
    app = FastAPI()
    app.include_router(outer, prefix="/_sim")
    assert "/_sim/consents/{consentId}/authorise" in list(route_templates(app.routes))
    instrument_app(app, "svc", registry=registry, tracer_provider=tracer_provider)
    status, _, _ = await call_asgi(app, "POST", "/_sim/consents/c-1/authorise")
    assert status == 200
    assert requests_count(registry, route="/_sim/consents/{consentId}/authorise", method="POST") == 1


async def test_works_through_httpx_and_the_app_stays_servable(make_app, registry):
    app = make_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/items/3", headers={"x-fapi-interaction-id": IID})
        metrics = await client.get("/metrics")
    assert response.json() == {"id": 3}
    assert response.headers["x-fapi-interaction-id"] == IID
    assert metrics.status_code == 200
    assert 'ofsre_http_server_requests_total{api="",method="GET",route="/items/{item_id}"' in metrics.text


async def test_exemplars_only_with_openmetrics(make_app, registry, span_exporter):
    app = make_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.get("/items/3")
        text = await client.get("/metrics")
        openmetrics = await client.get("/metrics",
                                       headers={"accept": "application/openmetrics-text; version=1.0.0"})
    trace_id = format(span_exporter.get_finished_spans()[0].context.trace_id, "032x")
    assert text.headers["content-type"].startswith("text/plain")
    assert "trace_id" not in text.text
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    exemplar = f'# {{trace_id="{trace_id}"}}'
    lines = [line for line in openmetrics.text.splitlines() if exemplar in line]
    assert any(line.startswith(semconv.HTTP_REQUESTS.series + "{") for line in lines)
    assert any(line.startswith(semconv.HTTP_DURATION.name + "_bucket{") for line in lines)
    assert openmetrics.text.endswith("# EOF\n")


async def test_metrics_endpoint_gzip_and_custom_path(make_app, call_asgi):
    app = make_app(metrics_path="/internal/metrics")
    status, headers, body = await call_asgi(app, "GET", "/internal/metrics", [("accept-encoding", "gzip")])
    assert status == 200 and (b"content-encoding", b"gzip") in headers
    import gzip

    assert b"ofsre_build_info" in gzip.decompress(body)
    status, _, _ = await call_asgi(app, "GET", "/metrics")
    assert status == 404  # the app's own 404: the default path is no longer served


async def test_promtool_accepts_the_exposition(make_app, registry, call_asgi, promtool_check):
    app = make_app()
    for path in ("/items/1", "/open-banking/accounts/v2/accounts/a/balances", "/nope", "/stream"):
        await call_asgi(app, "GET", path)
    await call_asgi(app, "POST", "/echo", [], b"{}")
    with pytest.raises(Boom):
        await call_asgi(app, "GET", "/boom")
    body, _ = render(registry, "text/plain")
    code, output = promtool_check(body.decode())
    assert code == 0, output
    assert output.strip() == "", output  # no lint findings either


def test_the_readme_lists_every_metric_with_its_type_and_labels():
    readme = Path(semconv.__file__).with_name("README.md").read_text(encoding="utf-8")
    for spec in semconv.ALL:
        assert f"| `{spec.series}` | {spec.kind} | {', '.join(spec.labels)} |" in readme, spec.name


async def test_duration_buckets_come_from_the_catalog_in_use(make_app, registry, call_asgi):
    from ofsre.instrumentation.catalog import parse_catalog, regulatory_buckets

    raw = {"tiers": {"alta": {"p95_ms": 300, "tpm": 2500}, "baixa": {"p95_ms": 7000, "tpm": 500}},
           "ecosystem": {"client_timeout_s": 20},
           "slo": {"latency_objective": 0.95, "availability_objective": 0.995,
                   "availability_daily_objective": 0.95, "availability_window_days": 90,
                   "latency_window_days": 30},
           "family": [{"api": "x", "version": "1.0.0", "base": "/x/v1",
                       "endpoints": [["GET", "/a", "alta"]]}]}
    catalog = parse_catalog(raw)
    app = make_app(catalog=catalog)
    await call_asgi(app, "GET", "/items/1")
    bounds = [float(s.labels["le"]) for m in registry.collect() for s in m.samples
              if s.name == semconv.HTTP_DURATION.name + "_bucket" and s.labels["route"] == "/items/{item_id}"]
    assert bounds == [*regulatory_buckets(catalog), float("inf")]
    assert {0.3, 7.0, 20.0} <= set(bounds) and 1.5 not in bounds   # this catalog's limits, not the default's
