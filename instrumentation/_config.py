"""Settings of the instrumentation: constructor argument first, then ``OFSRE_*``, then a default.

The environment is read once, when a middleware or a tracer provider is built, never per
request. A malformed value is logged and the default used: bad telemetry configuration
must not stop a service from starting (a missing service name does, because every
series would be unattributable).

========================================  ==================================================
Variable                                  Meaning
========================================  ==================================================
``OFSRE_SERVICE``                         service name (``service`` label, ``service.name``);
                                          ``OTEL_SERVICE_NAME`` is the fallback
``OFSRE_ENV``                             deployment environment (``deployment.environment.name``)
``OFSRE_VERSION``                         version of the service (``ofsre_build_info``)
``OFSRE_COMMIT``                          commit of the build (``ofsre_build_info``)
``OFSRE_REQUIRE_INTERACTION_ID``          ``true``: answer 400 to requests without a valid
                                          ``x-fapi-interaction-id``
========================================  ==================================================
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

__all__ = ["Settings", "resolve_settings", "env_flag", "env_str", "UNKNOWN"]

_log = logging.getLogger("ofsre.instrumentation")

UNKNOWN = "unknown"  # version/commit label when neither argument nor environment gives one
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True, slots=True)
class Settings:
    service: str
    version: str
    commit: str
    env: str
    require_interaction_id: bool


def env_str(name: str, default: str = "") -> str:
    """``$name`` stripped, or ``default`` when unset or blank."""
    return os.environ.get(name, "").strip() or default


def env_flag(name: str, default: bool = False) -> bool:
    """A boolean environment variable; an unrecognised value logs a warning and gives ``default``."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    _log.warning("%s=%r is not a boolean (use true/false); using %s", name, raw, default)
    return default


def resolve_settings(service: str | None = None, *, version: str | None = None, commit: str | None = None,
                     env: str | None = None, require_interaction_id: bool | None = None) -> Settings:
    """Merge arguments with the environment. Raises ``ValueError`` when no service name is found."""
    name = service or env_str("OFSRE_SERVICE") or env_str("OTEL_SERVICE_NAME")
    if not name:
        raise ValueError("ofsre: a service name is required (argument, OFSRE_SERVICE or OTEL_SERVICE_NAME)")
    return Settings(
        service=name,
        version=version or env_str("OFSRE_VERSION", UNKNOWN),
        commit=commit or env_str("OFSRE_COMMIT", UNKNOWN),
        env=env or env_str("OFSRE_ENV"),
        require_interaction_id=(require_interaction_id if require_interaction_id is not None
                                else env_flag("OFSRE_REQUIRE_INTERACTION_ID")),
    )
