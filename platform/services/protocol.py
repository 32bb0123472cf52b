"""uvicorn's HTTP/1.1 protocol with bounded request heads and Open Finance error answers.

uvicorn (httptools) reads a request line and headers of any size, takes any time to receive
them, and answers a request it cannot parse with a plain-text ``400 Invalid HTTP request
received.`` — no ``x-fapi-interaction-id``, no Open Finance body. Every platform process
(``python -m ofsre.platform.run``) serves with :func:`protocol_class` instead, which adds:

* **414** when the request target is longer than ``max_url_bytes``;
* **431** when the request line plus headers exceed ``max_header_bytes``: counted as the parser
  reads the target and each header (a head that arrives in one read), and as bytes arrive for a head
  still open at the end of a read, so a 64 MB header costs at most one socket read beyond the limit,
  never 64 MB (a read that also ends a pipelined request is not charged to the next head);
* **408** when the head has not fully arrived ``header_timeout_s`` after its first byte (or
  after the connection opened);
* the Open Finance error body, ``application/json``, a fresh ``x-fapi-interaction-id`` and
  ``connection: close`` on each of these and on every unparseable request (400).

The body's size and time limits are the app's (:mod:`ofsre.platform.guard`): they need the
parsed headers, and an answer inside the ASGI cycle.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ofsre.instrumentation.context import INTERACTION_ID_HEADER, new_interaction_id
from ofsre.instrumentation.openfinance import error_body

from .errors import DEFAULT_CODES
from .settings import Settings

__all__ = ["LimitedHttpProtocol", "protocol_class"]

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 414: b"URI Too Long",
            431: b"Request Header Fields Too Large"}


class _HeadRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class LimitedHttpProtocol(HttpToolsProtocol):
    """See the module docstring. The limits are class attributes (:func:`protocol_class` sets them)."""

    max_url_bytes: ClassVar[int] = Settings.max_url_bytes
    max_header_bytes: ClassVar[int] = Settings.max_header_bytes
    header_timeout_s: ClassVar[float] = Settings.header_timeout_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._parsed_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused: _HeadRefused | None = None
        self._ended_in_chunk = False   # a request ended inside the chunk being parsed (see data_received)

    # -- the head's clock ----------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._answer(408, f"the request head did not arrive within {self.header_timeout_s:g} s")

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0     # the reads that ended inside this head
        self._parsed_bytes = 0   # the target and headers parsed so far
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_url_bytes:
            # httptools turns an exception here into a parse error, which lands in send_400_response.
            self._refused = _HeadRefused(414, f"the request target is longer than {self.max_url_bytes} bytes")
            raise self._refused
        self._count_parsed(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count_parsed(len(name) + len(value) + 4)   # "name: value\r\n"

    def _count_parsed(self, count: int) -> None:
        self._parsed_bytes += count
        if self._parsed_bytes > self.max_header_bytes:   # raised as on_url's 414 is
            self._refused = _HeadRefused(431, self._too_large())
            raise self._refused

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._ended_in_chunk = True
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        self._ended_in_chunk = False
        super().data_received(data)  # a parse error or a refusal above answers in send_400_response
        if self._in_head and not self.transport.is_closing():
            # A pipelined head that began after another request ended in this chunk: the chunk also holds
            # that request (its body, perhaps large), so the new head is counted from the next chunk on
            # (at most one chunk beyond the limit, as for any head).
            self._head_bytes += 0 if self._ended_in_chunk else len(data)
            if self._head_bytes > self.max_header_bytes:
                self._answer(431, self._too_large())

    def _too_large(self) -> str:
        return f"the request line and headers are larger than {self.max_header_bytes} bytes"

    def send_400_response(self, msg: str) -> None:
        if self._refused is not None:
            self._answer(self._refused.status, self._refused.detail)
        else:
            self._answer(400, "the request is not valid HTTP/1.1")

    # -- the answer --------------------------------------------------------------------------
    def _answer(self, status: int, detail: str) -> None:
        """Write an Open Finance error and close: the rest of this connection cannot be trusted."""
        self._in_head = False
        self._cancel_head_timer()
        code, title = DEFAULT_CODES.get(status, (f"HTTP_{status}", _REASONS[status].decode()))
        body = error_body(code, title, detail)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                 INTERACTION_ID_HEADER.encode() + b": " + new_interaction_id().encode() + b"\r\n",
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def protocol_class(settings: Settings, base: type[LimitedHttpProtocol] = LimitedHttpProtocol) -> type:
    """``base`` with the limits of ``settings`` (uvicorn's ``http=`` option)."""
    return type(base.__name__, (base,), {"max_url_bytes": settings.max_url_bytes,
                                         "max_header_bytes": settings.max_header_bytes,
                                         "header_timeout_s": settings.header_timeout_s})
