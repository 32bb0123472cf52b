"""The PCM sender: delivers the store's reports, oldest first, and stores the PCM's verdict on each.

Wire protocol (openfinance.md §5; the public mock ``Opus-Software/oof-pcm-mock``)::

    POST {token_url}                       grant_type=client_credentials  → {"access_token", "expires_in"}
    POST {url}/report-api/v1/private/report     JSON array of ≤ pcm_max_reports reports
    POST {url}/report-api/v1/opendata/report    the same for open-data endpoints
        → 200 / 207  [{"reportId", "status", "correlationId"?, "message"?}, …]  one result per report,
                     in the order sent (207: some carry a ``message``)

What each answer does to the batch in flight:

=====================  ============================================================================
answer                 action
=====================  ============================================================================
200, 207               every report ``delivered`` with its result (``ACCEPTED``, ``DISCARDED``,
                       ``PAIRED_INCONSISTENT``, ``UNPAIRED``, ``SINGLE``) and ``message``
413                    split in two halves, each sent again (down to one report)
401                    the token is refreshed once and the batch sent again; a second 401 holds it
429, 5xx, no answer    retried with exponential backoff and full jitter, never before ``Retry-After``
400, 403, 406, 415     the batch is *held*: kept in the store with the reason, counted
                       (``ofsre_pcm_reports_held_total``) and logged; ``ofsre pcm requeue`` sends
                       it again once the cause is fixed
=====================  ============================================================================

The token (OAuth2 client credentials, ``client_secret_basic``; mTLS client certificate when
configured, as the real PCM requires) is cached and refreshed before it expires (at 80 % of
its lifetime, at most 60 s early). Nothing is sent without a token: when the token endpoint
fails the sender backs off and the reports stay pending.

One sender per store: :meth:`Sender.run` first takes an exclusive ``flock`` on
``<store>.sender.lock``. A second sender (another replica) waits for it — a hot standby. A
report stays ``pending`` until the PCM's answer for it is stored, so a sender killed with
SIGKILL loses nothing: its successor sends the batch that was in flight again (the PCM may see
it twice and pairs on ``fapiInteractionId``; it is never twice in our store or counts).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY, CollectorRegistry

from ofsre.instrumentation import semconv
from ofsre.instrumentation.catalog import load_catalog
from ofsre.instrumentation.config import TEXT, Var, integer, number
from ofsre.instrumentation.metrics import counter

from .._transport import backoff_delay, mark_shipper_thread, retry_after_seconds, shipper_thread
from .store import KINDS, ReportStore

__all__ = ["Sender", "SenderOptions", "TokenSource", "TokenError", "PATHS", "HOLD_STATUSES", "ENV"]

_log = logging.getLogger("ofsre.exporters.pcm")


def _var(name: str, kind: Any, default: Any, doc: str, **more: Any) -> Var[Any]:
    return Var(name, kind, default, reader="PCM sender (`ofsre pcm send`)", doc=doc, logger=_log.name, **more)


# SenderOptions field (or file) -> its variable; SenderOptions.from_env reads them, its keywords win.
ENV: dict[str, Var[Any]] = {
    "url": _var("OFSRE_PCM_URL", TEXT, None, "the PCM's base URL", shown="required to send"),
    "token_url": _var("OFSRE_PCM_TOKEN_URL", TEXT, None, "OAuth2 token endpoint",
                      shown="`$OFSRE_PCM_URL/token/`"),
    "client_id": _var("OFSRE_PCM_CLIENT_ID", TEXT, "", "our OAuth2 client at the PCM (`client_secret_basic`)",
                      shown="required to send"),
    "client_secret": _var("OFSRE_PCM_CLIENT_SECRET", TEXT, "", "its secret"),
    "scope": _var("OFSRE_PCM_SCOPE", TEXT, None, "OAuth2 scope of the token request"),
    "cert_file": _var("OFSRE_PCM_CERT_FILE", TEXT, "", "mTLS client certificate (with `OFSRE_PCM_KEY_FILE`)"),
    "key_file": _var("OFSRE_PCM_KEY_FILE", TEXT, "", "the private key of `OFSRE_PCM_CERT_FILE`"),
    "ca_file": _var("OFSRE_PCM_CA_FILE", TEXT, "", "CA bundle that signs the PCM's certificate",
                    shown="the system's CAs"),
    "max_reports": _var("OFSRE_PCM_MAX_REPORTS", integer(), 0, "reports per request",
                        shown="catalog `pcm_max_reports`"),
    "request_timeout": _var("OFSRE_PCM_TIMEOUT", number(label="seconds"), 30.0, "seconds per request"),
    "poll_interval": _var("OFSRE_PCM_POLL_S", number(label="seconds"), 1.0,
                          "seconds between looks at an empty store"),
    "backoff_max": _var("OFSRE_PCM_BACKOFF_MAX", number(label="seconds"), 60.0, "largest retry delay"),
}

PATHS = {"private": "/report-api/v1/private/report", "opendata": "/report-api/v1/opendata/report"}
HOLD_STATUSES = frozenset({400, 401, 403, 406, 415})
_REPORT_EVERY = 60.0


class TokenError(Exception):
    """No token could be obtained (the token endpoint refused or did not answer)."""


@dataclass(frozen=True)
class SenderOptions:
    """Settings of a sender; :meth:`from_env` reads ``OFSRE_PCM_*``."""

    url: str                                  # PCM base URL (https://pcm.example/); report paths appended
    token_url: str                            # OAuth2 token endpoint
    client_id: str
    client_secret: str = ""
    scope: str | None = None
    cert: tuple[str, str] | None = None       # mTLS client certificate and key files
    verify: bool | str = True                 # CA bundle path, or False (never in production)
    max_reports: int = ENV["max_reports"].default          # per request; 0: the catalog's pcm_max_reports
    request_timeout: float = ENV["request_timeout"].default
    backoff_initial: float = 0.5
    backoff_max: float = ENV["backoff_max"].default
    poll_interval: float = ENV["poll_interval"].default    # seconds between looks at an empty store

    @classmethod
    def from_env(cls, **overrides: Any) -> SenderOptions:
        url = overrides.pop("url", None) or ENV["url"].from_env()
        if not url:
            raise ValueError("OFSRE_PCM_URL (the PCM's base URL) is not set")
        read = {name: var.from_env() for name, var in ENV.items() if name != "url"}
        cert, key, ca_file = read.pop("cert_file"), read.pop("key_file"), read.pop("ca_file")
        values: dict[str, Any] = {
            **read,
            "url": url,
            "token_url": read["token_url"] or url.rstrip("/") + "/token/",
            "cert": (cert, key) if cert and key else None,
            "verify": ca_file or True,
        }
        values.update(overrides)
        if not values["client_id"]:
            raise ValueError("OFSRE_PCM_CLIENT_ID (our OAuth2 client at the PCM) is not set")
        return cls(**values)


class TokenSource:
    """An OAuth2 client-credentials token, cached until shortly before it expires."""

    def __init__(self, client: httpx.Client, options: SenderOptions,
                 clock: Callable[[], float] = time.monotonic):
        self._client, self._options, self._clock = client, options, clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self.fetched = 0   # tokens obtained (tests and debugging)

    def get(self) -> str:
        if self._token is None or self._clock() >= self._refresh_at:
            self._fetch()
        assert self._token is not None
        return self._token

    def invalidate(self) -> None:
        self._token = None

    def _fetch(self) -> None:
        o = self._options
        form = {"grant_type": "client_credentials"}
        if o.scope:
            form["scope"] = o.scope
        try:
            response = self._client.post(o.token_url, data=form, auth=(o.client_id, o.client_secret),
                                         headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise TokenError(f"token endpoint: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise TokenError(f"token endpoint answered {response.status_code}: {response.text[:200]}")
        try:
            document = response.json()
            token = str(document["access_token"])
            lifetime = float(document.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenError(f"token endpoint: unreadable answer ({exc!r})") from exc
        self._token = token
        # Refresh early: at 80 % of the lifetime, and at most 60 s before it ends.
        self._refresh_at = self._clock() + max(0.0, lifetime - min(60.0, 0.2 * lifetime))
        self.fetched += 1


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        results = counter(semconv.PCM_REPORT_RESULTS, registry)
        batches = counter(semconv.PCM_BATCHES, registry)
        held = counter(semconv.PCM_REPORTS_HELD, registry)
        self.batches = {(k, o): batches.labels(kind=k, outcome=o)
                        for k in KINDS for o in semconv.PCM_BATCH_OUTCOMES}
        self._results, self._held = results, held

    def result(self, kind: str, status: str, count: int) -> None:
        self._results.labels(kind=kind, status=status).inc(count)

    def held(self, kind: str, status: int, count: int) -> None:
        self._held.labels(kind=kind, status=str(status)).inc(count)


class _Stopped(Exception):
    """The sender was asked to stop in the middle of a retry."""


class Sender:
    """Delivers a :class:`~.store.ReportStore`'s reports to the PCM. One thread: :meth:`run` or
    :meth:`drain`."""

    def __init__(self, store: ReportStore, options: SenderOptions, *,
                 registry: CollectorRegistry | None = REGISTRY, rng: random.Random | None = None) -> None:
        self.store, self.options = store, options
        self.max_reports = options.max_reports or int(load_catalog().ecosystem["pcm_max_reports"])
        self._client = httpx.Client(timeout=options.request_timeout, verify=options.verify, cert=options.cert,
                                    follow_redirects=False)
        self.tokens = TokenSource(self._client, options)
        self.metrics = _Metrics(registry)
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._lock_fd: int | None = None
        self._last_report: dict[str, float] = {}
        self.stats: dict[str, int] = {"requests": 0, "delivered": 0, "held": 0}

    # --- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._client.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)   # releases the flock
            self._lock_fd = None

    def acquire(self, wait: bool = True) -> bool:
        """Become the store's one sender (flock). A dead predecessor's batch in flight is still pending."""
        if self._lock_fd is not None:
            return True
        path = Path(str(self.store.path) + ".sender.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if not wait or self._stop.wait(1.0):
                    os.close(fd)
                    return False
        self._lock_fd = fd
        return True

    def run(self) -> None:
        """Deliver until :meth:`stop`: the long-running ``ofsre pcm send``."""
        mark_shipper_thread()
        if not self.acquire(wait=True):
            return
        while not self._stop.is_set():
            try:
                if not self.send_next():
                    self._stop.wait(self.options.poll_interval)
            except _Stopped:
                break
            except Exception:  # noqa: BLE001 - a bug must not stop the deliveries for good
                _log.exception("ofsre pcm sender: unexpected error")
                self._stop.wait(1.0)

    def drain(self, timeout: float | None = None) -> bool:
        """Deliver until nothing is pending (held reports stay held); True if the store was emptied.

        Runs in the caller's thread, which is a shipper's only meanwhile: its own logs ship again after."""
        with shipper_thread():
            return self._drain(timeout)

    def _drain(self, timeout: float | None) -> bool:
        if not self.acquire(wait=False):
            raise RuntimeError(f"another sender is running on {self.store.path}")
        deadline = None if timeout is None else time.monotonic() + timeout
        timer = None
        if deadline is not None:
            timer = threading.Timer(max(0.0, timeout or 0.0), self._stop.set)
            timer.daemon = True
            timer.start()
        try:
            while self.send_next():
                pass
            return True
        except _Stopped:
            return False
        finally:
            if timer is not None:
                timer.cancel()
                if timer.finished.is_set() and not timer.is_alive():
                    self._stop.clear()   # our own timeout, not a stop(): the sender may drain again

    # --- one batch ---------------------------------------------------------------------------

    def send_next(self) -> bool:
        """Lease and deliver one batch (the most urgent kind first); False when nothing is pending."""
        self.store.promote()   # what the capturing services staged since the last batch
        kind = self.store.oldest_pending_kind()
        if kind is None:
            return False
        batch = self.store.pending(kind, self.max_reports)
        if not batch:
            return False
        self._deliver(kind, batch)   # _Stopped mid-retry: what is unanswered simply stays pending
        return True

    def _deliver(self, kind: str, batch: list[tuple[int, str]]) -> None:
        """Send one batch until every report is delivered or held."""
        parts = [batch]
        while parts:
            part = parts.pop(0)
            halves = self._send_part(kind, part)
            if halves:  # 413: the two halves go next, in order
                parts[0:0] = halves

    def _send_part(self, kind: str, part: list[tuple[int, str]]) -> list[list[tuple[int, str]]] | None:
        body = ("[" + ",".join(b for _, b in part) + "]").encode("utf-8")
        attempt = 0
        refreshed = False
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                token = self.tokens.get()
            except TokenError as exc:
                self._count(kind, "token_error", str(exc))
                self._pause(attempt, None)
                attempt += 1
                continue
            outcome = self._post(kind, body, token)
            if isinstance(outcome, str):   # no answer: the same batch again, later
                self._count(kind, "network_error", outcome)
                self._pause(attempt, None)
                attempt += 1
                continue
            status = outcome.status_code
            if status in (200, 207):
                self._settle(kind, part, outcome)
                return None
            if status == 413 and len(part) > 1:
                self._count(kind, "split", f"413 for {len(part)} reports: splitting")
                middle = len(part) // 2
                return [part[:middle], part[middle:]]
            if status == 401 and not refreshed:
                self._count(kind, "unauthorized", "401: refreshing the token once")
                self.tokens.invalidate()
                refreshed = True
                continue
            if status in HOLD_STATUSES or (400 <= status < 500 and status not in (408, 429)):
                self._hold(kind, part, outcome)
                return None
            # 408, 429, 5xx: the same batch again, later
            self._count(kind, "throttled" if status == 429 else "server_error",
                        f"HTTP {status}: {outcome.text[:200]}")
            self._pause(attempt, retry_after_seconds(outcome.headers.get("retry-after")))
            attempt += 1

    def _post(self, kind: str, body: bytes, token: str) -> httpx.Response | str:
        url = self.options.url.rstrip("/") + PATHS[kind]
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json",
                   "accept": "application/json"}
        self.stats["requests"] += 1
        try:
            return self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"

    def _settle(self, kind: str, part: list[tuple[int, str]], response: httpx.Response) -> None:
        try:
            results = response.json()
            if not isinstance(results, list) or len(results) != len(part):
                raise ValueError(f"{len(results) if isinstance(results, list) else 'no'} results for "
                                 f"{len(part)} reports")
            rows = [(str(r.get("status") or "UNKNOWN"), r.get("message"), r.get("reportId"), report_id)
                    for r, (report_id, _) in zip(results, part, strict=True)]
            outcome = "partial" if response.status_code == 207 else "ok"
        except (ValueError, AttributeError) as exc:
            # The PCM took the batch but its answer cannot be read: never resend what it accepted.
            rows = [("UNKNOWN", f"unreadable answer: {exc}", None, report_id) for report_id, _ in part]
            outcome = "unreadable"
            self._report(outcome, f"{kind}: {exc}")
        self.store.deliver(rows)
        self.metrics.batches[(kind, outcome)].inc()
        tally: dict[str, int] = {}
        for status, *_ in rows:
            tally[status] = tally.get(status, 0) + 1
        for status, count in tally.items():
            self.metrics.result(kind, status, count)
        self.stats["delivered"] += len(rows)

    def _hold(self, kind: str, part: list[tuple[int, str]], response: httpx.Response) -> None:
        reason = f"HTTP {response.status_code}: {response.text[:300]}"
        self.store.hold((i for i, _ in part), reason)
        self.metrics.batches[(kind, "rejected")].inc()
        self.metrics.held(kind, response.status_code, len(part))
        self.stats["held"] += len(part)
        _log.error("ofsre pcm: the PCM refused %d %s reports (%s); they are held in %s until "
                   "`ofsre pcm requeue`",
                   len(part), kind, reason, self.store.path)

    def _pause(self, attempt: int, retry_after: float | None) -> None:
        o = self.options
        delay = backoff_delay(attempt, o.backoff_initial, o.backoff_max, self._rng)
        if retry_after is not None:
            delay = max(delay, retry_after)   # never earlier than the PCM asked
        if self._stop.wait(delay):
            raise _Stopped

    def _count(self, kind: str, outcome: str, detail: str) -> None:
        self.metrics.batches[(kind, outcome)].inc()
        self._report(outcome, f"{kind}: {detail}")

    def _report(self, kind: str, detail: str) -> None:
        """A rate-limited warning per kind of trouble."""
        now = time.monotonic()
        if now - self._last_report.get(kind, -_REPORT_EVERY) >= _REPORT_EVERY:
            self._last_report[kind] = now
            _log.warning("ofsre pcm sender: %s: %s", kind, detail)

