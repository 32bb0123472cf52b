"""ofsre.instrumentation: the library every platform service imports."""

from ._asgi import OfsreMiddleware, instrument_app
from .catalog import Catalog, CatalogError, Endpoint, load_catalog
from .httpclient import instrumented_client, instrumented_sync_client
from .tracing import setup_tracing

__all__ = ["Catalog", "CatalogError", "Endpoint", "load_catalog",
           "OfsreMiddleware", "instrument_app", "setup_tracing", "instrumented_client", "instrumented_sync_client"]
