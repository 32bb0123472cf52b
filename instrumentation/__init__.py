"""ofsre.instrumentation: the library every platform service imports.

    from ofsre.instrumentation import configure_logging, instrument_app
    configure_logging("consents")
    instrument_app(app, service="consents")

See instrumentation/README.md for the whole guide.
"""

from ._asgi import OfsreMiddleware, instrument_app
from .catalog import Catalog, CatalogError, Endpoint, load_catalog
from .db import instrument_engine
from .httpclient import instrumented_client, instrumented_sync_client
from .logs import ContextFilter, JsonFormatter, configure_logging, record_fields
from .messaging import QueueTelemetry, extract_context, inject_headers
from .redact import redact_text, redact_value
from .tracing import setup_tracing

__all__ = [
    "Catalog", "CatalogError", "Endpoint", "load_catalog",
    "OfsreMiddleware", "instrument_app", "setup_tracing", "instrumented_client", "instrumented_sync_client",
    "ContextFilter", "JsonFormatter", "configure_logging", "record_fields", "redact_text", "redact_value",
    "QueueTelemetry", "extract_context", "inject_headers", "instrument_engine",
]
