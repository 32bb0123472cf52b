"""Stable identities of the dashboards and of the panels alerts link to (no grafanalib import).

Alert rules (``ofsre.alerts``) put ``dashboard_url`` annotations on every alert; those URLs
need each dashboard's uid and the id of the panel that shows the alert's series. Both live
here so the rules never import grafanalib and the dashboards never renumber a linked panel:
a dashboard module gives the panels named in :data:`PANELS` exactly these ids, and a test
checks every alert's link points at a panel that exists.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DashboardRef", "DASHBOARDS", "PANELS", "panel_id", "dashboard_url"]


@dataclass(frozen=True)
class DashboardRef:
    key: str    # module name under ofsre.dashboards
    uid: str    # Grafana uid: stable, so a re-import overwrites instead of duplicating
    title: str

    @property
    def slug(self) -> str:
        return self.uid


DASHBOARDS: dict[str, DashboardRef] = {d.key: d for d in (
    DashboardRef("overview", "ofsre-overview", "ofsre / Platform overview"),
    DashboardRef("service", "ofsre-service", "ofsre / Service"),
    DashboardRef("compliance", "ofsre-compliance", "ofsre / Open Finance compliance"),
    DashboardRef("queues", "ofsre-queues", "ofsre / Queues and workers"),
    DashboardRef("autoscaling", "ofsre-autoscaling", "ofsre / Autoscaling"),
    DashboardRef("database", "ofsre-database", "ofsre / Database"),
    DashboardRef("telemetry", "ofsre-telemetry", "ofsre / Telemetry health"),
)}

# (dashboard key, panel key) -> panel id. Ids of other panels are assigned after these (from 100).
PANELS: dict[tuple[str, str], int] = {
    ("overview", "slo_status"): 1,
    ("overview", "availability_today"): 2,
    ("compliance", "p95_vs_limit"): 1,
    ("compliance", "available_minutes"): 2,
    ("compliance", "status_429_423_529"): 3,
    ("compliance", "tpm_used"): 4,
    ("compliance", "latency_budget"): 5,
    ("compliance", "pcm_deadline"): 6,
    ("compliance", "pcm_backlog"): 7,
    ("compliance", "pcm_dropped"): 8,
    ("autoscaling", "replicas"): 1,
    ("autoscaling", "conditions"): 2,
    ("queues", "latency"): 1,
    ("queues", "failures"): 2,
    ("telemetry", "shippers_dropped"): 1,
    ("telemetry", "telemetry_errors"): 2,
    ("telemetry", "targets_up"): 3,
}


def panel_id(dashboard: str, panel: str) -> int:
    return PANELS[(dashboard, panel)]


def dashboard_url(base: str, dashboard: str, panel: str | None = None, query: str = "") -> str:
    """``<base>/<uid>/<slug>?viewPanel=<id>&<query>`` (``base`` is Grafana's ``…/d``)."""
    ref = DASHBOARDS[dashboard]
    params = [f"viewPanel={panel_id(dashboard, panel)}"] if panel else []
    if query:
        params.append(query)
    return f"{base.rstrip('/')}/{ref.uid}/{ref.slug}" + ("?" + "&".join(params) if params else "")
