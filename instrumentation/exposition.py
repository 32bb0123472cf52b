"""The ``/metrics`` endpoint: Prometheus text or OpenMetrics, one process or many.

``instrument_app`` mounts it for you. To serve it yourself, from any ASGI server::

    from ofsre.instrumentation.exposition import metrics_app

    app = metrics_app()            # a pure ASGI app answering every HTTP request with the exposition

The format follows the scrape's ``Accept`` header: Prometheus asks for OpenMetrics
(``application/openmetrics-text``) and then gets exemplars (``trace_id`` of a sampled
request on the duration histogram and the request counter); anything else gets the
classic text format, which has no exemplars. ``Accept-Encoding: gzip`` is honoured.

Multiprocess servers (gunicorn with several workers): set ``PROMETHEUS_MULTIPROC_DIR``
to an empty directory **before** Python starts, as prometheus_client requires; the
endpoint then merges every worker's files on each scrape. Add to the gunicorn config::

    from ofsre.instrumentation.exposition import gunicorn_child_exit as child_exit

so a dead worker's live gauges (requests in flight) disappear. prometheus_client's
multiprocess mode has no exemplars and no Info/Enum metrics; ofsre's metrics use
neither there (``ofsre_build_info`` is a gauge, gauge modes come from ``semconv``).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["metrics_app", "render", "scrape_registry", "is_multiprocess", "gunicorn_child_exit"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def is_multiprocess() -> bool:
    """True when prometheus_client keeps values in ``PROMETHEUS_MULTIPROC_DIR`` files."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def scrape_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to render: ``registry`` (default: the global one), or in multiprocess mode
    a fresh registry whose collector merges every process's files (the values live there)."""
    if not is_multiprocess():
        return registry if registry is not None else REGISTRY
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return merged


def render(registry: CollectorRegistry | None = None, accept: str = "") -> tuple[bytes, str]:
    """``(body, content_type)`` of an exposition in the format ``accept`` asks for."""
    encoder, content_type = choose_encoder(accept)
    return encoder(scrape_registry(registry)), content_type


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return ""


def metrics_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """A pure ASGI app that answers any HTTP request with the exposition of ``registry``."""

    async def app(scope: Scope, receive: Callable[[], Awaitable[Any]],
                  send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        body, content_type = render(registry, _header(scope, b"accept"))
        headers = [(b"content-type", content_type.encode("latin-1"))]
        if "gzip" in _header(scope, b"accept-encoding"):
            body = gzip.compress(body)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

    return app


def gunicorn_child_exit(server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook: drop a dead worker's live-gauge files."""
    if is_multiprocess():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
