"""ofsre.dashboards: Grafana dashboards as code (grafanalib), one module per dashboard.

``overview``, ``service``, ``compliance``, ``queues``, ``autoscaling``, ``database`` and
``telemetry`` each define ``build(cfg) -> dict`` (Grafana dashboard JSON). Shared panel
builders and the JSON clean-up live in ``_lib``; dashboard uids and the panel ids alerts link
to in ``links`` (importable without grafanalib). ``ofsre dashboards build|publish`` is ``cli``::

    from ofsre.alerts.config import MonitoringConfig
    from ofsre.dashboards import build_all

    for name, dashboard in build_all(MonitoringConfig()).items():
        ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .links import DASHBOARDS

if TYPE_CHECKING:
    from ofsre.alerts.config import MonitoringConfig

__all__ = ["DASHBOARDS", "build_all", "build_one"]


def build_one(key: str, cfg: MonitoringConfig) -> dict:
    """One dashboard's JSON (imports grafanalib)."""
    if key not in DASHBOARDS:
        raise KeyError(f"unknown dashboard {key!r} (known: {', '.join(DASHBOARDS)})")
    return importlib.import_module(f"{__name__}.{key}").build(cfg)


def build_all(cfg: MonitoringConfig) -> dict[str, dict]:
    """Every dashboard, keyed by module name, in :data:`DASHBOARDS` order."""
    return {key: build_one(key, cfg) for key in DASHBOARDS}
