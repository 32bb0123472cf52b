"""The trust and size decisions every service takes before any endpoint code runs.

:func:`~ofsre.platform.app_common.service_app` wraps every app — the gateway and the modules —
in :class:`RequestGuard`, just inside the instrumentation (so each refusal below is counted,
traced and carries the ``x-fapi-interaction-id``). Per request, in this order:

1. **Headers** (RFC 9110 §5.5, RFC 9112 §3.2): more than one ``Host`` (or none), a
   ``Content-Length`` that is not one decimal number (or several that disagree), a header name
   that is not a token or a value with control characters or leading/trailing whitespace → 400
   (uvicorn >= 0.55 strips the whitespace around a value itself, as RFC 9110 §5.5 says a parser
   does: the value is then judged without it). Such a request is the client's error; forwarded
   as it is, the gateway's HTTP client would refuse to send it and the caller would see a 502.
   The offending value is never logged: it is often a credential.
2. **Who may call a module** (``gateway_secret`` set, modules only): an API path
   (``/open-banking/…``, ``/_sim/…``) without ``x-ofsre-gateway-secret`` equal to the secret
   → 401. Only a request that passed this check may carry the caller's organisation
   (``x-ofsre-client-org-id``): the gateway sets both, after verifying the client certificate.
3. **Body**: a ``Content-Length`` over ``max_body_bytes`` → 413 before anything is read; the
   body is read whole (it is small JSON or a JWS) within ``body_timeout_s`` → else 408; more
   bytes than the limit → 413. The app then receives the body from memory.
4. **Every answer carries an interaction id**: health probes and ``/metrics`` are outside the
   instrumentation, so their answers get the request's valid ``x-fapi-interaction-id`` (or a
   new one) here.

The request line and header sizes, and the time to send them, are bounded one level lower,
in the HTTP protocol (:mod:`ofsre.platform.protocol`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from typing import Any

from ofsre.instrumentation.context import (
    INTERACTION_ID_HEADER,
    interaction_id,
    is_valid_interaction_id,
    new_interaction_id,
)

from .errors import error_response

__all__ = ["RequestGuard", "GATEWAY_SECRET_HEADER", "API_PREFIXES"]

_log = logging.getLogger("ofsre.platform.guard")

GATEWAY_SECRET_HEADER = "x-ofsre-gateway-secret"
API_PREFIXES = ("/open-banking/", "/_sim/")
_SECRET = GATEWAY_SECRET_HEADER.encode()
_IID = INTERACTION_ID_HEADER.encode()
# RFC 9110 §5.1 token and §5.5 field-value (obs-text allowed; no CTLs, no leading/trailing SP/HTAB).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_FIELD_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff]"
                          rb"(?:[\x20\x09\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?\Z")
_DIGITS = re.compile(rb"[0-9]{1,18}\Z")
_CLOSE = {"connection": "close"}


class _Refusal(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


class RequestGuard:
    """Pure ASGI middleware taking the decisions of the module docstring."""

    def __init__(self, app: Any, *, max_body_bytes: int, body_timeout_s: float,
                 gateway_secret: str | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self._secret = gateway_secret.encode() if gateway_secret else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _with_interaction_id(scope, send)
        try:
            length = _check_headers(scope["headers"])
            if self._secret is not None and scope["path"].startswith(API_PREFIXES):
                _check_secret(scope["headers"], self._secret)
            if length is not None and length > self.max_body_bytes:
                raise _Refusal(413, f"request body larger than {self.max_body_bytes} bytes", _CLOSE)
            body = await self._read_body(receive)
        except _Refusal as refusal:
            refused = error_response(refusal.status, refusal.detail, headers=refusal.headers)
            return await refused(scope, receive, send)
        if body is None:  # the client went away while sending
            return
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()  # only http.disconnect is left to wait for
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, receive) -> bytes | None:
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise _Refusal(413, f"request body larger than {self.max_body_bytes} bytes", _CLOSE)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _Refusal(408, f"the request body did not arrive within {self.body_timeout_s:g} s",
                           _CLOSE) from None


def _check_headers(headers) -> int | None:
    """Refuse malformed headers (see the module docstring); the declared body length, if any."""
    hosts = 0
    length: int | None = None
    for name, value in headers:
        if not _TOKEN.match(name):
            raise _Refusal(400, "a header name is not a valid HTTP token")
        if not _FIELD_VALUE.match(value):
            # The name is safe to say (a token); the value is not (it may be a credential).
            raise _Refusal(400, f"header {name.decode('ascii')} has an invalid value (control characters "
                                "or leading/trailing whitespace)")
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            if not _DIGITS.match(value):
                raise _Refusal(400, "Content-Length is not a decimal number")
            if length is not None and int(value) != length:
                raise _Refusal(400, "conflicting Content-Length headers")
            length = int(value)
    if hosts != 1:
        raise _Refusal(400, "a request must have exactly one Host header")
    return length


def _check_secret(headers, secret: bytes) -> None:
    given = next((v for k, v in headers if k == _SECRET), b"")
    if not hmac.compare_digest(given, secret):
        raise _Refusal(401, "this module answers only the platform's gateway")


def _with_interaction_id(scope, send):
    """``send`` that adds ``x-fapi-interaction-id`` to a response that has none."""
    async def sender(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers") or ())
            if not any(name == _IID for name, _ in headers):
                iid = interaction_id()
                if iid is None:
                    given = next((v for k, v in scope["headers"] if k == _IID), b"")
                    iid = given.decode("ascii") if is_valid_interaction_id(given) else new_interaction_id()
                headers.append((_IID, iid.encode("ascii")))
                message = {**message, "headers": headers}
        await send(message)
    return sender
