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
import os
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)

from ._config import ENV, VERSION, env_str

__all__ = ["setup_tracing", "build_tracer_provider", "build_sampler", "exporter_from_env", "Presampler"]

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
    attributes = {"service.name": service, "service.version": version or VERSION.from_env()}
    environment = ENV.from_env()
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
        provider = build_tracer_provider(service, version=version, exporter=exporter,
                                         sampler_ratio=sampler_ratio)
        trace.set_tracer_provider(provider)
        _installed = provider
        return provider


# --- the drop decision before any span work (used by the ASGI middleware) --------------------------

_BUILT_IN = (ParentBased, TraceIdRatioBased, StaticSampler)
_DELEGATES = ("_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled",
              "_local_parent_not_sampled")
_NOT_SAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)
_RANDOM = getattr(trace.TraceFlags, "RANDOM_TRACE_ID", 0)


def _attribute_blind(sampler: Any) -> bool:
    """The SDK's own samplers decide from the parent and the trace id only, never the attributes."""
    if type(sampler) not in _BUILT_IN and not isinstance(sampler, ParentBased):
        return False
    return all(_attribute_blind(getattr(sampler, name)) for name in _DELEGATES if hasattr(sampler, name))


def _samples_every_root(sampler: Any) -> bool:
    root = getattr(sampler, "_root", sampler) if isinstance(sampler, ParentBased) else sampler
    if isinstance(root, TraceIdRatioBased):
        return root.rate >= 1.0
    return isinstance(root, StaticSampler) and root.should_sample(None, 1, "").decision.is_sampled()


def _root_rule(sampler: Any) -> Any:
    """``decide(trace_id) -> sampled`` of a root sampler the SDK ships, or None."""
    if type(sampler) is TraceIdRatioBased:
        bound, limit = sampler.bound, TraceIdRatioBased.TRACE_ID_LIMIT
        return lambda trace_id: trace_id & limit < bound
    if sampler is ALWAYS_ON or sampler is ALWAYS_OFF:
        sampled = sampler is ALWAYS_ON
        return lambda trace_id: sampled
    return None


def _decision_rule(sampler: Any) -> Any:
    """``decide(parent_span_context | None, trace_id) -> sampled`` computed inline, for the exact
    sampler set-ups the SDK and ``build_sampler`` make (``ParentBased`` with its default delegates
    over a ratio or static root, or a bare ratio/static sampler); None for anything else, which
    then gets the sampler's own ``should_sample``. Both return the SDK's decision."""
    if type(sampler) in (ParentBased, ParentBasedTraceIdRatio):
        defaults = (sampler._remote_parent_sampled is ALWAYS_ON and sampler._local_parent_sampled is ALWAYS_ON
                    and sampler._remote_parent_not_sampled is ALWAYS_OFF
                    and sampler._local_parent_not_sampled is ALWAYS_OFF)
        root = _root_rule(sampler._root)
        if not defaults or root is None:
            return None
        return lambda parent, trace_id: parent.trace_flags.sampled if parent is not None else root(trace_id)
    root = _root_rule(sampler)
    return None if root is None else (lambda parent, trace_id: root(trace_id))


class _PrimedIds:
    """The tracer's id generator, able to hand out one trace id chosen beforehand (per thread)."""

    def __init__(self, inner: IdGenerator) -> None:
        self.inner = inner
        self._primed = threading.local()

    def prime(self, trace_id: int) -> None:
        self._primed.trace_id = trace_id

    def generate_trace_id(self) -> int:
        primed: int | None = getattr(self._primed, "trace_id", None)
        if primed is not None:
            self._primed.trace_id = None
            return primed
        return self.inner.generate_trace_id()

    def generate_span_id(self) -> int:
        return self.inner.generate_span_id()

    def is_trace_id_random(self) -> bool:
        random: bool = getattr(self.inner, "is_trace_id_random", lambda: False)()
        return random


class Presampler:
    """Asks the sampler first, so a span that will not be sampled costs almost nothing.

    The SDK's ``Tracer.start_span`` builds the span's attributes, calls the sampler, and for a
    dropped span returns a ``NonRecordingSpan``. For the SDK's own samplers (which never look
    at attributes) the same decision can be taken before the middleware builds any attribute:
    :meth:`drop` returns the very ``NonRecordingSpan`` the SDK would have returned (same trace
    id rules, a new span id, unsampled flags, the sampler's trace state), or ``None`` when the
    span is sampled — then the tracer is called as usual, and its id generator hands it the
    trace id the decision was made on, so the SDK's own sampling call decides the same.

    ``Presampler.of(tracer)`` is ``None`` (no shortcut) for anything else: a custom sampler, a
    non-SDK tracer, SDK internal metrics on (they count dropped spans), or a sampler that keeps
    every new trace (nothing to drop for a request without a parent: the shortcut would only
    add a sampler call).
    """

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self.ids = tracer.id_generator if isinstance(tracer.id_generator, _PrimedIds) else _PrimedIds(
            tracer.id_generator)
        tracer.id_generator = self.ids
        self.every_root = _samples_every_root(tracer.sampler)
        self.decide = _decision_rule(tracer.sampler)

    @classmethod
    def of(cls, tracer: Any) -> Presampler | None:
        from opentelemetry.sdk.trace import Tracer

        if not isinstance(tracer, Tracer) or not _attribute_blind(getattr(tracer, "sampler", None)):
            return None
        if os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true":
            return None
        if not hasattr(tracer, "id_generator") or not callable(getattr(tracer, "_is_enabled", None)):
            return None
        return cls(tracer)

    def drop(self, parent: Any, name: str, kind: trace.SpanKind) -> trace.NonRecordingSpan | None:
        parent_span: trace.SpanContext | None = trace.get_current_span(parent).get_span_context()
        random_id: int   # a bool from the id generator, the flag bit from a parent
        if parent_span is None or not parent_span.is_valid:
            if self.every_root:
                return None
            trace_id = self.ids.inner.generate_trace_id()
            random_id = self.ids.is_trace_id_random()
            parent_span = None
        else:
            trace_id, random_id = parent_span.trace_id, parent_span.trace_flags & _RANDOM
        if not self.tracer._is_enabled():  # noqa: SLF001 - a disabled tracer: let the SDK answer
            return None
        if self.decide is not None:   # the SDK's samplers' rule, without building a SamplingResult
            recording = self.decide(parent_span, trace_id)
            trace_state = parent_span.trace_state if parent_span is not None else None
        else:
            result = self.tracer.sampler.should_sample(parent, trace_id, name, kind, None, ())
            recording, trace_state = result.decision.is_recording(), result.trace_state
        if recording:
            if parent_span is None:
                self.ids.prime(trace_id)
            return None
        flags = trace.TraceFlags(_RANDOM) if random_id and _RANDOM else _NOT_SAMPLED
        return trace.NonRecordingSpan(trace.SpanContext(trace_id, self.ids.generate_span_id(),
                                                        is_remote=False,
                                                        trace_flags=flags, trace_state=trace_state))
