"""The embedded API gateway: the one door of the platform.

Per request, in this order (each refusal answers with the Open Finance error body)::

    guard     malformed headers → 400, body over OFSRE_MAX_BODY_BYTES → 413, slow body → 408
              (guard.py; the request line and headers are bounded in protocol.py: 414, 431, 408)
    path      dot segments, encoded slashes or backslashes, empty segments, control characters → 400
    route     the catalog, and only the catalog: a path no catalog template matches → 404, a
              template with another method → 405; a family no module serves → 404. Families go
              to modules by ``SERVICE_OF_API`` (consents and resources → consents, accounts →
              accounts, payments → payments); ``/_sim/…``, ``/metrics``, ``/openapi.json`` never.
    mTLS      client certificate (see mtls.py): missing → 401; untrusted, a CA, no organisation → 403
    TPM       per organisation and endpoint, fixed clock minute, limit from the catalog → tpm_status (429);
              fleet-wide in Redis with OFSRE_REDIS_URL, else per replica (limits.py)
    TPS       global capacity, OFSRE_GATEWAY_TPS_LIMIT (default: catalog min_capacity_tps) →
              capacity_status (529)
    proxy     exactly the path that was matched, to the next replica in round-robin order, over one
              pooled instrumented httpx client; a refused connection moves on to the next replica,
              and so does a pooled connection the replica closed unanswered (a replica leaving)
              when the request may be repeated (GET, HEAD, OPTIONS, or an ``x-idempotency-key``);
              none left → 502; no answer within the catalog's client_timeout_s → 504

The origin is the certificate's organisationId when there is one, else the client's IP
(OFSRE_MTLS=off). Upstream calls carry the trace (``traceparent``), the request's
``x-fapi-interaction-id`` (one id per request/response pair: the gateway and the module
serve the same pair), the verified organisationId (``x-ofsre-client-org-id``) with the
gateway's secret (``x-ofsre-gateway-secret``, OFSRE_GATEWAY_SECRET; any copy of either sent by
the client is dropped), ``x-forwarded-for``/``x-forwarded-proto`` and the original Host (so the
modules' ``links`` point at the gateway). Header values are never logged: they carry tokens.

The proxy is a plain ASGI callable mounted on a catch-all route: FastAPI routing and the
instrumentation middleware (metrics labelled by catalog route template, the SERVER span,
the interaction id) surround it, and nothing else does per request.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import re
import time
from collections.abc import Callable
from urllib.parse import quote

import httpx
from fastapi import FastAPI
from opentelemetry.trace import TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.responses import Response
from starlette.routing import Route

from ofsre.instrumentation.catalog import Catalog, Endpoint, load_catalog
from ofsre.instrumentation.context import INTERACTION_ID_HEADER, interaction_id
from ofsre.instrumentation.httpclient import instrumented_client
from ofsre.instrumentation.pcm import capturing as capturing_pcm
from ofsre.instrumentation.pcm import identify_client

from ..app_common import CLIENT_ORG_HEADER, consent_id_from, service_app
from ..contracts import IDEMPOTENCY_HEADER
from ..errors import error_response
from ..guard import GATEWAY_SECRET_HEADER
from ..settings import Settings
from .limits import WindowCounter, tpm_counter
from .mtls import Authenticator, CertificateRejected, CertificateVerifier
from .upstreams import Upstreams

__all__ = ["create_app", "GatewayProxy", "SERVICE_OF_API", "canonical_path"]

_log = logging.getLogger("ofsre.platform.gateway")

# Which module serves each API family of the catalog; a family not listed is not served here.
SERVICE_OF_API = {"consents": "consents", "resources": "consents", "accounts": "accounts",
                  "payments": "payments"}
# Hop-by-hop headers (RFC 9110 §7.6.1) and what the gateway sets itself.
_DROP_REQUEST = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                           b"trailer", b"transfer-encoding", b"upgrade", b"content-length",
                           CLIENT_ORG_HEADER.encode(), GATEWAY_SECRET_HEADER.encode(),
                           INTERACTION_ID_HEADER.encode(), b"x-forwarded-for", b"x-forwarded-proto"})
_DROP_RESPONSE = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                            "trailer",
                            "transfer-encoding", "upgrade", "content-length", "content-encoding", "date",
                            "server", INTERACTION_ID_HEADER})
# In the raw request target: an encoded slash, backslash or NUL, a backslash, an empty segment.
_AMBIGUOUS_RAW = re.compile(rb"%(?:2[fF]|5[cC]|00)|\\|//")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What the path may hold unencoded when forwarded (RFC 3986 pchar and "/").
_PATH_SAFE = "/!$&'()*+,;=:@-._~"


def canonical_path(scope) -> str | None:
    """The request's decoded path when it has one meaning only, else None.

    Refused: dot segments (``.``/``..``, also percent-encoded), encoded slashes and backslashes
    (``%2F``, ``%5C``), backslashes, empty segments (``//``), NUL and control characters. What
    the gateway matches against the catalog is then exactly what the module routes on.
    """
    path = scope["path"]
    raw = scope.get("raw_path") or path.encode("utf-8")
    if not path.startswith("/") or _AMBIGUOUS_RAW.search(raw) or _CONTROL.search(path):
        return None
    if any(segment in (".", "..") for segment in path.split("/")):
        return None
    return path


class GatewayProxy:
    """The ASGI proxy; holds the limiters, the authenticator, the upstreams and the client."""

    def __init__(self, settings: Settings, catalog: Catalog, upstreams: Upstreams,
                 authenticator: Authenticator | None, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time,
                 registry: CollectorRegistry | None = REGISTRY,
                 tracer_provider: TracerProvider | None = None) -> None:
        self.catalog = catalog
        self.upstreams = upstreams
        self.authenticator = authenticator  # None: OFSRE_MTLS=off
        self.services = {api: service for api, service in SERVICE_OF_API.items() if api in catalog.families}
        self.tps_limit = settings.gateway_tps_limit or int(catalog.ecosystem["min_capacity_tps"])
        self.timeout_s = float(catalog.ecosystem["client_timeout_s"])
        self.tpm_status = int(catalog.ecosystem["tpm_status"])
        self.capacity_status = int(catalog.ecosystem["capacity_status"])
        self._secret = settings.gateway_secret.encode() if settings.gateway_secret else None
        self.tpm = tpm_counter(clock=clock)  # in Redis with OFSRE_REDIS_URL: one count for every replica
        self.tps = WindowCounter(1, clock)
        self.transport = transport  # tests: an httpx transport standing in for the network
        self.registry = registry  # the app's: the client's telemetry errors are counted there
        self.tracer_provider = tracer_provider  # the app's: the client spans nest under its server spans
        self.client: httpx.AsyncClient | None = None

    def open(self) -> None:
        self.client = instrumented_client(transport=self.transport or _ShardedTransport(),
                                          registry=self.registry, tracer_provider=self.tracer_provider,
                                          cookies=_refusing_cookie_jar(),
                                          timeout=httpx.Timeout(self.timeout_s))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        await self.tpm.aclose()

    def _route(self, method: str, path: str) -> Endpoint | Response:
        """The catalog entry of a canonical path, or the refusal to send."""
        entry = self.catalog.match(method, path)
        if entry is None:
            allowed = self.catalog.allowed_methods(path)
            if allowed:
                return error_response(405, f"{method} is not allowed here",
                                      headers={"allow": ", ".join(allowed)})
            return error_response(404, "no Open Finance API at this path")
        if entry.api not in self.services:
            return error_response(404, f"the {entry.api} API is not served by this platform")
        return entry

    async def __call__(self, scope, receive, send) -> None:
        method = scope["method"]
        path = canonical_path(scope)
        if path is None:
            return await error_response(400, "the path is not in canonical form (dot segments, encoded "
                                             "or doubled slashes, control characters)")(scope, receive, send)
        entry = self._route(method, path)
        if isinstance(entry, Response):
            return await entry(scope, receive, send)
        org_id = None
        if self.authenticator is not None:
            try:
                org_id = self.authenticator.authenticate(scope).org_id
            except CertificateRejected as rejected:
                return await error_response(rejected.status, rejected.detail)(scope, receive, send)
        if capturing_pcm():  # PCM SERVER report (OFSRE_PCM_CAPTURE=gateway): the verified caller, its consent
            headers = dict(scope["headers"])
            consent_id = consent_id_from(headers.get(b"authorization", b"").decode("latin-1"),
                                         headers.get(b"x-consent-id", b"").decode("latin-1"))
            identify_client(org_id, consentId=consent_id)
        refusal = await self._over_limit(scope, entry, org_id)
        if refusal is not None:
            return await refusal(scope, receive, send)
        body = await _read_body(receive)  # bounded in size and time by the guard around this app
        response = await self._forward(scope, self.services[entry.api], path, body, org_id)
        if not isinstance(response, httpx.Response):  # the gateway's own error
            return await response(scope, receive, send)
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                                for k, v in response.headers.multi_items() if k not in _DROP_RESPONSE]
                    + [(b"content-length", str(len(response.content)).encode())]})
        await send({"type": "http.response.body", "body": response.content})

    async def _over_limit(self, scope, entry: Endpoint, org_id: str | None) -> Response | None:
        if entry.tpm is not None:
            origin = org_id or (scope.get("client") or ("unknown",))[0]
            if not await self.tpm.hit_async((origin, entry.method, entry.route), entry.tpm):
                return error_response(self.tpm_status,
                                      f"more than {entry.tpm} calls to {entry.route} in this minute",
                                      headers={"retry-after": str(self.tpm.seconds_left())})
        if not self.tps.hit(None, self.tps_limit):
            return error_response(self.capacity_status,
                                  f"the platform is above its capacity of {self.tps_limit} TPS",
                                  headers={"retry-after": "1"})
        return None

    def _headers(self, scope, org_id: str | None) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in scope["headers"] if k not in _DROP_REQUEST]
        if self.authenticator is not None:
            header = self.authenticator.header
            headers = [(k, v) for k, v in headers if k != header]  # the certificate stays at the edge
        forwarded_for = [v for k, v in scope["headers"] if k == b"x-forwarded-for"]
        client = scope.get("client")
        chain = b", ".join(forwarded_for + ([client[0].encode()] if client else []))
        if chain:
            headers.append((b"x-forwarded-for", chain))
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        iid = interaction_id() or next((v.decode("latin-1") for k, v in scope["headers"]
                                        if k == INTERACTION_ID_HEADER.encode()), None)
        if iid:
            headers.append((INTERACTION_ID_HEADER.encode(), iid.encode("latin-1")))
        if org_id:
            headers.append((CLIENT_ORG_HEADER.encode(), org_id.encode("utf-8")))
        if self._secret is not None:
            headers.append((GATEWAY_SECRET_HEADER.encode(), self._secret))
        return headers

    async def _forward(self, scope, service: str, path: str, body: bytes,
                       org_id: str | None) -> httpx.Response | Response:
        client = self.client
        if client is None:  # open() runs in the app's lifespan, before the first request
            raise RuntimeError("the gateway proxy is not open")
        targets = self.upstreams.order(service)
        if not targets:
            return error_response(502, f"no {service} replica is available")
        # The path that was matched, re-encoded: the module decodes it back to the same string.
        target = quote(path.rstrip("/") or "/", safe=_PATH_SAFE)
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers = self._headers(scope, org_id)
        repeatable = (scope["method"] in _SAFE_METHODS
                      or any(k == _IDEMPOTENCY for k, _ in scope["headers"]))
        if len(targets) == 1:  # one Service URL (Kubernetes): a second connection reaches another pod
            targets = targets * 2 if repeatable else targets
        try:
            async with asyncio.timeout(self.timeout_s):
                for base in targets:
                    # A bare Request: skips the client's base-URL/header/cookie merging (nothing to merge)
                    request = httpx.Request(scope["method"], base + target, headers=headers, content=body)
                    try:
                        return await client.send(request)
                    except httpx.ConnectError as exc:  # nothing was sent: the next replica may take it
                        _log.warning("%s replica %s refused the connection (%s)", service, base,
                                     type(exc).__name__)
                    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                        if not repeatable:
                            raise
                        # A pooled connection the replica closed as it left: no answer came, and
                        # repeating this request elsewhere is harmless.
                        _log.warning("%s replica %s closed the connection unanswered (%s)", service, base,
                                     type(exc).__name__)
        except (TimeoutError, httpx.TimeoutException):
            return error_response(504, f"{service} did not answer within {self.timeout_s:g} s")
        except httpx.InvalidURL:  # not an HTTPError; the guard and the protocol leave little to reach here
            return error_response(400, "the request target cannot be forwarded")
        except httpx.HTTPError as exc:
            # The type only: httpx's messages can quote a header value, and header values are credentials.
            _log.warning("%s call failed (%s)", service, type(exc).__name__)
            return error_response(502, f"{service} failed to answer")
        return error_response(502, f"no {service} replica accepted the connection")


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_IDEMPOTENCY = IDEMPOTENCY_HEADER.encode()  # RFC 9110 §9.2.1: repeating one changes nothing


class _ShardedTransport(httpx.AsyncBaseTransport):
    """The shared client's connection pool, split into ``shards`` smaller pools used in turn.

    httpcore 1.0's pool re-scans every connection, polling each socket, for every queued
    request on every request start and end (O(connections² + connections × requests);
    encode/httpcore#1035, encode/httpx#3215). Under a few dozen concurrent calls that scan
    cost the gateway more CPU than the proxying itself; eight pools of an eighth the size
    keep each scan short. Keep-alive (4 s) stays below uvicorn's 5 s, so the gateway never
    reuses a connection the module is about to close.
    """

    def __init__(self, shards: int = 8, connections_per_shard: int = 64) -> None:
        limits = httpx.Limits(max_connections=connections_per_shard,
                              max_keepalive_connections=connections_per_shard // 2, keepalive_expiry=4.0)
        self._pools = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(shards)]
        self._next = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._next = (self._next + 1) % len(self._pools)
        return await self._pools[self._next].handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def _refusing_cookie_jar() -> http.cookiejar.CookieJar:
    """A jar that stores no cookie: one client serves every caller, so a module's ``Set-Cookie``
    (passed through to the caller) must never be kept, let alone replayed for someone else."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


async def _read_body(receive) -> bytes:
    """The request body (the guard has read it already, within its size and time limits)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def create_app(settings: Settings | None = None, *, catalog: Catalog | None = None,
               transport: httpx.AsyncBaseTransport | None = None, clock: Callable[[], float] = time.time,
               registry: CollectorRegistry | None = None,
               tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The gateway app. ``catalog`` defaults to ``load_catalog()`` (``OFSRE_CATALOG`` or the bundled one);
    ``transport`` and ``clock`` replace the network and the wall clock in tests; ``registry`` and
    ``tracer_provider`` default to the global ones (:func:`service_app`)."""
    settings = settings or Settings.from_env()
    catalog = catalog or load_catalog()
    authenticator = None
    if settings.mtls:
        if settings.client_ca_file is None and settings.tls_cert_file is None:
            raise ValueError("OFSRE_MTLS is on but OFSRE_CLIENT_CA_FILE is not set: no client "
                             "certificate could be verified (set it, or OFSRE_MTLS=off for a local demo)")
        verifier = CertificateVerifier.from_file(settings.client_ca_file) if settings.client_ca_file else None
        authenticator = Authenticator(verifier, header=settings.client_cert_header,
                                      trusted_proxies=settings.trusted_proxies)
    upstreams = Upstreams(settings.upstreams, settings.upstreams_file)
    proxy = GatewayProxy(settings, catalog, upstreams, authenticator, transport=transport, clock=clock,
                         registry=registry if registry is not None else REGISTRY,
                         tracer_provider=tracer_provider)
    watcher: list[asyncio.Task] = []

    async def start(app: FastAPI) -> None:
        proxy.open()
        if settings.upstreams_file is not None:
            watcher.append(asyncio.create_task(upstreams.watch(), name="upstreams-watch"))

    async def stop(app: FastAPI) -> None:
        for task in watcher:
            task.cancel()
        await proxy.close()

    async def routable(app: FastAPI) -> bool:
        table = upstreams.table
        return any(table.get(service) for service in proxy.services.values())

    app = service_app("gateway", settings, title="ofsre gateway", database=False, on_startup=start,
                      on_shutdown=stop, readiness={"upstreams": routable}, catalog=catalog, registry=registry,
                      tracer_provider=tracer_provider,
                      description="Embedded API gateway of the reference Open Finance platform")
    app.state.proxy = proxy
    # One catch-all: the proxy decides what exists (the catalog), so /_sim/… and the modules'
    # /metrics or /openapi.json are never reachable through the gateway, however spelled.
    app.router.routes.append(Route("/open-banking/{path:path}", proxy, include_in_schema=False))
    return app
