"""httpx clients that trace their calls and propagate the trace to the service they call.

Usage::

    from ofsre.instrumentation.httpclient import instrumented_client

    async with instrumented_client(base_url="http://accounts:8000", timeout=5) as client:
        response = await client.get("/open-banking/accounts/v2/accounts")

    with instrumented_sync_client() as client:      # the same for synchronous code
        client.get("http://consents:8000/healthz")

Every keyword argument goes to ``httpx.AsyncClient``/``httpx.Client`` unchanged (TLS,
limits, transport, event hooks: all yours); ``tracer_provider=`` and ``registry=`` pick a
provider and a Prometheus registry other than the global ones.

Each ``send`` (one logical request, redirects included) is one CLIENT span with the stable
HTTP semantic conventions (``http.request.method``, ``server.address``, ``server.port``,
``url.full`` without credentials or query string, ``http.response.status_code``,
``error.type``), and the W3C ``traceparent`` (plus whatever the global propagator adds) is
injected into the request headers. ``x-fapi-interaction-id`` is *not* forwarded: in Open
Finance it names one request/response pair, so an outgoing call needs its own.

``pcm=True`` marks a client that calls *other institutions*: each of its calls to a catalog
endpoint then also produces a PCM ``CLIENT`` report (:mod:`ofsre.instrumentation.pcm`; only in
a service whose PCM capture is on, ``OFSRE_PCM_CAPTURE``), with a 408 on a timeout.

A failure inside the tracing code is counted in ``ofsre_telemetry_errors_total{component="httpclient"}``
(in the client's ``registry=``) and the request goes out untraced. Calls made while instrumentation is
suppressed (an exporter's own requests) are not traced.
"""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import REGISTRY, CollectorRegistry

from . import semconv
from ._config import SERVICE
from .metrics import count_telemetry_error
from .pcm import PcmCapture, capture_for

__all__ = ["instrumented_client", "instrumented_sync_client", "InstrumentedAsyncClient", "InstrumentedClient"]

COMPONENT = "httpclient"
_TRACER_NAME = "ofsre.instrumentation.httpclient"


def _suppressed() -> bool:
    # The key opentelemetry's exporters and BatchSpanProcessor set around their own I/O.
    return bool(otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY))


def _url_full(url: httpx.URL) -> str:
    """The URL without credentials, query or fragment. Built by hand: ``url.copy_with(...)``
    re-parses and re-validates the URL, about 25x slower, on every outgoing request."""
    path = url.raw_path.split(b"?", 1)[0].decode("ascii")
    return f"{url.scheme}://{url.netloc.decode('ascii')}{path}"


def _start_span(tracer: trace.Tracer, request: httpx.Request,
                registry: CollectorRegistry | None) -> trace.Span | None:
    """Start the CLIENT span and inject its context into ``request``; ``None`` when not tracing."""
    if _suppressed():
        return None
    try:
        method = request.method.upper()
        known = method in semconv.KNOWN_METHODS
        url = request.url
        attributes: dict[str, Any] = {
            "http.request.method": method if known else semconv.OTHER_METHOD,
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            "url.full": _url_full(url),
        }
        if not known:
            attributes["http.request.method_original"] = request.method
        span = tracer.start_span(method if known else "HTTP", kind=SpanKind.CLIENT, attributes=attributes)
        propagate.inject(request.headers, context=trace.set_span_in_context(span))
        return span
    except Exception:  # noqa: BLE001 - telemetry never hurts the request
        count_telemetry_error(COMPONENT, registry)
        return None


def _pcm_capture(pcm: bool | PcmCapture) -> PcmCapture | None:
    """The PCM capture of a ``pcm=True`` client: the service's (``OFSRE_SERVICE``), when its capture is on."""
    if isinstance(pcm, PcmCapture) or not pcm:
        return pcm or None
    service = SERVICE.from_env()
    return capture_for(service, None) if service else None


def _end_span(span: trace.Span, response: httpx.Response | None, error: BaseException | None,
              registry: CollectorRegistry | None) -> None:
    try:
        if span.is_recording():
            if response is not None:
                span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 400:  # client spans: 4xx is an error too
                    span.set_attribute("error.type", str(response.status_code))
                    span.set_status(Status(StatusCode.ERROR))
            elif error is not None:
                span.record_exception(error)
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()
    except Exception:  # noqa: BLE001
        count_telemetry_error(COMPONENT, registry)


class InstrumentedAsyncClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose ``send`` is traced; built by :func:`instrumented_client`."""

    def __init__(self, *args: Any, tracer_provider: trace.TracerProvider | None = None,
                 registry: CollectorRegistry | None = REGISTRY, pcm: bool | PcmCapture = False,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ofsre_tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)
        self._ofsre_registry = registry  # where a failure of the tracing code is counted
        self._ofsre_pcm = _pcm_capture(pcm)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if self._ofsre_pcm is not None:  # PCM CLIENT report around the traced send (one enqueue)
            return await self._ofsre_pcm.send_async(self._traced_send, request, kwargs)
        return await self._traced_send(request, **kwargs)

    async def _traced_send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        span = _start_span(self._ofsre_tracer, request, self._ofsre_registry)
        if span is None:
            return await super().send(request, **kwargs)
        try:
            response = await super().send(request, **kwargs)
        except BaseException as exc:
            _end_span(span, None, exc, self._ofsre_registry)
            raise
        _end_span(span, response, None, self._ofsre_registry)
        return response


class InstrumentedClient(httpx.Client):
    """``httpx.Client`` whose ``send`` is traced; built by :func:`instrumented_sync_client`."""

    def __init__(self, *args: Any, tracer_provider: trace.TracerProvider | None = None,
                 registry: CollectorRegistry | None = REGISTRY, pcm: bool | PcmCapture = False,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ofsre_tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)
        self._ofsre_registry = registry  # where a failure of the tracing code is counted
        self._ofsre_pcm = _pcm_capture(pcm)

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if self._ofsre_pcm is not None:  # PCM CLIENT report around the traced send (one enqueue)
            return self._ofsre_pcm.send_sync(self._traced_send, request, kwargs)
        return self._traced_send(request, **kwargs)

    def _traced_send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        span = _start_span(self._ofsre_tracer, request, self._ofsre_registry)
        if span is None:
            return super().send(request, **kwargs)
        try:
            response = super().send(request, **kwargs)
        except BaseException as exc:
            _end_span(span, None, exc, self._ofsre_registry)
            raise
        _end_span(span, response, None, self._ofsre_registry)
        return response


def instrumented_client(**httpx_kwargs: Any) -> InstrumentedAsyncClient:
    """An ``httpx.AsyncClient`` (every keyword goes to it) whose requests are traced."""
    return InstrumentedAsyncClient(**httpx_kwargs)


def instrumented_sync_client(**httpx_kwargs: Any) -> InstrumentedClient:
    """An ``httpx.Client`` (every keyword goes to it) whose requests are traced."""
    return InstrumentedClient(**httpx_kwargs)
