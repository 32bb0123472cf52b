"""The one way the tests start a small HTTP server: a real ``ThreadingHTTPServer`` on 127.0.0.1.

A fake backend keeps its own behaviour (routes, validation, decoding) and shares only the
plumbing here: the server on port 0 (or a port it had before), a daemon thread serving it,
its ``url``, and a clean close (``shutdown`` then ``server_close``). The handler is either a
function of one :class:`Request` returning ``(status, headers, body)``::

    def respond(request: Request) -> Reply:
        return json_reply(200, {"data": [], "path": request.route})

    with HttpStub(respond, methods=("GET",)) as server:
        httpx.get(server.url + "/x")

or, when the fake needs the connection itself (keep-alive connections to cut, a write that may
fail), a ``BaseHTTPRequestHandler`` subclass, used as it is (derive from :class:`QuietHandler`
to keep the test output free of access logs). The ``http_stub`` fixture of ``tests/conftest.py``
is the factory form: ``http_stub(respond)`` returns a started server, closed at teardown.

Test modules import it package-relative, like their other shared helpers (``from ..http_stub
import HttpStub``): pytest runs with ``--import-mode=importlib``, which names every test file
after its path from the root (``tests.alerts.test_e2e_prometheus``) without adding folders to
``sys.path``, so a relative import is what resolves from every folder.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["METHODS", "HttpStub", "QuietHandler", "Reply", "Request", "Respond", "json_reply", "stub_factory"]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Request:
    """One request as the handler function sees it (the body already read by its content-length)."""

    method: str
    path: str                 # as sent, query string included
    headers: dict[str, str]   # names lower-cased
    body: bytes

    @property
    def route(self) -> str:
        """The path without its query string."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def json(self) -> Any:
        """The body parsed as JSON, ``None`` for an empty body."""
        return json.loads(self.body) if self.body else None


Reply = tuple[int, Mapping[str, str], bytes]
Respond = Callable[[Request], Reply]


def json_reply(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
    """``payload`` as a JSON body with ``content-type: application/json`` (plus ``headers``)."""
    return status, {"content-type": "application/json", **(headers or {})}, json.dumps(payload).encode()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that writes no access log to stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass


def _handler_for(respond: Respond, methods: tuple[str, ...], protocol: str) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        protocol_version = protocol

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            status, headers, content = respond(request)
            self.send_response(status)
            for name, value in {**headers, "content-length": str(len(content))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(content)

    for method in methods:   # any other method gets http.server's own 501
        setattr(Handler, f"do_{method}", Handler._serve)
    return Handler


class HttpStub:
    """A started server on 127.0.0.1; ``close()`` (or leaving ``with``) stops it and frees the port.

    ``handler``: a :data:`Respond` function or a ``BaseHTTPRequestHandler`` subclass. For a
    function, ``methods`` are the methods it answers and ``protocol`` the HTTP version
    (``"HTTP/1.1"`` keeps connections alive). ``port=0`` takes a free port; a stopped fake
    passes its old port to come back on it.
    """

    def __init__(self, handler: Respond | type[BaseHTTPRequestHandler], *, port: int = 0,
                 methods: tuple[str, ...] = METHODS, protocol: str = "HTTP/1.0", name: str = "http-stub",
                 poll_interval: float = 0.5) -> None:
        handler_class = handler if isinstance(handler, type) else _handler_for(handler, methods, protocol)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler_class)   # daemon_threads already
        self.port: int = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": poll_interval}, daemon=True, name=name)
        self.thread.start()
        self._closed = False

    def close(self) -> None:
        """Stop serving and close the listening socket; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HttpStub:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self.close()
        return False


def stub_factory() -> Iterator[Callable[..., HttpStub]]:
    """The body of a fixture: yields ``make(handler, **options) -> HttpStub``, closes them all after."""
    stubs: list[HttpStub] = []

    def make(handler: Respond | type[BaseHTTPRequestHandler], **options: Any) -> HttpStub:
        stubs.append(HttpStub(handler, **options))
        return stubs[-1]

    try:
        yield make
    finally:
        for stub in stubs:
            stub.close()
