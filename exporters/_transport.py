"""HTTP for the shipper's worker thread, and the guard that stops a shipper from logging into itself.

Recursion is the classic log-shipper bug (python-logging-loki #18): the HTTP client logs at
DEBUG, the record reaches the shipping handler, which sends it, which logs... Two guards:

* :func:`mark_shipper_thread` marks the worker thread; every ofsre shipping handler ignores
  (and counts, reason ``shipper_thread``) a record emitted from a marked thread, whatever
  logger it came through.
* :data:`QUIET_LOGGERS` (httpx's and httpcore's loggers) get a filter that drops records
  emitted from a marked thread, so the shipper's own requests do not show up in the
  application's other handlers either; the application's own httpx calls still log.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx

__all__ = ["Transport", "Reply", "TransportError", "mark_shipper_thread", "in_shipper_thread",
           "shipper_thread",
           "retry_after_seconds", "backoff_delay", "is_retryable", "auth_headers", "QUIET_LOGGERS"]

QUIET_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2",
                 "httpcore.proxy", "httpcore.socks")

class _ShipperFlag(threading.local):
    shipper = False   # a class default: reading it on an unmarked thread is one attribute lookup


_local = _ShipperFlag()


def mark_shipper_thread() -> None:
    """Mark the current thread as a shipper's: records logged from it are never shipped."""
    _local.shipper = True


def in_shipper_thread() -> bool:
    return _local.shipper


@contextlib.contextmanager
def shipper_thread() -> Iterator[None]:
    """Mark the current thread as a shipper's for a block only (a caller's own thread, e.g. a
    ``drain()`` from the main thread, must ship its logs again afterwards)."""
    before = in_shipper_thread()
    _local.shipper = True
    try:
        yield
    finally:
        _local.shipper = before


class _NotFromShipper(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not in_shipper_thread()


_QUIET = _NotFromShipper()


def _quiet_http_client_loggers() -> None:
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]   # lower-case names
    content: bytes


class TransportError(Exception):
    """The request got no HTTP answer (refused, reset, timed out): retryable."""


class Transport:
    """A keep-alive HTTP client used by one worker thread only."""

    def __init__(self, timeout: float, *, verify: bool | str = True) -> None:
        _quiet_http_client_loggers()
        self._client = httpx.Client(
            timeout=timeout, verify=verify, follow_redirects=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def post(self, url: str, content: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            response = self._client.post(url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                     response.content)

    def close(self) -> None:
        self._client.close()


def is_retryable(status: int) -> bool:
    """408, 429 and every 5xx are worth another try; any other 4xx will fail again the same way."""
    return status in (408, 429) or status >= 500


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if
    absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(maximum, initial * 2**attempt))."""
    cap = min(maximum, initial * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0, cap)


def auth_headers(username: str | None, password: str | None, token: str | None,
                 token_scheme: str = "Bearer") -> dict[str, str]:
    """``Authorization`` for basic auth or a bearer token (none if neither is set)."""
    if token:
        return {"Authorization": f"{token_scheme} {token}"}
    if username:
        credentials = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        return {"Authorization": f"Basic {credentials}"}
    return {}
