"""Telemetry for a process that serves no HTTP (a queue consumer, a scheduler, a batch job), in one call.

::

    from ofsre.instrumentation.worker import instrument_worker

    instrument_worker("payments-worker", version="1.4.2")   # once, at start-up
    log = logging.getLogger("payments.worker")
    log.info("pix settled")     # a JSON line, redacted, with trace/interaction ids when set

It gives the process what :func:`ofsre.instrumentation.instrument_app` gives an HTTP
service, minus the middleware:

* JSON logs on stdout with LGPD redaction and trace/span/interaction correlation
  (:func:`ofsre.instrumentation.logs.ensure_logging`), unless logging was already configured
  through ofsre or ``logs=False``;
* the global tracer provider (:func:`ofsre.instrumentation.tracing.setup_tracing`), so
  spans a consumer opens (:class:`ofsre.instrumentation.messaging.QueueTelemetry`) are real
  and their ids reach the log lines; skipped when ``tracer_provider`` is given;
* ``ofsre_build_info`` in ``registry`` (prometheus_client's global one by default).

The service name falls back to ``OFSRE_SERVICE`` / ``OTEL_SERVICE_NAME`` like everywhere in
ofsre. Idempotent: a second call changes nothing. Jobs run under an interaction id with
:func:`ofsre.instrumentation.context.use_interaction_id`.
"""

from __future__ import annotations

from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry

from . import semconv
from ._config import Settings, resolve_settings
from .logs import ensure_logging
from .metrics import count_telemetry_error, gauge

__all__ = ["instrument_worker"]


def instrument_worker(service: str | None = None, *, version: str | None = None, commit: str | None = None,
                      env: str | None = None, registry: CollectorRegistry | None = None,
                      tracer_provider: trace.TracerProvider | None = None,
                      logs: bool | None = None) -> Settings:
    """Set up logs, traces and build info for a process without HTTP; returns the resolved settings."""
    settings = resolve_settings(service, version=version, commit=commit, env=env)
    reg = registry if registry is not None else REGISTRY
    if logs is not False:
        try:
            ensure_logging(settings.service, env=settings.env, version=settings.version)
        except Exception:  # noqa: BLE001 - telemetry set-up must not stop the worker
            count_telemetry_error("logs", reg)
    if tracer_provider is None:
        from .tracing import setup_tracing

        setup_tracing(settings.service, version=settings.version)
    try:
        from ._asgi import _ofsre_version

        gauge(semconv.BUILD_INFO, reg).labels(service=settings.service, version=settings.version,
                                               commit=settings.commit, ofsre_version=_ofsre_version()).set(1)
    except Exception:  # noqa: BLE001
        count_telemetry_error("worker", reg)
    return settings
