"""RED metrics, one server span and the ``x-fapi-interaction-id`` contract for any ASGI app.

FastAPI / Starlette (the app object stays the one uvicorn serves as ``module:app``)::

    from fastapi import FastAPI
    from ofsre.instrumentation import instrument_app

    app = FastAPI()
    instrument_app(app, "accounts", version="1.4.2")     # returns the same app

Any other ASGI app: ``app = instrument_app(app, "accounts")`` returns a wrapper, or use the
middleware class directly: ``app = OfsreMiddleware(app, "accounts")``.

Per request, in this order and with no I/O:

1. ``x-fapi-interaction-id``: a valid RFC 4122 UUID is kept, anything else is replaced by a
   new uuid4; the value is echoed on the response, set in :mod:`ofsre.instrumentation.context`
   for logs, and put on the span as ``fapi.interaction_id`` (never on a metric). With
   ``require_interaction_id`` a missing or invalid id is answered 400 with the Open Finance
   error body, and the app is not called.
2. The route *template* is found with one trie walk over the catalog's templates and the
   app's own routes (built on the first request); no match gives ``__unknown__``, so a
   scanner cannot create series. Methods outside the standard nine become ``_OTHER``.
3. One SERVER span (stable HTTP semantic conventions, parent from ``traceparent``) is made
   current while the app runs.
4. Counter, duration histogram (buckets hold every regulatory p95 limit), request and
   response size histograms, in-flight gauge: labels ``service, route, method, status, api,
   tier`` (``api``/``tier`` from the catalog, ``""`` outside it). Label children are cached
   per (route, method, status). The counter and each duration bucket carry a ``trace_id``
   exemplar of a sampled request, replaced at most once a second (not in multiprocess mode,
   which has no exemplars).

An exception from the app counts as 500 and is re-raised unchanged; a client that went away
before any response counts as 499. Every telemetry step is guarded: a failure inside it
increments ``ofsre_telemetry_errors_total{component="asgi"}`` and the request goes on.
The response is the app's, byte for byte, plus the one ``x-fapi-interaction-id`` header.
``/metrics`` is answered by the middleware itself; ``excluded_paths`` (health probes) pass
straight to the app with no telemetry and no header.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Iterable, Iterator
from threading import get_ident
from time import perf_counter
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import REGISTRY, CollectorRegistry

from . import semconv
from ._config import resolve_settings
from .catalog import Catalog, RouteMatcher, load_catalog
from .context import INTERACTION_ID_HEADER, new_interaction_id, reset_interaction_id, set_interaction_id
from .exposition import ASGIApp, Scope, is_multiprocess, metrics_app
from .logs import adopt_server_loggers, ensure_logging
from .metrics import Record, count_telemetry_error, counter, gauge, gauge_adder, histogram, request_recorders
from .openfinance import error_body
from .pcm import PcmCapture, capture_for
from .tracing import LazySpan, Presampler, span_attacher

__all__ = ["OfsreMiddleware", "instrument_app", "is_valid_interaction_id", "error_body",
           "route_templates", "EXCLUDED_PATHS"]

_log = logging.getLogger("ofsre.instrumentation")

COMPONENT = "asgi"  # the `component` label of ofsre_telemetry_errors_total for this module
EXCLUDED_PATHS = ("/metrics", "/healthz", "/readyz")
_IID = INTERACTION_ID_HEADER.encode("ascii")
# RFC 4122: 8-4-4-4-12 hex digits, version 1-5, variant 10xx. Either case (the header is echoed as sent).
_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-5][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}"
                   rb"-[0-9a-fA-F]{12}\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SERVER_KEYS = 256   # span attribute sets kept per (route, Host, scheme); beyond, built per request
_attach_span, _detach_span = span_attacher()   # the server span made current, and the context restored


def is_valid_interaction_id(value: str | bytes) -> bool:
    """True for an RFC 4122 UUID of version 1-5 in canonical 36-character form, any case."""
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    return _UUID.match(raw) is not None


async def _stack_not_built(scope: Scope, receive: Any, send: Any) -> None:
    raise RuntimeError("instrument_app(): the app's middleware stack was not built")


def route_templates(routes: Iterable[Any], prefix: str = "") -> Iterator[str]:
    """Every path template of Starlette/FastAPI-style routes, descending into ``Mount``s.

    Duck-typed (``path_format`` or ``path``, ``routes`` for mounts, ``original_router`` for
    FastAPI's included routers) so no web framework is imported. A mount of a plain ASGI app (static files)
    has no routes: its paths stay ``__unknown__``.
    """
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:  # FastAPI >= 0.13x keeps `include_router` branches unflattened
            context = getattr(route, "include_context", None)
            yield from route_templates(included.routes, prefix + (getattr(context, "prefix", "") or ""))
            continue
        children = getattr(route, "routes", None)
        if children is not None and not isinstance(children, str):  # a Mount: its `path` is the prefix
            yield from route_templates(children, prefix + (getattr(route, "path", None) or ""))
            continue
        # `path_format` drops converters: "/items/{item_id:int}" -> "/items/{item_id}"
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        if path:
            yield prefix + path


class _Route:
    """What is cached per (route template, method): labels, in-flight child (and its lock-free
    adder, see ``OfsreMiddleware._owner``), span name and attributes."""

    __slots__ = ("labels", "in_flight", "in_flight_add", "span_name", "attributes")

    def __init__(self, labels: dict[str, str], in_flight: Any, span_name: str, attributes: dict[str, str]):
        self.labels = labels
        self.in_flight = in_flight
        self.in_flight_add = gauge_adder(in_flight)
        self.span_name = span_name
        self.attributes = attributes


class _Exchange:
    """The state of one request/response pair. Lives in ``__call__``'s frame, never on the middleware."""

    __slots__ = ("_send", "_receive", "_registry", "t0", "t_end", "status", "response_size", "request_size",
                 "interaction_id", "interaction_header", "reject", "route", "span", "context_token",
                 "interaction_token", "in_flight", "disconnected", "count_body", "pcm")

    def __init__(self, receive: Any, send: Any, registry: CollectorRegistry):
        self._send = send
        self._receive = receive
        self._registry = registry
        self.t0 = perf_counter()
        self.t_end: float | None = None
        self.status: int | None = None
        self.response_size = 0
        self.request_size = 0  # from Content-Length; a chunked body is counted as the app reads it
        self.count_body = False
        self.interaction_id: str | None = None
        self.interaction_header: bytes | None = None
        self.reject: str | None = None  # why the request is refused (require_interaction_id), if it is
        self.route: _Route | None = None
        self.span: Any = None
        self.context_token: Any = None
        self.interaction_token: Any = None
        self.in_flight: _Route | None = None   # the route whose in-flight gauge this request incremented
        self.disconnected = False
        self.pcm: Any = None  # the PCM SERVER call being captured (ofsre.instrumentation.pcm), if any

    async def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = await self._receive()
        try:
            kind = message["type"]
            if kind == "http.request":
                if self.count_body:
                    self.request_size += len(message.get("body", b""))
            elif kind == "http.disconnect":
                self.disconnected = True
        except Exception:  # noqa: BLE001 - telemetry never hurts the request
            count_telemetry_error(COMPONENT, self._registry)
        return message

    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        """The server's ``send(message)`` awaitable, returned as it is (no coroutine of ours around
        it): the response ends, for the duration, when its last message is handed to the server."""
        try:
            kind = message["type"]
            if kind == "http.response.body":
                self.response_size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    self.t_end = perf_counter()
            elif kind == "http.response.start":
                self.status = message["status"]
                if self.interaction_header is not None:
                    message = self._with_interaction_id(message)
            elif kind == "http.response.pathsend":  # Starlette FileResponse via the pathsend extension
                self.t_end = perf_counter()
        except Exception:  # noqa: BLE001
            count_telemetry_error(COMPONENT, self._registry)
        result: Awaitable[None] = self._send(message)
        return result

    def _with_interaction_id(self, message: dict[str, Any]) -> dict[str, Any]:
        headers = message.get("headers") or []
        for name, _ in headers:
            if name == _IID:
                return message  # the app echoed it itself
        # A new list and a new message: the app may reuse its own header list (a module-level Response).
        return {**message, "headers": [*headers, (_IID, self.interaction_header)]}


class OfsreMiddleware:
    """Pure ASGI middleware; see the module docstring. Arguments are those of :func:`instrument_app`
    (``logs`` included: used directly, it sets up the same JSON logs), plus ``routes``: an object whose
    ``.routes`` lists the app's routes (default: the wrapped app, or ``scope["app"]``)."""

    def __init__(self, app: ASGIApp | None, service: str | None = None, *, version: str | None = None,
                 commit: str | None = None, env: str | None = None, registry: CollectorRegistry | None = None,
                 catalog: Catalog | None = None, tracer_provider: trace.TracerProvider | None = None,
                 require_interaction_id: bool | None = None, metrics_path: str | None = "/metrics",
                 excluded_paths: Iterable[str] = EXCLUDED_PATHS, routes: Any = None,
                 pcm: bool | PcmCapture | None = None, logs: bool | None = None):
        # None from instrument_app: the Starlette stack it wraps is built later (build_middleware_stack).
        self.app: ASGIApp = app if app is not None else _stack_not_built
        self.settings = resolve_settings(service, version=version, commit=commit, env=env,
                                         require_interaction_id=require_interaction_id)
        self.registry = registry if registry is not None else REGISTRY
        self.catalog = catalog if catalog is not None else load_catalog()
        self._routes_source = routes
        self._tracer = trace.get_tracer("ofsre.instrumentation", _ofsre_version(),
                                        tracer_provider=tracer_provider)
        # Decided once: a no-op tracer (NoOpTracerProvider, OTEL_SDK_DISABLED) costs nothing per request.
        # A proxy tracer (no provider installed yet) may become real later, so it counts as tracing.
        self._tracing = not isinstance(self._tracer, trace.NoOpTracer)
        # The SDK's samplers decide before any attribute is built (see tracing.Presampler); None otherwise.
        self._presampler = _presampler(self._tracer) if self._tracing else None
        self._exemplars = not is_multiprocess()  # prometheus_client drops them there: skip the work
        self._metrics_path = metrics_path
        self._metrics_app = metrics_app(registry) if metrics_path else None
        self._excluded = frozenset(excluded_paths) | ({metrics_path} if metrics_path else frozenset())
        reg = self.registry
        self._requests = counter(semconv.HTTP_REQUESTS, reg)
        # buckets: this catalog's limits
        self._duration = histogram(semconv.HTTP_DURATION, reg, self.catalog)
        self._request_size = histogram(semconv.HTTP_REQUEST_SIZE, reg)
        self._response_size = histogram(semconv.HTTP_RESPONSE_SIZE, reg)
        self._in_flight = gauge(semconv.HTTP_IN_FLIGHT, reg)
        # Built on the first request, when the app's routes exist (see _prepare).
        self._matcher = RouteMatcher()
        self._prepared = False
        self._propagation_fields: frozenset[bytes] = frozenset()
        # Bounded caches: routes come from the catalog and the app (plus __unknown__), methods
        # from KNOWN_METHODS (plus _OTHER), statuses from the app's own responses.
        self._routes: dict[tuple[str, str], _Route] = {}
        self._series: dict[tuple[_Route, int], tuple[Record, Record]] = {}
        self._server_keys: dict[tuple[Any, ...], dict[str, Any]] = {}   # see _span_parts
        # Metric updates skip prometheus_client's locks while one thread (the event loop's) serves;
        # the first request from another thread switches this middleware to the locked methods.
        self._owner: int | None = None
        self._first_request = True
        # PCM SERVER reports: None unless this service opted in (argument, then OFSRE_PCM_CAPTURE).
        self._pcm = capture_for(self.settings.service, pcm)
        # True when this middleware set up the logs (uvicorn's loggers again later)
        self._adopt_server_logs = False
        if logs is not False:
            try:
                ensure_logging(self.settings.service, env=self.settings.env, version=self.settings.version)
                self._adopt_server_logs = True
            except Exception:  # noqa: BLE001 - logging set-up must not stop the service
                count_telemetry_error("logs", self.registry)
        self._set_build_info()

    def _set_build_info(self) -> None:
        s = self.settings
        try:
            gauge(semconv.BUILD_INFO, self.registry).labels(
                service=s.service, version=s.version, commit=s.commit, ofsre_version=_ofsre_version()).set(1)
        except Exception:  # noqa: BLE001
            count_telemetry_error(COMPONENT, self.registry)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self._adopt_server_logs:  # once: uvicorn.run(app) configures its loggers after instrument_app
            self._adopt_server_logs = False
            adopt_server_loggers()
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan, websocket: not ours
            return
        path = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):  # routes are matched without the mount prefix
            path = path[len(root):] or "/"
        if path in self._excluded:
            if path == self._metrics_path and self._metrics_app is not None:
                await self._metrics_app(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return

        if self._first_request:
            self._first_request = False
            self._owner = get_ident()   # the first request's thread; None for good once another one serves
        elif self._owner is not None and get_ident() != self._owner:
            self._owner = None   # before this request updates anything
        exchange = _Exchange(receive, send, self.registry)
        try:
            self._start(exchange, scope, path)
        except Exception:  # noqa: BLE001 - serve the request uninstrumented rather than fail it
            count_telemetry_error(COMPONENT, self.registry)
        error: BaseException | None = None
        try:
            if exchange.reject:
                await self._reject(exchange)
            else:
                await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(exchange, error)

    # -- before the app --------------------------------------------------------------------
    def _prepare(self, scope: Scope) -> None:
        matcher = RouteMatcher()
        for endpoint in self.catalog:  # first: a catalog template wins over an app's spelling of it
            matcher.add(endpoint.route, endpoint.route)
        source = self._routes_source or scope.get("app") or self.app
        try:
            for template in route_templates(getattr(source, "routes", None) or ()):
                matcher.add(template, template)
        except Exception:  # noqa: BLE001 - an unreadable route table: the catalog's templates still match
            count_telemetry_error(COMPONENT, self.registry)
        fields = propagate.get_global_textmap().fields
        self._propagation_fields = frozenset(f.encode("latin-1") for f in fields)
        self._matcher = matcher
        self._prepared = True

    def _start(self, exchange: _Exchange, scope: Scope, path: str) -> None:
        """Everything before the app runs, as separate steps: a failure in one (counted in
        ``ofsre_telemetry_errors_total``) costs only that step, so a bug in route matching
        still leaves the interaction id, the 400 of ``require_interaction_id`` and the span."""
        interaction = host = carrier = None
        try:
            if not self._prepared:
                self._prepare(scope)
            interaction, host, carrier = self._scan_headers(exchange, scope["headers"])
        except Exception:  # noqa: BLE001
            count_telemetry_error(COMPONENT, self.registry)
        try:
            self._start_interaction(exchange, interaction)
        except Exception:  # noqa: BLE001
            count_telemetry_error(COMPONENT, self.registry)
        method = scope.get("method", "")
        route = None
        try:
            route = self._route_of(exchange, method, path, scope)
        except Exception:  # noqa: BLE001
            count_telemetry_error(COMPONENT, self.registry)
        if self._tracing:
            try:
                self._start_span(exchange, scope, path, route, carrier, host, method)
            except Exception:  # noqa: BLE001
                count_telemetry_error(COMPONENT, self.registry)
        if route is not None:
            try:
                (route.in_flight_add if get_ident() == self._owner else route.in_flight.inc)(1)
                exchange.in_flight = route
            except Exception:  # noqa: BLE001
                count_telemetry_error(COMPONENT, self.registry)

    def _scan_headers(self, exchange: _Exchange, headers: Any) -> tuple[bytes | None, bytes | None,
                                                                         dict[str, str] | None]:
        """One pass over the request headers: (interaction id, host, propagation carrier)."""
        interaction = content_length = host = None
        carrier: dict[str, str] | None = None
        fields = self._propagation_fields
        for name, value in headers:
            if name == _IID:
                interaction = value
            elif name == b"content-length":
                content_length = value
            elif name == b"host":
                host = value
            elif name == b"transfer-encoding":
                exchange.count_body = True
            elif name in fields:
                if carrier is None:
                    carrier = {}
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        if content_length is not None:
            # RFC 9110: 1*DIGIT. Anything else ("abc", "1e3", "-1", "1_000", which int() would
            # take) is not a length: the body is then counted as the app reads it.
            if content_length.isdigit():
                exchange.request_size = int(content_length)
            else:
                exchange.count_body = True
        return interaction, host, carrier

    def _start_interaction(self, exchange: _Exchange, interaction: bytes | None) -> None:
        """Step 1: keep a valid ``x-fapi-interaction-id``, else make one (or refuse the request)."""
        if interaction is not None and _UUID.match(interaction) is not None:
            exchange.interaction_header = interaction
            exchange.interaction_id = interaction.decode("ascii")
        else:
            if self.settings.require_interaction_id:  # decided first: nothing below may skip the 400
                exchange.reject = "invalid" if interaction else "missing"
            exchange.interaction_id = new_interaction_id()
            exchange.interaction_header = exchange.interaction_id.encode("ascii")
        exchange.interaction_token = set_interaction_id(exchange.interaction_id)

    def _route_of(self, exchange: _Exchange, method: str, path: str, scope: Scope) -> _Route:
        """Step 2: the route template (and the PCM capture, which needs it)."""
        label_method = method if method in semconv.KNOWN_METHODS else semconv.OTHER_METHOD
        template = self._matcher.match(path) or semconv.UNKNOWN_ROUTE
        route = self._routes.get((template, label_method)) or self._new_route(template, label_method)
        exchange.route = route
        if self._pcm is not None:  # PCM: catalog calls only; O(1), the report is queued in _finish
            exchange.pcm = self._pcm.server_start(label_method, template, exchange.interaction_id, scope)
        return route

    def _start_span(self, exchange: _Exchange, scope: Scope, path: str, route: _Route | None,
                    carrier: dict[str, str] | None, host: bytes | None, method: str) -> None:
        """Step 3: the SERVER span, current while the app runs."""
        parent = propagate.extract(carrier) if carrier is not None else None
        arguments = (route, scope, path, host, method, exchange.interaction_id)   # of _span_parts
        span = None
        if self._presampler is not None:
            # Dropped: no name, no attributes, no SDK call. Sampled: a LazySpan, or None (the SDK's span,
            # below).
            span = self._presampler.start(parent, SpanKind.SERVER, self._span_parts, arguments)
        if span is None:
            name, attributes = self._span_parts(*arguments)
            span = self._tracer.start_span(name, parent, SpanKind.SERVER, attributes)
        exchange.span = span
        exchange.context_token = _attach_span(span, parent)

    def _span_parts(self, route: _Route | None, scope: Scope, path: str, host: bytes | None, method: str,
                    interaction_id: str | None) -> tuple[str, dict[str, Any]]:
        """The server span's name and its attributes known before the app runs (``HTTP`` and the method
        alone if the route step failed), all at once: the SDK validates them in one pass (a later
        ``set_attributes`` costs a second pass and a lock), and samplers get to see them. The route's and
        the server's attributes are kept per (route, Host header or socket, scheme), for at most
        _SERVER_KEYS keys (the Host header is the client's to choose); ``url.path`` and the interaction
        id are added."""
        if route is None:
            name, base = "HTTP", _server_attributes({"http.request.method": method}, scope, host)
        elif route.labels["method"] == semconv.OTHER_METHOD:
            name = route.span_name
            known = {**route.attributes, "http.request.method_original": method}
            base = _server_attributes(known, scope, host)
        else:
            name = route.span_name
            key = (route, host or scope.get("server"), scope.get("scheme"))
            cached = self._server_keys.get(key)
            if cached is None:
                cached = _server_attributes(route.attributes, scope, host)
                if len(self._server_keys) < _SERVER_KEYS:
                    self._server_keys[key] = cached
            base = cached
        return name, {**base, "url.path": path, "fapi.interaction_id": interaction_id}

    def _new_route(self, template: str, method: str) -> _Route:
        endpoint = None if template == semconv.UNKNOWN_ROUTE else self.catalog.lookup(method, template)
        labels = {"service": self.settings.service, "route": template, "method": method,
                  "api": endpoint.api if endpoint else semconv.NO_API,
                  "tier": endpoint.tier.name if endpoint else semconv.NO_API}
        in_flight = self._in_flight.labels(**{k: labels[k] for k in semconv.HTTP_IN_FLIGHT.labels})
        # OpenTelemetry HTTP conventions: "{method} {http.route}", "HTTP" for unknown methods,
        # and no route (nor http.route) when none matched.
        span_method = "HTTP" if method == semconv.OTHER_METHOD else method
        attributes = {"http.request.method": method}
        if template == semconv.UNKNOWN_ROUTE:
            span_name = span_method
        else:
            span_name = f"{span_method} {template}"
            attributes["http.route"] = template
        route = _Route(labels, in_flight, span_name, attributes)
        self._routes[(template, method)] = route
        return route

    async def _reject(self, exchange: _Exchange) -> None:
        """400 for a missing or invalid interaction id (``require_interaction_id``), with the
        error codes the Open Finance specifications use for a missing or an invalid parameter."""
        if exchange.reject == "missing":
            code, title = "PARAMETRO_NAO_INFORMADO", "Parâmetro não informado"
        else:
            code, title = "PARAMETRO_INVALIDO", "Parâmetro inválido"
        body = error_body(code, title,
                          f"O cabeçalho {INTERACTION_ID_HEADER} é obrigatório e deve ser um UUID "
                          "(RFC 4122).")
        await exchange.send({"type": "http.response.start", "status": 400, "headers": [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]})
        await exchange.send({"type": "http.response.body", "body": body})

    # -- after the app ---------------------------------------------------------------------
    def _finish(self, exchange: _Exchange, error: BaseException | None) -> None:
        """Record the request. Never raises: each step is guarded on its own."""
        end = exchange.t_end or perf_counter()
        if isinstance(error, Exception):
            status = 500
        elif exchange.status is not None:
            status = exchange.status
        else:  # no response: the client left (or the task was cancelled), else the server answers 500
            status = 499 if exchange.disconnected or error is not None else 500
        span = exchange.span
        route = exchange.route
        if route is not None:
            try:
                self._observe(exchange, route, status, end - exchange.t0, span)
            except Exception:  # noqa: BLE001
                count_telemetry_error(COMPONENT, self.registry)
        if exchange.pcm is not None and self._pcm is not None:  # PCM SERVER report: one enqueue, no I/O
            try:
                self._pcm.server_finish(exchange.pcm, status, end - exchange.t0)
            except Exception:  # noqa: BLE001
                count_telemetry_error(COMPONENT, self.registry)
        if exchange.in_flight is not None:
            try:
                counted = exchange.in_flight
                (counted.in_flight_add if get_ident() == self._owner else counted.in_flight.inc)(-1)
            except Exception:  # noqa: BLE001
                count_telemetry_error(COMPONENT, self.registry)
        if span is not None and type(span) is not trace.NonRecordingSpan:   # a dropped one has nothing to end
            try:
                if type(span) is LazySpan and error is None and status < 500:
                    span.end_as_server(status)   # the common case, without turning it into the SDK's span
                else:
                    _end_span(span, status, error)
            except Exception:  # noqa: BLE001
                count_telemetry_error(COMPONENT, self.registry)
        try:
            if exchange.context_token is not None:
                _detach_span(exchange.context_token)
            if exchange.interaction_token is not None:
                reset_interaction_id(exchange.interaction_token)
        except Exception:  # noqa: BLE001
            count_telemetry_error(COMPONENT, self.registry)

    def _observe(self, exchange: _Exchange, route: _Route, status: int, seconds: float, span: Any) -> None:
        recorders = self._series.get((route, status)) or self._new_series(route, status)
        # The event loop's thread: lock-free updates (metrics.request_recorders); once another
        # thread has served too: prometheus_client's locked methods, from then on.
        record = recorders[1] if get_ident() == self._owner else recorders[0]
        trace_id = 0   # the exemplar's, if any (request_recorders makes one at most once a second per bucket)
        if self._exemplars and span is not None and type(span) is not trace.NonRecordingSpan:
            ctx = span.get_span_context()   # (a dropped span's flags are unsampled: no exemplar)
            if ctx.trace_flags.sampled:
                trace_id = ctx.trace_id
        record(seconds, exchange.request_size, exchange.response_size, trace_id)

    def _new_series(self, route: _Route, status: int) -> tuple[Record, Record]:
        """The (locked, lock-free) recorders of the four children of one (route, method, status)."""
        labels = dict(route.labels, status=str(status))
        values = {k: labels[k] for k in semconv.HTTP_LABELS}
        recorders = request_recorders(
            self._requests.labels(**values), self._duration.labels(**values),
            self._request_size.labels(**values), self._response_size.labels(**values))
        self._series[(route, status)] = recorders
        return recorders


def _server_attributes(route_attributes: dict[str, str], scope: Scope, host: bytes | None) -> dict[str, Any]:
    """The route's span attributes plus the server's: ``url.scheme``, ``server.address``/``port``."""
    scheme = scope.get("scheme", "http")
    address, port = _server_address(host, scope.get("server"), scheme)
    attributes: dict[str, Any] = {**route_attributes, "url.scheme": scheme}
    if address:
        attributes["server.address"] = address
    if port:
        attributes["server.port"] = port
    return attributes


def _server_address(host: bytes | None, server: Any, scheme: str) -> tuple[str | None, int | None]:
    """``server.address``/``server.port`` from the Host header (as the conventions ask), else the socket."""
    if host:
        text = host.decode("latin-1")
        name, sep, port = text.rpartition(":")
        if sep and not text.endswith("]") and port.isdigit():
            return name, int(port)
        return text, _DEFAULT_PORTS.get(scheme)
    if server:
        return server[0], server[1]
    return None, None


def _end_span(span: Any, status: int, error: BaseException | None) -> None:
    if span.is_recording():
        span.set_attribute("http.response.status_code", status)
        if isinstance(error, Exception):
            span.record_exception(error)
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        elif status >= 500:  # server spans: only 5xx are errors (4xx are the client's)
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
    span.end()


def _presampler(tracer: Any) -> Any:
    try:
        return Presampler.of(tracer)
    except Exception:  # noqa: BLE001 - no shortcut, the tracer still works
        _log.warning("ofsre: sampling shortcut unavailable", exc_info=True)
        return None


def _ofsre_version() -> str:
    try:
        from ofsre._version import __version__
    except Exception:  # noqa: BLE001 - vendored copies of the library have no package version
        return "unknown"
    return __version__


def _disable_fastapi_native_tracing(app: Any) -> None:
    """Keep one SERVER span per request.

    Recent FastAPI releases open their own server span (outside the middleware stack) as
    soon as a global tracer provider exists, which ``setup_tracing`` installs. Ours knows the
    catalog route and the interaction id, so FastAPI's is switched off for this app, through
    the same dict its ``FastAPI(telemetry={"tracing": False})`` option fills. Its metrics and
    logs (OpenTelemetry meter/logger providers, off unless configured) are left alone.
    """
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict) and config.get("tracing"):
        config["tracing"] = False
        _log.info("FastAPI's own tracing is off for this app: ofsre makes the server span")


def instrument_app(app: Any, service: str | None = None, *, version: str | None = None,
                   commit: str | None = None, env: str | None = None,
                   registry: CollectorRegistry | None = None,
                   catalog: Catalog | None = None, tracer_provider: trace.TracerProvider | None = None,
                   require_interaction_id: bool | None = None, metrics_path: str | None = "/metrics",
                   excluded_paths: Iterable[str] = EXCLUDED_PATHS, pcm: bool | PcmCapture | None = None,
                   logs: bool | None = None) -> Any:
    """Instrument an ASGI app; returns the app to serve.

    A Starlette/FastAPI app is returned *itself*, its middleware stack wrapped so the
    instrumentation is the outermost layer (it sees the 500 that Starlette's error handler
    sends, and the exception after it); anything else is returned wrapped in
    :class:`OfsreMiddleware`.

    ``service``, ``version``, ``commit``, ``env`` and ``require_interaction_id`` (default
    false) fall back to ``OFSRE_*`` variables. ``registry`` defaults to prometheus_client's
    global one (ignored for exposition under ``PROMETHEUS_MULTIPROC_DIR``). Without
    ``tracer_provider``, :func:`ofsre.instrumentation.tracing.setup_tracing` installs the
    global one (idempotent; it exports only when ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set).
    ``metrics_path=None`` serves no metrics endpoint. ``pcm`` switches PCM SERVER reports on
    (``True`` or a :class:`~ofsre.instrumentation.pcm.PcmCapture`) or off (``False``); by default
    ``OFSRE_PCM_CAPTURE`` decides (see :mod:`ofsre.instrumentation.pcm`). Calling it twice on one
    app is a no-op.

    Logs: unless ``logs=False`` or logging was already configured through ofsre
    (:func:`~ofsre.instrumentation.logs.configure_logging`), the root logger is set up for
    JSON lines on stdout with LGPD redaction and the trace/span/interaction ids, and
    uvicorn's own loggers are routed through it (:func:`~ofsre.instrumentation.logs.ensure_logging`).
    """
    existing = getattr(getattr(app, "build_middleware_stack", None), "ofsre_middleware", None)
    if existing is not None:
        _log.warning("instrument_app(): %r is already instrumented", app)
        return app
    starlette_like = hasattr(app, "build_middleware_stack") and hasattr(app, "middleware_stack")
    middleware = OfsreMiddleware(
        None if starlette_like else app, service, version=version, commit=commit, env=env, registry=registry,
        catalog=catalog, tracer_provider=tracer_provider, require_interaction_id=require_interaction_id,
        metrics_path=metrics_path, excluded_paths=excluded_paths, routes=app, pcm=pcm, logs=logs)
    if tracer_provider is None:
        from .tracing import setup_tracing

        setup_tracing(middleware.settings.service, version=middleware.settings.version)
    if not starlette_like:
        return middleware
    _disable_fastapi_native_tracing(app)
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        middleware.app = build()
        return middleware

    build_middleware_stack.ofsre_middleware = middleware  # type: ignore[attr-defined]
    app.build_middleware_stack = build_middleware_stack
    app.middleware_stack = None  # rebuilt, with us outside, on the next request or lifespan
    return app
