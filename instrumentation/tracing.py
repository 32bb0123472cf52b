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
from random import getrandbits
from time import time_ns
from typing import Any

import opentelemetry.sdk.trace as _sdk_trace
import opentelemetry.trace.propagation as _trace_propagation
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
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

# Two private names of OpenTelemetry's: the class Tracer.start_span makes (a LazySpan turns into
# one), and the context key trace.get_current_span reads. Without them (another SDK release) the
# shortcuts that need them are off and the public calls are used.
_SdkSpan: Any = getattr(_sdk_trace, "_Span", None)
_SPAN_KEY: Any = getattr(_trace_propagation, "_SPAN_KEY", None)

__all__ = ["setup_tracing", "build_tracer_provider", "build_sampler", "exporter_from_env", "Presampler",
           "LazySpan", "span_attacher"]

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
        random: bool = getattr(self.inner, "is_trace_id_random", _not_random)()
        return random


def _not_random() -> bool:
    return False


_TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT


def _root_bound(sampler: Any) -> int | None:
    """The ratio bound a new trace is decided on, for the set-ups ``_decision_rule`` inlines."""
    root = sampler._root if type(sampler) in (ParentBased, ParentBasedTraceIdRatio) else sampler
    return root.bound if type(root) is TraceIdRatioBased else None


def _current_context_var() -> Any:
    """The ContextVar holding OpenTelemetry's current context (its default runtime context), or None."""
    import contextvars

    from opentelemetry import context as otel_context
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    current = getattr(runtime, "_current_context", None)
    if type(runtime) is not ContextVarsRuntimeContext or not isinstance(current, contextvars.ContextVar) \
            or not isinstance(_SPAN_KEY, str):
        return None
    return current


_new_tuple = tuple.__new__
_MAX_TRACE_ID, _MAX_SPAN_ID = 2 ** 128 - 1, 2 ** 64 - 1


def _tuple_layout_is_the_constructors() -> bool:
    """Whether a local ``SpanContext`` is the tuple (trace id, span id, is_remote, flags, state,
    is_valid), as its constructor builds it: then :meth:`Presampler.start` builds it so, without
    the keyword handling of ``SpanContext.__new__``; else it calls the constructor."""
    samples = [(1, 2, _NOT_SAMPLED, trace.DEFAULT_TRACE_STATE),
               (2 ** 128, 5, trace.TraceFlags(1), trace.TraceState([("k", "v")]))]
    for trace_id, span_id, flags, state in samples:
        made = _new_tuple(trace.SpanContext, (trace_id, span_id, False, flags, state,
                                              0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID))
        built = trace.SpanContext(trace_id, span_id, False, flags, state)
        if made != built or made.is_valid != built.is_valid or made.trace_state is not built.trace_state:
            return False
    return True


class Presampler:
    """Asks the sampler first, so a span that will not be sampled costs almost nothing, and a
    sampled one is kept as plain values until it ends.

    The SDK's ``Tracer.start_span`` builds the span's attributes, calls the sampler, and for a
    dropped span returns a ``NonRecordingSpan``. For the SDK's own samplers (which never look
    at attributes) the same decision can be taken before the middleware builds any attribute.
    :meth:`start` returns

    * for a dropped span, the very ``NonRecordingSpan`` the SDK would have returned (same trace
      id rules, a new span id, unsampled flags, the sampler's trace state);
    * for a sampled span, when every span processor of the tracer does nothing when a span
      starts (the SDK's ``BatchSpanProcessor`` and ``SimpleSpanProcessor``, or any processor
      that only implements ``on_end``), a :class:`LazySpan`: the SDK's ids, flags and trace
      state, its attributes a plain dict, and at its end one ``ReadableSpan`` handed to the
      processors' ``on_end``, as the SDK's span does;
    * otherwise ``None``: then the tracer is called as usual, and its id generator hands it the
      trace id the decision was made on, so the SDK's own sampling call decides the same.

    ``Presampler.of(tracer)`` is ``None`` (no shortcut) for anything else: a custom sampler, a
    non-SDK tracer, or SDK internal metrics on (they count the spans the tracer starts).
    """

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self.ids = tracer.id_generator if isinstance(tracer.id_generator, _PrimedIds) else _PrimedIds(
            tracer.id_generator)
        tracer.id_generator = self.ids
        self.every_root = _samples_every_root(tracer.sampler)
        self.decide = _decision_rule(tracer.sampler)
        inner = self.ids.inner
        self._trace_id, self._span_id = inner.generate_trace_id, inner.generate_span_id
        # The SDK's RandomIdGenerator draws random.getrandbits(128 / 64), again while it gives the
        # invalid id 0: drawn here the same way, without its Python frame (0 -> the generator).
        self._random_ids = type(inner) is RandomIdGenerator   # (whose trace ids are random: W3C flag)
        # Tracer._is_enabled() is `self._tracer_config.is_enabled`: read directly when it is the SDK's.
        self._config = tracer if type(tracer)._is_enabled is Tracer._is_enabled else None
        self._random = getattr(inner, "is_trace_id_random", _not_random)
        # A new trace's decision inline for a ratio root (ParentBased's default, or a bare ratio).
        self._root_bound: int | None = _root_bound(tracer.sampler) if self.decide is not None else None
        self._current = _current_context_var()
        # A new trace decided in few steps (see _new_root): its ratio bound when the ids and the tracer are
        # the SDK's, the runtime context OpenTelemetry's default and SpanContext a tuple; else None.
        fast = self._random_ids and self._config is not None and self._current is not None and _TUPLE_CONTEXT
        self._fast_root: int | None = self._root_bound if fast else None
        self._checked: Any = object()   # the processor tuple `_lazy` was decided for
        self._lazy = False
        self._enders: tuple[Any, ...] = ()   # what a lazy span calls when it ends (_span_enders)

    @classmethod
    def of(cls, tracer: Any) -> Presampler | None:
        if not isinstance(tracer, Tracer) or not _attribute_blind(getattr(tracer, "sampler", None)):
            return None
        if os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true":
            return None
        if not hasattr(tracer, "id_generator") or not callable(getattr(tracer, "_is_enabled", None)):
            return None
        return cls(tracer)

    def lazy(self) -> bool:
        """Whether a sampled span may be a :class:`LazySpan` (decided again when processors change)."""
        processors = getattr(self.tracer.span_processor, "_span_processors", None)
        if processors is not self._checked:
            self._checked = processors
            self._lazy = self.decide is not None and _lazy_spans_allowed(self.tracer, processors)
            self._enders = _span_enders(processors) if self._lazy else ()
        return self._lazy

    def start(self, parent: Any, kind: trace.SpanKind, parts: Any,
              arguments: tuple[Any, ...] = ()) -> trace.NonRecordingSpan | LazySpan | None:
        """The span the SDK would start (see the class docstring); ``parts(*arguments)`` gives its
        ``(name, attributes)``, called only when they are needed (a sampled span, a user's sampler)."""
        bound = self._fast_root
        if parent is None and bound is not None:
            current_span = self._current.get().get(_SPAN_KEY)
            if current_span is None and self.tracer._tracer_config.is_enabled:  # noqa: SLF001 - as _is_enabled()
                trace_id = getrandbits(128)
                if trace_id:
                    return self._new_root(trace_id, bound, kind, parts, arguments)
        if self._current is not None:   # trace.get_current_span(parent), read directly
            span = (parent if parent is not None else self._current.get()).get(_SPAN_KEY)
            parent_span = None
            if span is not None and isinstance(span, trace.Span):   # (None first: Span is an ABC)
                parent_span = span.get_span_context()
        else:
            parent_span = trace.get_current_span(parent).get_span_context()
        random_id: int   # a bool from the id generator, the flag bit from a parent
        lazy: bool | None = None   # self.lazy(), once asked
        if parent_span is None or not parent_span.is_valid:
            if self.every_root:
                lazy = self.lazy()
                if not lazy:
                    return None   # the SDK samples it; nothing to decide early
            if self._random_ids:
                trace_id, random_id = getrandbits(128) or self._trace_id(), True
            else:
                trace_id, random_id = self._trace_id(), self._random()
            parent_span = None
        else:
            trace_id, random_id = parent_span.trace_id, parent_span.trace_flags & _RANDOM
        config = self._config
        if not (config._tracer_config.is_enabled if config is not None  # noqa: SLF001 - as _is_enabled()
                else self.tracer._is_enabled()):  # noqa: SLF001 - a disabled tracer: let the SDK answer
            return None
        if parent_span is None and self._root_bound is not None:
            recording, trace_state = trace_id & _TRACE_ID_LIMIT < self._root_bound, None
        elif self.decide is not None:   # the SDK's samplers' rule, without building a SamplingResult
            recording = self.decide(parent_span, trace_id)
            trace_state = parent_span.trace_state if parent_span is not None else None
        else:
            result = self.tracer.sampler.should_sample(parent, trace_id, parts(*arguments)[0], kind, None, ())
            recording, trace_state = result.decision.is_recording(), result.trace_state
        random_id = random_id and _RANDOM
        if recording and not (self.lazy() if lazy is None else lazy):
            if parent_span is None:
                self.ids.prime(trace_id)
            return None
        span_id = (self._random_ids and getrandbits(64)) or self._span_id()
        if recording:
            flags = _SAMPLED_RANDOM if random_id else _SAMPLED
        else:
            flags = _NOT_SAMPLED_RANDOM if random_id else _NOT_SAMPLED
        if _TUPLE_CONTEXT:   # SpanContext(trace_id, span_id, False, flags, trace_state), built directly
            context = _new_tuple(trace.SpanContext, (
                trace_id, span_id, False, flags, trace_state if trace_state is not None else _NO_STATE,
                0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID))
        else:
            context = trace.SpanContext(trace_id, span_id, False, flags, trace_state)
        if recording:
            name, attributes = parts(*arguments)
            return LazySpan(self.tracer, name, context, parent_span, kind, attributes, parent, self._enders)
        # NonRecordingSpan(context), without the Python frame of its __init__ (which only sets _context)
        dropped = _new_non_recording(trace.NonRecordingSpan)
        dropped._context = context
        return dropped

    def _new_root(self, trace_id: int, bound: int, kind: trace.SpanKind, parts: Any,
                  arguments: tuple[Any, ...]) -> trace.NonRecordingSpan | LazySpan | None:
        """:meth:`start` for a new trace when ``_fast_root``: the same decision, ids, flags and span
        as the general path below, in fewer steps (a dropped one is most requests at a low ratio)."""
        # (ids from the SDK's RandomIdGenerator, which never gives span id 0: the context is valid)
        if trace_id & _TRACE_ID_LIMIT >= bound:
            dropped = _new_non_recording(trace.NonRecordingSpan)
            dropped._context = _new_tuple(trace.SpanContext, (
                trace_id, getrandbits(64) or self._span_id(), False, _ROOT_DROPPED, _NO_STATE, True))
            return dropped
        if not self.lazy():
            self.ids.prime(trace_id)   # the SDK's own span below, on this trace id
            return None
        context = _new_tuple(trace.SpanContext, (
            trace_id, getrandbits(64) or self._span_id(), False, _ROOT_SAMPLED, _NO_STATE, True))
        name, attributes = parts(*arguments)
        return LazySpan(self.tracer, name, context, None, kind, attributes, None, self._enders)


_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_SAMPLED_RANDOM = trace.TraceFlags(trace.TraceFlags.SAMPLED | _RANDOM)
_NOT_SAMPLED_RANDOM = trace.TraceFlags(_RANDOM)
_TUPLE_CONTEXT = _tuple_layout_is_the_constructors()
_new_non_recording = trace.NonRecordingSpan.__new__
_NO_STATE = trace.DEFAULT_TRACE_STATE
# A new trace's flags with random trace ids (the W3C random bit where the API has it), as start() sets them
_ROOT_SAMPLED = _SAMPLED_RANDOM if _RANDOM else _SAMPLED
_ROOT_DROPPED = _NOT_SAMPLED_RANDOM if _RANDOM else _NOT_SAMPLED


def _quiet_hooks() -> tuple[set[Any], set[Any]]:
    """The ``on_start`` and ``_on_ending`` implementations known to do nothing."""
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    classes = (SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor)
    return ({c.on_start for c in classes}, {getattr(c, "_on_ending", None) for c in classes})


def _lazy_spans_allowed(tracer: Any, processors: Any) -> bool:
    """A :class:`LazySpan` behaves as the SDK's span for this tracer: its processors do nothing
    when a span starts or is ending, and no attribute value length limit is set (the SDK would
    truncate values; the lazy span's own attributes are kept as they are)."""
    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

    if _SdkSpan is None or type(tracer.span_processor) is not SynchronousMultiSpanProcessor \
            or not isinstance(processors, tuple):
        return False
    limits = getattr(tracer, "_span_limits", None)
    if limits is None or getattr(limits, "max_span_attribute_length", 0) is not None:
        return False
    if not (limits.max_span_attributes is None or limits.max_span_attributes >= _LAZY_ATTRIBUTE_ROOM):
        return False
    starts, endings = _quiet_hooks()
    return all(type(p).on_start in starts and getattr(type(p), "_on_ending", None) in endings
               for p in processors)


def _span_enders(processors: Any) -> tuple[Any, ...]:
    """Per span processor, what a lazy span's end calls: its ``on_end``; for the SDK's
    ``BatchSpanProcessor`` (whose ``on_end`` checks that the span is sampled, which a lazy span
    always is, then queues it) its queue's ``emit`` directly, when this SDK release has one."""
    enders = []
    for processor in processors:
        queue = getattr(processor, "_batch_processor", None)
        emit = getattr(queue, "emit", None)
        enders.append(emit if type(processor) is BatchSpanProcessor and callable(emit) else processor.on_end)
    return tuple(enders)


# A lazy span holds the middleware's attributes (at most 10) and the status code; a span limit
# below this makes the SDK's own span necessary (it drops attributes beyond the limit).
_LAZY_ATTRIBUTE_ROOM = 16
_UNSET_STATUS = trace.Status(trace.StatusCode.UNSET)


class LazySpan(trace.Span, ReadableSpan):
    """A sampled SDK span, kept as plain values while only its maker touches it.

    Made by :meth:`Presampler.start` with the ids, flags and trace state the SDK would have
    given it. Until it ends it is the current span (child spans nest under it, logs and
    outgoing ``traceparent`` carry its ids). It is its own ``ReadableSpan`` (the same fields
    the SDK's span hands to processors): :meth:`end` sets the end time and passes it to the
    processors the tracer had when it started (``on_end``, or a batch processor's queue: see
    ``_span_enders``), as the SDK's ``Span.end`` does, without the SDK span's
    lock, bounded attribute copy, processor start call and second ``ReadableSpan`` — which
    :meth:`Presampler.lazy` checked are not needed. :meth:`end_as_server` adds
    ``http.response.status_code`` first.

    Anything else a caller does with it — ``set_attribute``, events, links, status, a new
    name, an exception — turns it into the SDK's own span, started at the same time with the
    same ids and attributes, and from then on every call goes to that span.
    """

    # ReadableSpan's fields every new lazy span has (class defaults: no store per span); the first
    # assignment, on the instance, shadows them.
    _end_time: int | None = None
    _events: Any = ()
    _links: Any = ()
    _status = _UNSET_STATUS
    _sdk: Any = None

    def __init__(self, tracer: Any, name: str, context: trace.SpanContext, parent: trace.SpanContext | None,
                 kind: trace.SpanKind, attributes: dict[str, Any], parent_context: Any,
                 enders: tuple[Any, ...]) -> None:
        # ReadableSpan's fields, set here rather than through its __init__ (one call less per span)
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = tracer.instrumentation_info
        self._instrumentation_scope = tracer._instrumentation_scope  # noqa: SLF001 - the SDK span's scope
        self._parent = parent
        self._start_time = time_ns()
        self._attributes = attributes
        self._resource = tracer.resource
        # its own (typed copies of two of them: ReadableSpan declares them optional)
        self._span_context = context
        self._values = attributes
        self._tracer = tracer
        self._parent_context = parent_context
        self._enders = enders   # the tracer's processors' on_end (see _span_enders), as at the start

    def get_span_context(self) -> trace.SpanContext:
        return self._span_context

    def is_recording(self) -> bool:
        if self._sdk is not None:
            return bool(self._sdk.is_recording())
        return self._end_time is None

    def end(self, end_time: int | None = None) -> None:
        if self._sdk is not None:
            self._sdk.end(end_time)
            return
        if self._end_time is not None:
            _log.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        for end in self._enders:
            end(self)

    def end_as_server(self, status_code: int) -> None:
        """Set ``http.response.status_code`` and end (a server span's normal end, no error)."""
        if self._sdk is None and self._end_time is None:   # end() inline: this runs for every request
            self._values["http.response.status_code"] = status_code
            self._end_time = time_ns()
            for end in self._enders:
                end(self)
        else:
            self.sdk_span().set_attribute("http.response.status_code", status_code)
            self.end()

    def sdk_span(self) -> Any:
        """The SDK's span this one becomes (made on the first call beyond ending it)."""
        if self._sdk is None:
            if self._end_time is not None:
                return trace.NonRecordingSpan(self._span_context)   # ended: later calls change nothing
            tracer = self._tracer
            span = _SdkSpan(name=self._name, context=self._span_context, parent=self._parent,
                            sampler=tracer.sampler, resource=tracer.resource, attributes=self._values,
                            span_processor=tracer.span_processor, kind=self._kind,
                            instrumentation_info=tracer.instrumentation_info,
                            limits=tracer._span_limits,  # noqa: SLF001 - the tracer's, as start_span passes
                            instrumentation_scope=self._instrumentation_scope)
            span.start(start_time=self._start_time, parent_context=self._parent_context)
            self._sdk = span
        return self._sdk

    def set_attribute(self, key: str, value: Any) -> None:
        self.sdk_span().set_attribute(key, value)

    def set_attributes(self, attributes: Any) -> None:
        self.sdk_span().set_attributes(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self.sdk_span().add_event(name, attributes, timestamp)

    def add_link(self, context: trace.SpanContext, attributes: Any = None) -> None:
        self.sdk_span().add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self.sdk_span().update_name(name)

    def set_status(self, status: Any, description: str | None = None) -> None:
        self.sdk_span().set_status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:
        self.sdk_span().record_exception(exception, attributes, timestamp, escaped)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._span_context})'


def span_attacher() -> tuple[Any, Any]:
    """``(attach(span, parent) -> token, detach(token))``: make a span current, and restore.

    The same as ``context.attach(trace.set_span_in_context(span, parent))`` and
    ``context.detach(token)``, in two direct ``ContextVar`` calls when the runtime context is
    OpenTelemetry's default one (``ContextVarsRuntimeContext``); the public calls otherwise
    (``OTEL_PYTHON_CONTEXT`` chose another). Unlike ``context.detach``, a failing detach
    raises: the middleware counts it as a telemetry error.
    """
    from opentelemetry import context as otel_context

    current = _current_context_var()
    if current is None:
        def attach_public(span: trace.Span, parent: Any) -> Any:
            return otel_context.attach(trace.set_span_in_context(span, parent))

        return attach_public, otel_context.detach
    context_class = otel_context.Context

    def attach(span: trace.Span, parent: Any) -> Any:
        base = parent if parent is not None else current.get()
        return current.set(context_class({**base, _SPAN_KEY: span}))

    return attach, current.reset
