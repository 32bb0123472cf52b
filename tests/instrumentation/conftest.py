"""Fixtures for the ASGI middleware, tracing and HTTP-client tests.

Every test gets a fresh ``CollectorRegistry`` and its own SDK tracer provider feeding an
in-memory exporter; nothing global is touched. ``call_asgi`` drives an ASGI app directly
(no HTTP client in between) and returns the raw status, header list and body, so tests can
compare responses byte for byte.
"""

from __future__ import annotations

import subprocess

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from ofsre.instrumentation import context, instrument_app

BALANCES = "/open-banking/accounts/v2/accounts/{accountId}/balances"


class Boom(RuntimeError):
    """The exception the test app raises; tests check the very same object comes back."""


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


@pytest.fixture
def spans(tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter):
    """``(provider, exporter)``: the test's tracer provider and what it exported."""
    return tracer_provider, span_exporter


def build_test_app() -> FastAPI:
    """A small FastAPI app: a catalog route, a parametrised route, body echo, errors, streaming."""
    app = FastAPI()
    app.state.raised = []

    @app.get("/items/{item_id}")
    async def item(item_id: int):
        return {"id": item_id}

    @app.get(BALANCES)
    async def balances(accountId: str):  # noqa: N803 - the Open Finance parameter name
        return {"data": {"accountId": accountId}}

    @app.post("/echo")
    async def echo(request: Request):
        return PlainTextResponse(await request.body(), headers={"x-app": "1"})

    @app.get("/whoami")
    async def whoami():
        return {"interaction_id": context.interaction_id()}

    @app.get("/stream")
    async def stream():
        async def chunks():
            for part in (b"a" * 10, b"b" * 20, b"c" * 30):
                yield part
        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/boom")
    async def boom():
        exc = Boom("kaput")
        app.state.raised.append(exc)
        raise exc

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    return app


@pytest.fixture
def make_app(registry: CollectorRegistry, tracer_provider: TracerProvider):
    """``make_app(instrument=True, **instrument_app_kwargs)`` -> the test FastAPI app."""

    def make(instrument: bool = True, **kwargs):
        app = build_test_app()
        if instrument:
            kwargs.setdefault("registry", registry)
            kwargs.setdefault("tracer_provider", tracer_provider)
            instrument_app(app, kwargs.pop("service", "svc"), **kwargs)
        return app

    return make


async def _call_asgi(app, method: str = "GET", path: str = "/", headers=(), body: bytes = b"",
                     disconnect: bool = False):
    """Run one HTTP request through ``app``; returns ``(status, headers, body)`` as sent."""
    raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if body:
        raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver:8080"), *raw_headers], "server": ("127.0.0.1", 8080),
             "client": ("127.0.0.1", 50000)}
    messages = [{"type": "http.disconnect"}] if disconnect else [
        {"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    if start is None:
        return None, [], b""
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], [tuple(h) for h in start.get("headers", [])], payload


@pytest.fixture
def call_asgi():
    return _call_asgi


@pytest.fixture
def promtool_check():
    """``promtool_check(text)`` -> promtool's ``(returncode, output)`` for an exposition."""

    def check(text: str):
        proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                              timeout=60)
        return proc.returncode, proc.stdout + proc.stderr

    return check
