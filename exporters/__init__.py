"""ofsre.exporters: log shippers for Loki, Datadog and Elastic that never block the app
and never lose a record silently.

A platform service calls one function at startup::

    from ofsre.exporters import install_from_env

    install_from_env("payments")   # OFSRE_LOG_SHIPPER=none|loki|datadog|elastic

which attaches the chosen handler to the root logger (each handler documents its own
environment variables; the shared shipping ones are ``OFSRE_LOG_*``). The handlers are
ordinary ``logging.Handler`` classes, usable directly or from ``logging.config.dictConfig``:

- :class:`ofsre.exporters.loki.LokiHandler`
- :class:`ofsre.exporters.datadog.DatadogHandler`
- :class:`ofsre.exporters.elastic.ElasticHandler`

They share one core (``_core``): a bounded buffer filled by the logging call, a background
thread that batches, gzips, retries with backoff and ``Retry-After``, an optional disk spool,
and ``ofsre_log_*`` self-metrics. See ``exporters/README.md`` for the guarantees.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from ._options import LOG_SHIPPER

__all__ = ["install_from_env", "LokiHandler", "DatadogHandler", "ElasticHandler", "SHIPPERS", "ENV_SHIPPER"]

ENV_SHIPPER = LOG_SHIPPER.name
# Imported only when chosen: each backend pulls its own optional dependency (python-logging-loki,
# ecs-logging) and importing ofsre.exporters must stay cheap.
SHIPPERS = {
    "loki": ("ofsre.exporters.loki", "LokiHandler"),
    "datadog": ("ofsre.exporters.datadog", "DatadogHandler"),
    "elastic": ("ofsre.exporters.elastic", "ElasticHandler"),
}
_OFF = frozenset({"", "none", "off", "false", "0"})


def _handler_class(kind: str) -> type[logging.Handler]:
    module, name = SHIPPERS[kind]
    cls: type[logging.Handler] = getattr(importlib.import_module(module), name)
    return cls


def __getattr__(name: str) -> Any:  # lazy LokiHandler/DatadogHandler/ElasticHandler
    for kind, (_, attr) in SHIPPERS.items():
        if attr == name:
            return _handler_class(kind)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install_from_env(service: str, **kwargs: Any) -> logging.Handler | None:
    """Attach the shipper named by ``OFSRE_LOG_SHIPPER`` to the root logger and return it.

    ``none`` (or unset) installs nothing and returns None. Idempotent: if a handler of the
    chosen kind is already on the root logger, that one is returned. ``kwargs`` go to the
    handler's constructor (e.g. ``registry=``). Raises ``ValueError`` for an unknown shipper
    name or a shipper whose required settings (URL, API key) are missing: a misconfigured
    log pipeline should stop a deploy, not silently ship nothing.
    """
    kind = LOG_SHIPPER.from_env().lower()
    if kind in _OFF:
        return None
    if kind not in SHIPPERS:
        raise ValueError(f"{ENV_SHIPPER}={kind!r}: use none, {', '.join(SHIPPERS)}")
    cls = _handler_class(kind)
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, cls):
            return handler
    make: Callable[..., logging.Handler] = cls   # every shipper takes service= and its own options
    handler = make(service=service, **kwargs)
    root.addHandler(handler)
    return handler
