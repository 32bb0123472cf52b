"""Settings of the instrumentation: constructor argument first, then ``OFSRE_*``, then a default.

The variables are declared here through :mod:`ofsre.instrumentation.config` (the table of every
variable is ``ofsre config vars --markdown``, in the top-level README). The environment is read once,
when a middleware or a tracer provider is built, never per request. A malformed value is logged and
the default used: bad telemetry configuration must not stop a service from starting (a missing
service name does, because every series would be unattributable).

``OFSRE_SERVICE`` (``OTEL_SERVICE_NAME``), ``OFSRE_ENV``, ``OFSRE_VERSION``, ``OFSRE_COMMIT``,
``OFSRE_REQUIRE_INTERACTION_ID``; declared here and read through these declarations by their modules:
``OFSRE_CATALOG`` (``catalog.py``), ``OFSRE_LOG_LEVEL`` (``logs.py``), and ``OFSRE_DATA_DIR``, the lowest
layer of those that read it (the PCM store, the queue, the services and the runtime);
``OFSRE_GATEWAY_SECRET`` and ``OFSRE_ORG_ID`` for the same reason: the platform and the load tests
read them, and the load tests import ``ofsre.instrumentation``, never ``ofsre.platform``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import BOOLEAN, PATH, TEXT, Var, read

__all__ = ["Settings", "resolve_settings", "env_flag", "env_str", "UNKNOWN",
           "SERVICE", "ENV", "VERSION", "COMMIT", "REQUIRE_INTERACTION_ID", "CATALOG", "LOG_LEVEL",
           "DATA_DIR", "GATEWAY_SECRET", "ORG_ID"]

_LOGGER = "ofsre.instrumentation"
UNKNOWN = "unknown"  # version/commit label when neither argument nor environment gives one

SERVICE = Var("OFSRE_SERVICE", TEXT, "", also=("OTEL_SERVICE_NAME",), argument="service", logger=_LOGGER,
              reader="instrumentation, exporters, queue", shown="required (the queue: `ofsre`)",
              doc="service name: `service` label, `service.name`")
ENV = Var("OFSRE_ENV", TEXT, "", argument="env", logger=_LOGGER, reader="instrumentation, exporters",
          doc="deployment environment: `deployment.environment.name`, `env` field of logs")
VERSION = Var("OFSRE_VERSION", TEXT, UNKNOWN, argument="version", logger=_LOGGER,
              reader="instrumentation, exporters", doc="`version` of `ofsre_build_info`, `service.version`")
COMMIT = Var("OFSRE_COMMIT", TEXT, UNKNOWN, argument="commit", logger=_LOGGER, reader="instrumentation",
             doc="`commit` of `ofsre_build_info`")
REQUIRE_INTERACTION_ID = Var(
    "OFSRE_REQUIRE_INTERACTION_ID", BOOLEAN, False, argument="require_interaction_id", logger=_LOGGER,
    reader="instrumentation",
    doc="`on`: 400 for a request without a valid `x-fapi-interaction-id`, as the spec says "
        "(off by default so probes and curl work)")
# Read by catalog.py and logs.py through these declarations.
CATALOG = Var("OFSRE_CATALOG", PATH, None, argument="path", logger=_LOGGER, shown="bundled `catalog.toml`",
              reader="instrumentation (`load_catalog`), all services",
              doc="another endpoint catalog file: the gateway's TPM limits and timeout, accounts' monthly "
                  "operational limits")
LOG_LEVEL = Var("OFSRE_LOG_LEVEL", TEXT, "INFO", argument="level", logger=_LOGGER,
                reader="instrumentation (`configure_logging`)", doc="level of `configure_logging`")
# Read by the PCM store (exporters/pcm/store.py), the queue, the services and the runtime.
DATA_DIR = Var("OFSRE_DATA_DIR", PATH, Path("var"), reader="all services, queue, runtime, PCM store",
               doc="runtime state (the SQLite file; the runtime's `runtime.json`; the PCM store's "
                   "`pcm/reports.db`)")
# Read by the platform (settings.py, jws.py) and the load tests (journeys.py, signing.py).
GATEWAY_SECRET = Var("OFSRE_GATEWAY_SECRET", TEXT, None, reader="all services, loadtests",
                     doc="shared by the gateway (sends it as `x-ofsre-gateway-secret`) and the modules "
                         "(refuse API calls without it: 401); the local runtime makes one per start")
ORG_ID = Var("OFSRE_ORG_ID", TEXT, "ofsre-bank", reader="payments, loadtests",
             doc="the platform's organisationId: `iss` of its signed answers, and its JWKS file's name")


@dataclass(frozen=True, slots=True)
class Settings:
    service: str
    version: str
    commit: str
    env: str
    require_interaction_id: bool


def env_str(name: str, default: str = "") -> str:
    """``$name`` stripped, or ``default`` when unset or blank (any variable, ``OTEL_*`` and ``DD_*`` too)."""
    return str(read((name,), TEXT, default))


def env_flag(name: str, default: bool = False) -> bool:
    """A boolean variable in the one vocabulary of :mod:`.config`; a malformed value is logged once and
    gives ``default``."""
    return bool(read((name,), BOOLEAN, default, logger=_LOGGER))


def resolve_settings(service: str | None = None, *, version: str | None = None, commit: str | None = None,
                     env: str | None = None, require_interaction_id: bool | None = None) -> Settings:
    """Merge arguments with the environment. Raises ``ValueError`` when no service name is found."""
    name = SERVICE.get(service)
    if not name:
        raise ValueError("ofsre: a service name is required (argument, OFSRE_SERVICE or OTEL_SERVICE_NAME)")
    return Settings(
        service=name,
        version=VERSION.get(version),
        commit=COMMIT.get(commit),
        env=ENV.get(env),
        require_interaction_id=REQUIRE_INTERACTION_ID.get(require_interaction_id),
    )
