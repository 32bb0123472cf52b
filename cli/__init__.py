"""ofsre: the observability and SRE kit for an Open Finance Brasil platform.

The distribution maps the repository's top-level folders into this namespace:
``ofsre.instrumentation`` (instrumentation/), ``ofsre.exporters`` (exporters/),
``ofsre.dashboards``, ``ofsre.alerts``, ``ofsre.loadtests`` and ``ofsre.platform``
(platform/services/). Importing ``ofsre`` imports none of them.
"""

from ._version import __version__

__all__ = ("__version__",)
