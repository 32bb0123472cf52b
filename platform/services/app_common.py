"""What every service app has in common: lifespan, probes, errors, instrumentation.

A service module builds its FastAPI app with :func:`service_app` and adds its routes::

    def create_app(settings: Settings | None = None) -> FastAPI:
        return service_app("accounts", settings, title="Accounts", routers=[router])

``service_app`` gives the app

* a lifespan that opens the database engine (``app.state.engine``/``app.state.sessions``)
  and the queue (``app.state.queue``) on start, runs the service's own ``on_startup`` /
  ``on_shutdown`` hooks (the worker starts and stops its consumer there), then closes the
  queue and the engine and flushes the tracer provider and the log handlers (shippers);
* ``GET /healthz`` (liveness, no I/O) and ``GET /readyz`` (database and queue reachable,
  plus the service's own ``readiness`` checks; 503 when one fails);
* the Open Finance error body for every error (:mod:`ofsre.platform.errors`);
* :class:`~ofsre.platform.guard.RequestGuard`: malformed headers refused, body size and
  read time bounded, and (modules) only the gateway, holding ``OFSRE_GATEWAY_SECRET``, heard;
* ``ofsre.instrumentation.instrument_app`` (metrics on ``/metrics``, one span per request,
  ``x-fapi-interaction-id``), applied last so it is the outermost layer.

``registry=`` and ``tracer_provider=`` go to every instrumented part (the app, the database
engine, the queue) and the tracer provider is the one flushed at shutdown; by default they are
prometheus_client's global registry and OpenTelemetry's global provider. A test gives a fresh
``CollectorRegistry()`` and reads its samples, so no test sees another's metrics.

Endpoints get a database session with ``session: Session`` (a FastAPI dependency).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.trace import TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import BaseModel, create_model
from sqlalchemy.ext.asyncio import AsyncSession

from ofsre.instrumentation import instrument_app
from ofsre.instrumentation.catalog import Catalog
from ofsre.instrumentation.openfinance import format_datetime

from . import db
from .contracts import AWAITING
from .errors import OFError, install_error_handlers
from .guard import RequestGuard
from .models import Base
from .settings import Settings

__all__ = ["service_app", "Session", "CLIENT_ORG_HEADER", "ClientOrg", "Hook", "Check", "flush_telemetry",
           "Meta", "Links", "of_body", "envelope", "check_owner", "consent_id_from", "owned",
           "decide_awaiting"]

_log = logging.getLogger("ofsre.platform")

# Set by the gateway from the verified client certificate; the services record it on what a
# client creates and compare it on later reads. The gateway drops any copy a client sends, and
# a module with OFSRE_GATEWAY_SECRET set hears only requests that carry the secret (guard.py).
CLIENT_ORG_HEADER = "x-ofsre-client-org-id"

Hook = Callable[[FastAPI], Awaitable[None]]
Row = TypeVar("Row", bound=Base)  # a model class's instance (Consent, PaymentConsent)
Check = Callable[[FastAPI], Awaitable[bool]]
# Shutdown gives messages being processed this long to be settled (``Queue.close(timeout=)``),
# then the backend this long to release its connections: the outer bound must exceed the drain,
# or it cancels the close before the connections are released.
_QUEUE_DRAIN_TIMEOUT_S = 10.0
_QUEUE_RELEASE_TIMEOUT_S = 5.0


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(_session)]


def _client_org(request: Request) -> str | None:
    return request.headers.get(CLIENT_ORG_HEADER)


# The calling institution's organisationId, when the gateway verified a client certificate.
ClientOrg = Annotated[str | None, Depends(_client_org)]


class Meta(BaseModel):
    totalRecords: int = 1
    totalPages: int = 1
    requestDateTime: str


class Links(BaseModel):
    self: str
    first: str | None = None
    prev: str | None = None
    next: str | None = None
    last: str | None = None


def of_body(data: type[Any], name: str) -> type[BaseModel]:
    """The response model ``{data, links, meta}`` around ``data`` (a model or ``list[model]``)."""
    return create_model(name, data=(data, ...), links=(Links, ...), meta=(Meta, ...))


def envelope(data: Any, request: Request, *, links: dict | None = None, meta: dict | None = None) -> dict:
    """The spec's response body: ``data`` plus ``links`` (at least ``self``) and ``meta``."""
    return {"data": data, "links": links or {"self": str(request.url)},
            "meta": meta or {"totalRecords": 1, "totalPages": 1, "requestDateTime": format_datetime()}}


def consent_id_from(authorization: str | None, x_consent_id: str | None) -> str | None:
    """The consent a call acts under: ``Authorization: Bearer consent:<id>`` first, then ``x-consent-id``.

    Real Open Finance carries it in the access token's scope ``consent:<id>``; with no
    authorisation server in the platform, the bearer token is that scope itself.
    """
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.startswith("consent:") and len(token) > len("consent:"):
            return token[len("consent:"):].strip()
    return x_consent_id.strip() if x_consent_id and x_consent_id.strip() else None


def check_owner(owner_org: str | None, caller_org: str | None, what: str) -> None:
    """403 when a resource created by one institution is used by anyone else.

    A resource created with no organisation (OFSRE_MTLS=off) is open to every caller; one
    created by an institution is open only to it: a caller with no organisation is refused too.
    """
    if owner_org is not None and owner_org != caller_org:
        raise OFError(403, f"{what} belongs to another institution")


async def owned(session: AsyncSession, model: type[Row], key: str, caller_org: str | None, what: str, *,
                status: int = 404, **error: Any) -> Row:
    """The ``model`` row ``key`` (a consent: it has ``client_org_id``) if ``caller_org`` may use it.

    ``status`` (404, or the ``OFError`` keywords ``error``) when there is none; 403 when another
    institution created it (:func:`check_owner`).
    """
    row: Any = await session.get(model, key)
    if row is None:
        raise OFError(status, f"{what} {key} not found", **error)
    check_owner(row.client_org_id, caller_org, what)
    return row


async def decide_awaiting(session: AsyncSession, model: type[Row], key: str, status: str, target: str,
                          what: str, **values: Any) -> Row:
    """The simulated customer's answer to a consent awaiting authorisation: ``AWAITING`` → ``target``.

    ``status`` is the consent's effective status: 422 unless it is ``AWAITING``, 409 when the
    conditional update (:func:`db.transition`, with ``values``) finds it changed meanwhile.
    Returns the row read again.
    """
    if status != AWAITING:
        raise OFError(422, f"the {what} is {status}, not {AWAITING}", code="STATUS_INVALIDO")
    if not await db.transition(session, model, key, AWAITING, target, **values):
        raise OFError(409, f"the {what} changed status meanwhile; read it again")
    row = await session.get(model, key, populate_existing=True)
    assert row is not None  # the update has just matched it
    return row


def flush_telemetry(timeout_s: float = 5.0, tracer_provider: TracerProvider | None = None) -> None:
    """Export buffered spans (of ``tracer_provider``, default the global one) and hand buffered
    log records to their shippers. Never raises."""
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    try:
        if hasattr(provider, "force_flush"):
            provider.force_flush(int(timeout_s * 1000))
    except Exception:  # noqa: BLE001 - shutting down: report, carry on
        _log.warning("flushing spans failed", exc_info=True)
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001
            _log.warning("flushing log handler %r failed", handler, exc_info=True)


def service_app(service: str, settings: Settings | None, *, title: str, description: str = "",
                version: str = "1.0.0", routers: Sequence[APIRouter] = (), database: bool = True,
                queue: bool = False, on_startup: Hook | None = None, on_shutdown: Hook | None = None,
                readiness: dict[str, Check] | None = None, catalog: Catalog | None = None,
                registry: CollectorRegistry | None = None,
                tracer_provider: TracerProvider | None = None) -> FastAPI:
    """A FastAPI app for ``service`` serving ``routers``, with lifespan, probes, error bodies and
    instrumentation. ``settings`` defaults to ``Settings.from_env()``; ``registry`` and
    ``tracer_provider`` to the global ones."""
    settings = settings or Settings.from_env()
    registry = registry if registry is not None else REGISTRY
    checks: dict[str, Check] = {}
    if database:
        checks["database"] = lambda app: db.ping(app.state.engine)
    if queue:
        checks["queue"] = _queue_ping
    checks.update(readiness or {})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.engine = db.create_engine(settings, service=service, registry=registry,
                                       tracer_provider=tracer_provider) if database else None
        state.sessions = db.session_factory(state.engine) if database else None
        state.queue = None
        try:
            if queue:
                from .queue import open_queue  # the queue's backends import their clients lazily too

                # The database backend shares this process's engine (one pool, one set of metrics).
                shared = {"engine": state.engine} if database and settings.queue_backend == "db" else {}
                state.queue = await open_queue(settings, registry=registry, tracer_provider=tracer_provider,
                                               **shared)
            if on_startup is not None:
                await on_startup(app)
            yield
        finally:
            await _shutdown(app, on_shutdown, tracer_provider)

    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan)
    app.state.settings = settings
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes,
                       body_timeout_s=settings.body_timeout_s,
                       gateway_secret=None if service == "gateway" else settings.gateway_secret)
    _add_probes(app, checks)
    for router in routers:
        app.include_router(router)
    return instrument_app(app, service, catalog=catalog, registry=registry, tracer_provider=tracer_provider)


async def _shutdown(app: FastAPI, on_shutdown: Hook | None, tracer_provider: TracerProvider | None) -> None:
    """Stop the service's own work first (consumer), then the queue, then the engine, then telemetry."""
    state = app.state
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
    if on_shutdown is not None:
        steps.append(("on_shutdown", lambda: on_shutdown(app)))
    if getattr(state, "queue", None) is not None:
        steps.append(("queue", lambda: asyncio.wait_for(state.queue.close(timeout=_QUEUE_DRAIN_TIMEOUT_S),
                                                        _QUEUE_DRAIN_TIMEOUT_S + _QUEUE_RELEASE_TIMEOUT_S)))
    if getattr(state, "engine", None) is not None:
        steps.append(("engine", state.engine.dispose))
    for name, step in steps:
        try:
            await step()
        except Exception:  # noqa: BLE001 - one failing step must not skip the others
            _log.exception("shutdown step %s failed", name)
    flush_telemetry(tracer_provider=tracer_provider)


async def _queue_ping(app: FastAPI) -> bool:
    q = app.state.queue
    return q is not None and bool(await q.ping())


def _add_probes(app: FastAPI, checks: dict[str, Check]) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        results = {}
        for name, check in checks.items():
            try:
                results[name] = bool(await check(app))
            except Exception:  # noqa: BLE001 - a check that raises is a failed check
                _log.warning("readiness check %s raised", name, exc_info=True)
                results[name] = False
        ok = all(results.values())
        return JSONResponse({"status": "ready" if ok else "unavailable", "checks": results},
                            status_code=200 if ok else 503)
