"""ofsre.instrumentation: the library every platform service imports."""

from .catalog import Catalog, CatalogError, Endpoint, load_catalog

__all__ = ["Catalog", "CatalogError", "Endpoint", "load_catalog"]
