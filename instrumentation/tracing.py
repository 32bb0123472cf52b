"""OpenTelemetry tracing for an ofsre service, in one call.

Usage::

    from ofsre.instrumentation.tracing import setup_tracing

    provider = setup_tracing("accounts", version="1.4.2")   # once, at start-up

``setup_tracing`` installs a global SDK ``TracerProvider`` with

* a resource naming the service (``service.name``, ``service.version``,
  ``deployment.environment.name`` from ``OFSRE_ENV``; ``OTEL_RESOURCE_ATTRIBUTES`` is merged in);
* parent-based trace-id-ratio sampling: a request that arrives with a sampled
  ``traceparent`` is traced, a new trace is kept with probability ``sampler_ratio``
  (default 1.0). Without ``sampler_ratio``, ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``
  choose as the OpenTelemetry specification says;
* a ``BatchSpanProcessor`` (background thread, bounded queue, ``OTEL_BSP_*``) in front of
  ``exporter`` if given, else an OTLP/HTTP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (``OTEL_TRACES_EXPORTER=none`` turns it off),
  else no exporter at all: no network unless configured. Spans are still created, so
  trace ids reach logs and exemplars.

It is idempotent: later calls return the first provider unchanged. When something else
(``opentelemetry-instrument``, a test) already installed an SDK provider, that one is
returned and left alone. :func:`build_tracer_provider` builds the same provider without
installing it (tests, or a second provider for a sub-system).
"""

from __future__ import annotations

import logging
import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

from ._config import UNKNOWN, env_str

__all__ = ["setup_tracing", "build_tracer_provider", "build_sampler", "exporter_from_env"]

_log = logging.getLogger("ofsre.instrumentation")
_lock = threading.Lock()
_installed: TracerProvider | None = None


def build_sampler(ratio: float | None = None) -> Sampler | None:
    """``ParentBased(TraceIdRatioBased(ratio))``; ``None`` lets the SDK read ``OTEL_TRACES_SAMPLER``.

    ``ratio`` falls back to ``OTEL_TRACES_SAMPLER_ARG`` and then 1.0; a value outside
    [0, 1] raises ``ValueError`` when given as an argument, and is logged and replaced by
    1.0 when it comes from the environment.
    """
    if ratio is None:
        if env_str("OTEL_TRACES_SAMPLER"):
            return None  # the SDK parses the full OTEL_TRACES_SAMPLER vocabulary itself
        raw = env_str("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(raw)
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(raw)
        except ValueError:
            _log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a ratio in [0, 1]; sampling everything", raw)
            ratio = 1.0
    elif not 0.0 <= ratio <= 1.0:
        raise ValueError(f"sampler_ratio must be within [0, 1], not {ratio!r}")
    return ParentBased(TraceIdRatioBased(ratio))


def exporter_from_env() -> SpanExporter | None:
    """An OTLP/HTTP span exporter when an OTLP endpoint is configured, else ``None``."""
    if env_str("OTEL_TRACES_EXPORTER").lower() == "none":
        return None
    if not (env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env_str("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    # Imported here: it pulls in protobuf and requests, which a service without OTLP never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # reads endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*


def build_tracer_provider(service: str, *, version: str | None = None, exporter: SpanExporter | None = None,
                          sampler_ratio: float | None = None) -> TracerProvider:
    """A configured SDK provider, not installed globally (see the module docstring)."""
    attributes = {"service.name": service, "service.version": version or env_str("OFSRE_VERSION", UNKNOWN)}
    environment = env_str("OFSRE_ENV")
    if environment:
        attributes["deployment.environment.name"] = environment
    provider = TracerProvider(resource=Resource.create(attributes), sampler=build_sampler(sampler_ratio))
    chosen = exporter if exporter is not None else exporter_from_env()
    if chosen is not None:
        provider.add_span_processor(BatchSpanProcessor(chosen))
    return provider


def setup_tracing(service: str, *, version: str | None = None, exporter: SpanExporter | None = None,
                  sampler_ratio: float | None = None) -> TracerProvider:
    """Install (once) and return the global tracer provider of this process."""
    global _installed
    with _lock:
        if _installed is not None:
            if exporter is not None or sampler_ratio is not None:
                _log.warning("setup_tracing() already ran; the new exporter/sampler_ratio are ignored")
            return _installed
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            _installed = current  # someone else configured the SDK: respect their choice
            return current
        provider = build_tracer_provider(service, version=version, exporter=exporter, sampler_ratio=sampler_ratio)
        trace.set_tracer_provider(provider)
        _installed = provider
        return provider
