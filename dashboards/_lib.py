"""Shared panel builders, variables, layout and the JSON clean-up every dashboard goes through.

Dashboard modules describe *what* to show with a few calls::

    from ofsre.dashboards._lib import Board, ts, stat, q

    def build(cfg):
        b = Board("service", cfg, variables=("namespace", "service"))
        b.add(ts("Request rate by route", [q(f'sum by (route) ({b.rate(HTTP)})', "{{route}}")], "reqps"))
        return b.dashboard()

and get, without repeating it: the ``datasource`` variable (every Prometheus query uses it),
``$__rate_interval`` in every ``rate()`` (:meth:`Board.rate`), a unit on every panel, links
to every other ofsre dashboard, a stable uid and panel ids (:mod:`ofsre.dashboards.links`
fixes the ids alerts link to), a left-to-right grid layout, and a description saying the
JSON is generated.

grafanalib 0.7.1 builds the objects; its JSON is not what Grafana 10's schema accepts
(``null`` for unset fields, legacy keys such as ``rows``/``style``/``span``, data sources as
strings). :func:`clean` post-processes it: drops ``null``, removes the legacy keys listed in
:data:`_LEGACY`, and writes the schema's shapes. The tests validate every dashboard against
the vendored Grafana schemas after this pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from grafanalib import core as G
from grafanalib._gen import DashboardEncoder

from ofsre._version import __version__
from ofsre.alerts.config import MonitoringConfig
from ofsre.instrumentation import semconv

from .links import DASHBOARDS, PANELS

__all__ = ["Board", "q", "ts", "stat", "table", "logs", "PROM", "LOKI", "to_json"]

PROM = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "${loki}"}
_WIDTH = 24
_FIRST_FREE_ID = 100

# Keys grafanalib writes that Grafana 10's dashboard schema does not have (legacy Graph-era fields).
_LEGACY = {
    "dashboard": {"__inputs", "hideControls", "rows", "sharedCrosshair", "style", "gnetId", "id"},
    "panel": {"cacheTimeout", "editable", "error", "height", "minSpan", "span", "thresholds", "repeat",
              "repeatDirection", "maxPerRow", "interval", "timeShift", "hideTimeOverride",
              # the old Table panel's styling (Grafana 10 keeps it under fieldConfig/options)
              "color", "columns", "fontSize", "mappings", "styles", "scroll", "sort", "showHeader"},
    "template": {"auto", "auto_count", "auto_min", "tagValuesQuery", "tagsQuery", "useTags"},
    "current": {"tags"},
    "target": {"metric", "query", "step", "target", "intervalFactor", "format", "hide", "instant",
               "interval"},
    "timepicker": {"nowDelay"},
}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


def q(expr: str, legend: str = "", *, instant: bool = False) -> Query:
    return Query(expr, legend, instant)


@dataclass
class PanelSpec:
    """A panel before layout: its grafanalib object factory and width/height on the 24-column grid."""

    make: Any  # callable(gridPos, id) -> grafanalib panel
    key: str | None
    width: int
    height: int


def _targets(queries: Sequence[Query], datasource: dict) -> list[G.Target]:
    out = []
    for i, query in enumerate(queries):
        t = G.Target(expr=query.expr, legendFormat=query.legend, refId=chr(ord("A") + i),
                     datasource=datasource, instant=query.instant)
        out.append(t)
    return out


def _steps(thresholds: Sequence[tuple[str, float | None]]) -> list[G.Threshold]:
    return [G.Threshold(color, i, value if value is not None else 0.0)
            for i, (color, value) in enumerate(thresholds)]


def ts(title: str, queries: Sequence[Query], unit: str, *, description: str = "", key: str | None = None,
       width: int = 12, height: int = 8, thresholds: Sequence[tuple[str, float | None]] = (),
       stack: bool = False, axis_label: str = "", min_zero: bool = True, step: bool = False) -> PanelSpec:
    """A time series panel; ``thresholds`` ``[(color, value)]`` are drawn as lines (the first value is
    the base)."""
    def make(grid: G.GridPos, pid: int) -> G.TimeSeries:
        return G.TimeSeries(
            title=title, description=description or None, dataSource=PROM, targets=_targets(queries, PROM),
            unit=unit, gridPos=grid, id=pid, axisLabel=axis_label, valueMin=0 if min_zero else None,
            thresholds=_steps(thresholds) if thresholds else [],
            thresholdsStyleMode="line" if thresholds else "off", stacking={"mode": "normal"} if stack else {},
            lineInterpolation="stepAfter" if step else "linear", legendDisplayMode="list",
            tooltipMode="multi", tooltipSort="desc")
    return PanelSpec(make, key, width, height)


def stat(title: str, queries: Sequence[Query], unit: str, *, description: str = "", key: str | None = None,
         width: int = 6, height: int = 6, thresholds: Sequence[tuple[str, float | None]] = (),
         time_from: str | None = None, decimals: int | None = None) -> PanelSpec:
    def make(grid: G.GridPos, pid: int) -> G.Stat:
        panel = G.Stat(title=title, description=description or None, dataSource=PROM,
                       targets=_targets(queries, PROM), format=unit, gridPos=grid, id=pid,
                       thresholds=_steps(thresholds) if thresholds else [G.Threshold("green", 0, 0.0)],
                       reduceCalc="lastNotNull", timeFrom=time_from, decimals=decimals)
        return panel
    return PanelSpec(make, key, width, height)


def table(title: str, queries: Sequence[Query], unit: str, *, description: str = "", key: str | None = None,
          width: int = 12, height: int = 8, thresholds: Sequence[tuple[str, float | None]] = (),
          time_from: str | None = None) -> PanelSpec:
    """An instant-query table (one row per series, the value column in ``unit``)."""
    instant = [Query(x.expr, x.legend, True) for x in queries]

    def make(grid: G.GridPos, pid: int) -> G.Table:
        return G.Table(title=title, description=description or None, dataSource=PROM,
                       targets=_targets(instant, PROM), unit=unit, gridPos=grid, id=pid, timeFrom=time_from,
                       thresholds=_steps(thresholds) if thresholds else [],
                       transformations=[{"id": "labelsToFields", "options": {}},
                                        {"id": "organize", "options": {"excludeByName": {"Time": True}}}])
    return PanelSpec(make, key, width, height)


def logs(title: str, expr: str, *, description: str = "", width: int = 24, height: int = 10) -> PanelSpec:
    """A Loki logs panel (no unit: it shows log lines, not numbers)."""
    def make(grid: G.GridPos, pid: int) -> G.Logs:
        return G.Logs(title=title, description=description or None, dataSource=LOKI,
                      targets=[G.Target(expr=expr, refId="A", datasource=LOKI)], gridPos=grid, id=pid,
                      showTime=True, wrapLogMessages=True, enableLogDetails=True)
    return PanelSpec(make, None, width, height)


class Board:
    """One dashboard being built: its variables, panels in order, and the shared selectors."""

    def __init__(self, key: str, cfg: MonitoringConfig, *, variables: Iterable[str] = ("namespace",),
                 description: str = "", loki: bool = False, time_from: str = "now-6h"):
        self.key, self.cfg, self.ref = key, cfg, DASHBOARDS[key]
        self.variables = tuple(variables)
        self.description = description
        self.loki = loki
        self.time_from = time_from
        self.panels: list[PanelSpec] = []

    # --- selectors ------------------------------------------------------------------------
    def sel(self, *extra: str) -> str:
        """Matchers for the services' series: namespace, service (when the board has those variables)."""
        parts = self._namespace()
        if self.cfg.services_selector:
            parts.append(self.cfg.services_selector)
        if "service" in self.variables:
            parts.append('service=~"$service"')
        return ", ".join(p for p in (*parts, *extra) if p)

    def ns(self, *extra: str) -> str:
        return ", ".join(p for p in (*self._namespace(), *extra) if p)

    def _namespace(self) -> list[str]:
        """The namespace matcher: the board's variable, or the configured namespace."""
        if "namespace" in self.variables:
            return ['namespace=~"$namespace"']
        return [self.cfg.selector("namespace")]

    def rate(self, series: str, *extra: str, selector: str | None = None) -> str:
        """``rate(series{…}[$__rate_interval])``: the only way a dashboard writes rate()."""
        return f"rate({series}{{{self.sel(*extra) if selector is None else selector}}}[$__rate_interval])"

    def workload(self) -> str:
        """Regex of the selected service's Deployment/HPA/job name."""
        return self.cfg.workload("$service")

    def pods(self) -> str:
        return self.cfg.pods("$service")

    # --- panels -------------------------------------------------------------------------------
    def add(self, *specs: PanelSpec) -> Board:
        self.panels.extend(specs)
        return self

    def _layout(self) -> list[Any]:
        x = y = row_h = 0
        next_id = _FIRST_FREE_ID
        out = []
        for spec in self.panels:
            if x + spec.width > _WIDTH:
                x, y, row_h = 0, y + row_h, 0
            if spec.key is not None:
                pid = PANELS[(self.key, spec.key)]
            else:
                pid, next_id = next_id, next_id + 1
            out.append(spec.make(G.GridPos(h=spec.height, w=spec.width, x=x, y=y), pid))
            x += spec.width
            row_h = max(row_h, spec.height)
        return out

    def _templates(self) -> list[G.Template]:
        cfg = self.cfg
        out = [G.Template(name="datasource", label="Prometheus", type="datasource", query="prometheus",
                          default=cfg.datasource, hide=0)]
        if self.loki:
            out.append(G.Template(name="loki", label="Loki", type="datasource", query="loki",
                                  default=cfg.loki_datasource, hide=0))
        build_info = semconv.BUILD_INFO.name  # every ofsre service exposes it: the variables list from it
        for name in self.variables:
            if name == "namespace":
                out.append(G.Template(name="namespace", label="Namespace", dataSource=PROM,
                                      query=f"label_values({build_info}, namespace)",
                                      default=cfg.namespace or "", refresh=2, sort=1))
            elif name == "service":
                out.append(G.Template(name="service", label="Service", dataSource=PROM,
                                      query=f'label_values({build_info}{{namespace=~"$namespace"}}, service)',
                                      includeAll=True, multi=True, refresh=2, sort=1))
            elif name == "queue":
                out.append(G.Template(name="queue", label="Queue", dataSource=PROM,
                                      query=f"label_values({semconv.QUEUE_PUBLISHED.series}"
                                            '{namespace=~"$namespace"}, queue)',
                                      includeAll=True, multi=True, refresh=2, sort=1))
            elif name == "api":
                out.append(G.Template(name="api", label="API family", dataSource=PROM,
                                      query=f"label_values({semconv.HTTP_REQUESTS.series}"
                                            '{namespace=~"$namespace", api!=""}, api)',
                                      includeAll=True, multi=True, refresh=2, sort=1))
            elif name == "level":
                out.append(G.Template(name="level", label="Log level", type="custom",
                                      query="error,warning,info,debug",
                                      includeAll=True, multi=True, default="$__all"))
            else:
                raise ValueError(f"{self.key}: unknown variable {name!r}")
        return out

    def _links(self) -> list[G.DashboardLink]:
        return [G.DashboardLink(title=ref.title.split(" / ", 1)[-1], uri=f"/d/{ref.uid}/{ref.slug}",
                                type="link",
                                keepTime=True, includeVars=False, asDropdown=False, icon="dashboard",
                                tooltip=f"Open {ref.title}")
                for key, ref in DASHBOARDS.items() if key != self.key]

    def dashboard(self) -> dict:
        description = (f"Generated by ofsre {__version__} from the endpoint catalog and ofsre.alerts.config "
                       f"— do not edit. {self.description}").strip()
        d = G.Dashboard(title=self.ref.title, uid=self.ref.uid, description=description, tags=["ofsre"],
                        timezone="utc", panels=self._layout(),
                        templating=G.Templating(list=self._templates()),
                        links=self._links(), time=G.Time(self.time_from, "now"), refresh="30s",
                        editable=False, graphTooltip=1)
        return clean(json.loads(json.dumps(d.to_json_data(), cls=DashboardEncoder)))


# ----------------------------------------------------------------------------- JSON clean-up

def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _strip(obj: dict, kind: str) -> dict:
    return {k: v for k, v in obj.items() if k not in _LEGACY[kind]}


def _clean_panel(p: dict) -> dict:
    p = _strip(p, "panel")
    if p.get("timeFrom") is None:
        p.pop("timeFrom", None)
    p["targets"] = [_clean_target(t) for t in p.get("targets", [])]
    fc = p.setdefault("fieldConfig", {"defaults": {}, "overrides": []})
    fc.setdefault("overrides", [])
    defaults = fc.setdefault("defaults", {})
    th = defaults.get("thresholds")
    if th is not None:
        # Grafana writes the base step's value as null (it means -Infinity); grafanalib writes "null" as a
        # string plus Graph-era keys (op, yaxis, line, index).
        steps = [{"color": st["color"], "value": None if i == 0 else float(st["value"])}
                 for i, st in enumerate(th.get("steps", []))]
        defaults["thresholds"] = {"mode": th.get("mode", "absolute"),
                                  "steps": steps or [{"color": "green", "value": None}]}
    if p["type"] == "timeseries":
        custom = defaults.get("custom", {})
        if not custom.get("stacking"):
            custom.pop("stacking", None)
        opts = p.get("options", {})
        legend = opts.get("legend", {})
        legend.setdefault("showLegend", True)
        legend.setdefault("calcs", [])
        legend.pop("isVisible", None)
    if p["type"] == "table" and not defaults.get("custom"):
        defaults.pop("custom", None)
    if p["type"] == "logs":
        fc["defaults"] = {}
    return p


def _clean_target(t: dict) -> dict:
    t = _strip(t, "target")
    if t.get("legendFormat") == "":
        t.pop("legendFormat")
    return t


def _clean_template(t: dict) -> dict:
    t = _strip(t, "template")
    if "current" in t:
        t["current"] = _strip(t["current"], "current")
        if t["current"].get("text") is None:
            t.pop("current")
    if isinstance(t.get("datasource"), str):
        t["datasource"] = PROM
    if t["type"] in ("datasource", "custom"):
        t.pop("datasource", None)
    return t


def clean(d: dict) -> dict:
    """grafanalib's dashboard JSON made valid for Grafana 10's schema (see the module docstring)."""
    d = _drop_none(d)
    d = _strip(d, "dashboard")
    d["panels"] = [_clean_panel(p) for p in d.get("panels", [])]
    d["templating"] = {"list": [_clean_template(t) for t in d.get("templating", {}).get("list", [])]}
    d["timepicker"] = _strip(d.get("timepicker", {}), "timepicker")
    d["schemaVersion"] = 38  # Grafana 10.2
    d.setdefault("annotations", {"list": []})
    d["version"] = 1
    return d


def to_json(d: dict) -> str:
    """Deterministic text: sorted keys, two-space indent, a final newline."""
    return json.dumps(d, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
