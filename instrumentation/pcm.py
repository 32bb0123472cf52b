"""Capture of PCM reports: one report per Open Finance call between institutions (openfinance.md §5).

Every institution reports each call it serves (role ``SERVER``) and each call it makes
(role ``CLIENT``) to the ecosystem's metrics platform, the PCM; the regulator computes
latency and availability compliance from those reports. This module *captures* them;
:mod:`ofsre.exporters.pcm` stores and sends them.

Opt-in, per service
-------------------
Only the edge that answers other institutions may report SERVER calls (a call seen by the
gateway *and* the module behind it must be reported once). Capture is off unless:

* the ``pcm=`` argument of :func:`~ofsre.instrumentation.instrument_app` /
  ``OfsreMiddleware`` is ``True`` (or a :class:`PcmCapture`), or, without the argument,
* ``OFSRE_PCM_CAPTURE`` lists the service (comma separated, e.g. ``gateway,worker``), so a
  whole platform can share one environment and only the named services capture.

CLIENT reports come only from clients built with ``instrumented_client(pcm=True)`` — a client
that calls *other institutions* — in a service whose capture is on. The gateway's client to
its own modules is not one of them.

Where each field comes from
---------------------------
==================  ==========================================================================
field               source
==================  ==========================================================================
fapiInteractionId   the request's ``x-fapi-interaction-id`` (the middleware's validated value;
                    a reported client call without one gets a new uuid4 header)
endpoint            the catalog's route **template**; a call outside the catalog is not reported
httpMethod          the request method
statusCode          the response status; a client timeout is ``408``
timestamp           SERVER: when the request was received; CLIENT: just before the request is
                    sent. UTC ISO 8601 with milliseconds
processTimespan     integer ms: SERVER until the last response byte was sent; CLIENT until the
                    response's first byte (headers); on a timeout the time waited
serverOrgId         SERVER: ``OFSRE_PCM_ORG_ID`` (our organisationId in the Directory);
                    CLIENT: the called institution's, given per call (``serverOrgId`` below)
clientOrgId         SERVER: the caller's organisationId as *verified by the app* — the gateway
                    calls :func:`identify_client` with the organisationId of the client
                    certificate (ICP-Brasil, via the WAF); CLIENT: ``OFSRE_PCM_ORG_ID``
clientSSId          CLIENT: ``OFSRE_PCM_SOFTWARE_STATEMENT_ID`` (our software statement)
endpointUriPrefix   CLIENT: the called URL up to ``/open-banking/``
correlationId       optional: given by the app (:func:`identify_client`) or per client call
additionalInfo      SERVER: what the app passes to :func:`identify_client` (``consentId``,
                    ``personType``, …); open data adds ``clientIp``: the connection's peer,
                    unless the app passes ``clientIp=`` (behind a proxy it knows the real one)
                    CLIENT: given per call
==================  ==========================================================================

Per client call the details go in the request's extensions::

    await client.post(url, json=body, extensions={"ofsre.pcm": {
        "serverOrgId": receiver_org, "additionalInfo": {"paymentId": pid}}})

A SERVER call to a private API whose client the app never identified (no certificate: the
401 before authentication) is not reported — the PCM pairs reports between known
institutions — and is counted in ``ofsre_pcm_reports_skipped_total{reason="no_client_org"}``; nor is
a call the client left before any response (the middleware's 499: no status was answered), nor a
client call that got no HTTP answer other than a timeout (``reason="no_response"``).

Cost on the request path
------------------------
Capture is one tuple appended to a bounded in-memory deque (``OFSRE_PCM_QUEUE_REPORTS``,
default 100,000): no JSON, no lock, no disk, no network. A writer thread (``ofsre-pcm-writer``)
moves what is queued into the durable store every ``OFSRE_PCM_FLUSH_S`` (0.2 s) in one
transaction. A full queue drops the report and counts it
(``ofsre_pcm_reports_dropped_total{reason="queue_full"}``, alerted). On a graceful stop (and
at interpreter exit) the queue is written out; a process killed with SIGKILL loses at most
the last flush interval's reports — as it loses the requests it was serving.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry

from . import semconv
from .catalog import Catalog, Endpoint, load_catalog
from .config import TEXT, Var, integer, number
from .context import INTERACTION_ID_HEADER
from .metrics import count_telemetry_error, counter

if TYPE_CHECKING:
    import httpx

__all__ = ["PcmCapture", "identify_client", "capturing", "capture_for", "ENV_CAPTURE", "ENV_ORG_ID",
           "ENV_SOFTWARE_STATEMENT", "EXTENSION", "SERVER", "CLIENT"]

_log = logging.getLogger("ofsre.instrumentation.pcm")

COMPONENT = "pcm"
_READER = "instrumentation (PCM capture)"


def _var(name: str, kind: Any, default: Any, doc: str, **more: Any) -> Var[Any]:
    return Var(name, kind, default, reader=_READER, doc=doc, logger=_log.name, **more)


# The capture's variables (the sender's and the store's are declared in ofsre.exporters.pcm).
CAPTURE = _var("OFSRE_PCM_CAPTURE", TEXT, "", "services that capture (comma list, e.g. `gateway,worker`)",
               shown="off")
ORG_ID = _var("OFSRE_PCM_ORG_ID", TEXT, "", "our organisationId: `serverOrgId` of SERVER reports, "
              "`clientOrgId` of CLIENT reports", shown="required when capturing")
SOFTWARE_STATEMENT = _var("OFSRE_PCM_SOFTWARE_STATEMENT_ID", TEXT, None,
                          "our software statement: `clientSSId` of CLIENT reports")
QUEUE_REPORTS = _var("OFSRE_PCM_QUEUE_REPORTS", integer(), 100_000,
                     "reports the capture's memory queue holds (past it: dropped, counted)")
FLUSH_S = _var("OFSRE_PCM_FLUSH_S", number(label="seconds"), 0.2,
               "seconds between the capture's writes into the store")
ENV_CAPTURE, ENV_ORG_ID, ENV_SOFTWARE_STATEMENT = CAPTURE.name, ORG_ID.name, SOFTWARE_STATEMENT.name
EXTENSION = "ofsre.pcm"            # httpx request extension with a client call's PCM details
SERVER, CLIENT = "SERVER", "CLIENT"
_OPEN_PREFIX = "/open-banking/"
_OFF = frozenset({"", "off", "none", "false", "0", "no"})


class _Call:
    """A SERVER call being served: what the app may still tell us (its verified client)."""

    __slots__ = ("entry", "ts", "interaction_id", "client_org", "correlation", "info", "peer", "token")

    def __init__(self, entry: Endpoint, ts: float, interaction_id: str | None, peer: str | None) -> None:
        self.entry, self.ts, self.interaction_id, self.peer = entry, ts, interaction_id, peer
        self.client_org: str | None = None
        self.correlation: str | None = None
        self.info: dict[str, Any] | None = None
        self.token: contextvars.Token[_Call | None] | None = None


_current: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("ofsre_pcm_call", default=None)


def capturing() -> bool:
    """True inside a request whose SERVER report is being captured (skip building what would be ignored)."""
    return _current.get() is not None


def identify_client(org_id: str | None, *, correlation_id: str | None = None, **additional_info: Any) -> None:
    """Tell the SERVER report of the current request who the (verified) caller is.

    Call it from the app once the client is authenticated — the gateway passes the
    organisationId of the client certificate — with any ``additionalInfo`` fields for this
    endpoint (``consentId=…``). A no-op outside a captured request; never raises.
    """
    call = _current.get()
    if call is None:
        return
    if org_id:
        call.client_org = str(org_id)
    if correlation_id:
        call.correlation = str(correlation_id)
    if additional_info:
        call.info = {**(call.info or {}), **{k: v for k, v in additional_info.items() if v is not None}}


class PcmCapture:
    """The bounded queue and writer thread of one process; see the module docstring.

    ``org_id`` is our organisationId, ``software_statement_id`` our software statement (CLIENT
    reports), ``store`` the store path (default :func:`ofsre.exporters.pcm.store.default_store_path`).
    """

    def __init__(self, service: str, *, org_id: str, software_statement_id: str | None = None,
                 store: str | os.PathLike[str] | None = None, catalog: Catalog | None = None,
                 registry: CollectorRegistry | None = REGISTRY, queue_reports: int = QUEUE_REPORTS.default,
                 flush_interval: float = FLUSH_S.default) -> None:
        if not org_id:
            raise ValueError(f"PCM capture needs our organisationId ({ENV_ORG_ID})")
        if queue_reports < 1 or flush_interval <= 0:
            raise ValueError("queue_reports must be >= 1 and flush_interval > 0")
        self.service, self.org_id, self.software_statement_id = service, org_id, software_statement_id
        self.catalog = catalog if catalog is not None else load_catalog()
        self.store_path = store
        self.queue_reports, self.flush_interval = queue_reports, flush_interval
        self._queue: deque[tuple[Any, ...]] = deque()
        self._entries: dict[tuple[str, str], Endpoint | None] = {}
        captured = counter(semconv.PCM_REPORTS_CAPTURED, registry)
        self._captured = {role: captured.labels(service=service, role=role) for role in (SERVER, CLIENT)}
        dropped = counter(semconv.PCM_REPORTS_DROPPED, registry)
        self._dropped = {r: dropped.labels(service=service, reason=r) for r in semconv.PCM_DROP_REASONS}
        skipped = counter(semconv.PCM_REPORTS_SKIPPED, registry)
        self._skipped = {r: skipped.labels(service=service, reason=r) for r in semconv.PCM_SKIP_REASONS}
        self._registry = registry
        self._closed = False
        self._start_writer()
        weak = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (lambda m: m and m())(weak()))
        ref = weakref.ref(self)
        self._atexit = lambda: (lambda c: c and c.close())(ref())
        atexit.register(self._atexit)

    @classmethod
    def from_env(cls, service: str, **kwargs: Any) -> PcmCapture:
        """Settings from ``OFSRE_PCM_*``; keyword arguments win. Raises ValueError without an org id."""
        for argument, var in (("org_id", ORG_ID), ("software_statement_id", SOFTWARE_STATEMENT),
                              ("queue_reports", QUEUE_REPORTS), ("flush_interval", FLUSH_S)):
            if argument not in kwargs:
                kwargs[argument] = var.from_env()
        return cls(service, **kwargs)

    # --- request path: SERVER ----------------------------------------------------------------

    def _entry(self, method: str, template: str) -> Endpoint | None:
        key = (method, template)
        try:
            return self._entries[key]
        except KeyError:
            entry = self._entries[key] = self.catalog.lookup(method, template)
            return entry

    def server_start(self, method: str, template: str, interaction_id: str | None,
                     scope: Mapping[str, Any]) -> _Call | None:
        """Start a SERVER call (middleware, before the app); None outside the catalog.

        ``interaction_id`` is None only when the middleware could neither read nor make one."""
        try:   # inlined _entry(): one subscript on the request path
            entry = self._entries[(method, template)]
        except KeyError:
            entry = self._entry(method, template)
        if entry is None:
            return None
        client = scope.get("client")
        call = _Call(entry, time.time(), interaction_id, client[0] if client else None)
        call.token = _current.set(call)
        return call

    def server_finish(self, call: _Call, status: int, seconds: float) -> None:
        """Queue the SERVER report (middleware, after the response). O(1)."""
        if call.token is not None:
            try:
                _current.reset(call.token)
            except ValueError:  # another context (should not happen): keep going
                pass
        if status == 499:  # the client left before any response: no answer was given, nothing to pair
            self._skipped["no_response"].inc()
            return
        opendata = call.entry.api.startswith("opendata")
        if not opendata and call.client_org is None:
            self._skipped["no_client_org"].inc()
            return
        info = call.info
        if opendata and call.peer and not (info and "clientIp" in info):  # the app's (proxy-aware) value wins
            info = {**(info or {}), "clientIp": call.peer}
        queue = self._queue   # _put, inlined: this runs once per request
        if self._closed or len(queue) >= self.queue_reports:
            self._dropped["closed" if self._closed else "queue_full"].inc()
            return
        queue.append((SERVER, call.entry, status, call.ts, seconds, call.interaction_id, call.client_org,
                      self.org_id, call.correlation, info, None, None))

    # --- request path: CLIENT ----------------------------------------------------------------

    def _client_call(self, request: Any) -> tuple[Endpoint, str, dict[str, Any]] | None:
        path = request.url.path
        at = path.find(_OPEN_PREFIX)
        if at < 0:
            return None
        entry = self.catalog.match(request.method, path[at:])
        if entry is None:
            return None
        url = request.url
        prefix = f"{url.scheme}://{url.netloc.decode('ascii')}{path[:at]}"
        return entry, prefix, request.extensions.get(EXTENSION) or {}

    async def send_async(self, send: Callable[..., Awaitable[httpx.Response]], request: httpx.Request,
                         kwargs: dict[str, Any]) -> httpx.Response:
        """Run one httpx ``send`` and queue its CLIENT report (``instrumented_client(pcm=True)``)."""
        try:
            found = self._client_call(request)
        except Exception:  # noqa: BLE001 - telemetry never hurts the call
            count_telemetry_error(COMPONENT, self._registry)
            found = None
        if found is None:
            return await send(request, **kwargs)
        iid = self._interaction_id(request)
        stream = kwargs.pop("stream", False)
        ts, started = time.time(), time.perf_counter()
        try:
            response = await send(request, stream=True, **kwargs)
        except BaseException as exc:
            self._client_failed(found, exc, ts, time.perf_counter() - started, iid)
            raise
        self._client_done(found, response.status_code, ts, time.perf_counter() - started, iid)  # first byte
        if not stream:  # what httpx's own send does without stream=True
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response

    def send_sync(self, send: Callable[..., httpx.Response], request: httpx.Request,
                  kwargs: dict[str, Any]) -> httpx.Response:
        """The synchronous twin of :meth:`send_async`."""
        try:
            found = self._client_call(request)
        except Exception:  # noqa: BLE001
            count_telemetry_error(COMPONENT, self._registry)
            found = None
        if found is None:
            return send(request, **kwargs)
        iid = self._interaction_id(request)
        stream = kwargs.pop("stream", False)
        ts, started = time.time(), time.perf_counter()
        try:
            response = send(request, stream=True, **kwargs)
        except BaseException as exc:
            self._client_failed(found, exc, ts, time.perf_counter() - started, iid)
            raise
        self._client_done(found, response.status_code, ts, time.perf_counter() - started, iid)
        if not stream:
            try:
                response.read()
            except BaseException:
                response.close()
                raise
        return response

    @staticmethod
    def _interaction_id(request: Any) -> str:
        iid: str | None = request.headers.get(INTERACTION_ID_HEADER)
        if not iid:  # Open Finance requires one per request; the report needs it to be paired
            iid = str(uuid.uuid4())
            request.headers[INTERACTION_ID_HEADER] = iid
        return iid

    def _client_failed(self, found: tuple[Endpoint, str, dict[str, Any]], exc: BaseException, ts: float,
                       seconds: float, iid: str) -> None:
        import httpx  # the client side is only used with httpx

        if isinstance(exc, httpx.TimeoutException):
            self._client_done(found, 408, ts, seconds, iid)   # §5: a client timeout is reported as 408
        else:  # refused, reset, cancelled: no HTTP exchange happened, nothing to pair
            self._skipped["no_response"].inc()

    def _client_done(self, found: tuple[Endpoint, str, dict[str, Any]], status: int, ts: float,
                     seconds: float, iid: str) -> None:
        entry, prefix, details = found
        server_org = details.get("serverOrgId")
        if not server_org:
            self._skipped["no_server_org"].inc()
            return
        self._put((CLIENT, entry, status, ts, seconds, iid, self.org_id, str(server_org),
                   details.get("correlationId"), details.get("additionalInfo"), prefix,
                   self.software_statement_id))

    def _put(self, item: tuple[Any, ...]) -> None:
        if self._closed or len(self._queue) >= self.queue_reports:
            self._dropped["closed" if self._closed else "queue_full"].inc()
            return
        self._queue.append(item)

    # --- writer thread -----------------------------------------------------------------------

    def _start_writer(self) -> None:
        self._wake = threading.Event()
        self._stopping = False
        self._taken = 0            # reports taken off the queue by the writer
        self._written = 0          # of those, the ones stored or dropped: for flush()
        self._taken_cv = threading.Condition()
        self._store: Any = None   # a ReportStore (ofsre.exporters.pcm.store), opened by the writer
        self._days = _Days()
        self._thread = threading.Thread(target=self._run, name="ofsre-pcm-writer", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The child starts empty with its own writer (and its own store connection); the
        # parent's queued reports are the parent's to write.
        self._queue = deque()
        if not self._closed:
            self._start_writer()

    def _open_store(self) -> Any:
        from ofsre.exporters.pcm.store import ReportStore  # imported here: the store is the exporter's

        return ReportStore(self.store_path)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._write()
            except Exception:  # noqa: BLE001 - keep the thread alive; the next round retries
                count_telemetry_error(COMPONENT, self._registry)
                _log.exception("ofsre pcm: writing reports failed")
            if self._stopping and not self._queue:
                break
        if self._store is not None:
            self._store.close()

    def _write(self) -> None:
        queue = self._queue
        if not queue:
            return
        items = []
        with self._taken_cv:   # flush() reads the queue length and `_taken` under the same lock
            with contextlib.suppress(IndexError):
                for _ in range(len(queue)):
                    items.append(queue.popleft())
            self._taken += len(items)
        rows, days = [], self._days
        for item in items:
            try:
                rows.append(_row(item, days))
            except Exception:  # noqa: BLE001 - a report that cannot be encoded (odd additionalInfo)
                count_telemetry_error(COMPONENT, self._registry)
                self._dropped["unencodable"].inc()
        stored = 0
        try:
            if self._store is None:
                self._store = self._open_store()
            stored = self._store.stage(rows)
        except Exception:  # noqa: BLE001 - disk full, unwritable path: count, say so, carry on
            count_telemetry_error(COMPONENT, self._registry)
            self._dropped["store_error"].inc(len(rows))
            _log.exception("ofsre pcm: the report store %s could not be written; %d reports lost",
                           self.store_path, len(rows))
            rows = []
        if stored < len(rows):
            self._dropped["store_full"].inc(len(rows) - stored)
            _log.warning("ofsre pcm: report store full; %d reports dropped", len(rows) - stored)
        roles = {SERVER: 0, CLIENT: 0}
        for row in rows[:stored]:
            roles[row[1]] += 1
        for role, count in roles.items():
            if count:
                self._captured[role].inc(count)
        with self._taken_cv:
            self._written += len(items)
            self._taken_cv.notify_all()

    def pending(self) -> int:
        """Reports queued in memory, not yet in the store."""
        return len(self._queue)

    def flush(self, timeout: float = 5.0) -> bool:
        """Write everything captured so far to the store; True if done within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._taken_cv:
            target = self._taken + len(self._queue)
            self._wake.set()
            while self._written < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._taken_cv.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Write out the queue and stop the writer. Idempotent."""
        if self._closed:
            return True
        done = self.flush(timeout)
        self._closed = True
        atexit.unregister(self._atexit)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        return done


_encode_info = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
# A JSON string literal (the C encoder when there is one; typeshed does not declare it).
_string: Callable[[str], str] = (getattr(json.encoder, "c_encode_basestring", None)
                                 or json.encoder.py_encode_basestring)


class _Days:
    """The Brasília day of a unix time, recomputed only when a report crosses midnight."""

    __slots__ = ("start", "end", "day")

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.day = ""

    def of(self, ts: float) -> str:
        if not self.start <= ts < self.end:
            from ofsre.exporters.pcm.store import brasilia_day, deadline_of

            self.day = brasilia_day(ts)
            self.end = deadline_of(self.day) - 8 * 3600      # the next midnight, Brasília
            self.start = self.end - 86400
        return self.day


def _row(item: tuple[Any, ...], days: _Days) -> tuple[Any, ...]:
    """The store row (``ofsre.exporters.pcm.store.COLUMNS``) of one queued report. Writer thread.

    Kept to the minimum (the writer shares the GIL with the requests): the JSON body is built
    by the sender, in its own process.
    """
    role, entry, status, ts, seconds, iid, client_org, server_org, correlation, info, prefix, ssid = item
    kind = "opendata" if entry.api.startswith("opendata") else "private"
    if not info:
        info_json = None
    # the gateway's {"consentId": …}: no encoder
    elif len(info) == 1 and type(next(iter(info.values()))) is str:
        (key, value), = info.items()
        info_json = "{" + _string(str(key)) + ":" + _string(value) + "}"
    else:
        info_json = _encode_info(info)
    return (kind, role, days.of(ts), ts, entry.route, entry.method, int(status), int(round(seconds * 1000)),
            iid, client_org, server_org, str(correlation) if correlation else None, info_json, prefix, ssid)


_shared: dict[str, PcmCapture] = {}
_shared_lock = threading.Lock()


def _enabled_by_env(service: str) -> bool:
    raw = CAPTURE.from_env().lower()
    if raw in _OFF:
        return False
    return service.lower() in {part.strip() for part in raw.split(",")}


def capture_for(service: str, pcm: bool | PcmCapture | None) -> PcmCapture | None:
    """The capture a middleware or client of ``service`` uses: ``pcm`` argument, else ``OFSRE_PCM_CAPTURE``.

    ``True`` (or the service listed in ``OFSRE_PCM_CAPTURE``) gives the process's one shared
    capture, built from ``OFSRE_PCM_*``; ``False`` or not listed gives None (capture off).
    """
    if isinstance(pcm, PcmCapture):
        return pcm
    if pcm is False or (pcm is None and not _enabled_by_env(service)):
        return None
    with _shared_lock:
        found = _shared.get(service)
        if found is None or found._closed:
            found = _shared[service] = PcmCapture.from_env(service)
        return found
