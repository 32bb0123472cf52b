"""The one configuration object of ofsre's dashboards and rules (the monitoring mixins' ``_config``).

Dashboards (``ofsre.dashboards``) and rules (``ofsre.alerts``) are generated from the endpoint
catalog, the metric specs in :mod:`ofsre.instrumentation.semconv` and this object. A
deployment adapts them by overriding a few keys here, never by editing the generated files::

    from ofsre.alerts.config import MonitoringConfig, load_config

    cfg = MonitoringConfig()                       # defaults: the local runtime and the Helm chart
    cfg = load_config("monitoring.toml")           # the same, with a TOML file's keys on top
    cfg.selector("namespace")                      # 'namespace="ofsre"'

The TOML file has the field names below at the top level, plus an ``[alert_for]`` table that
overrides one alert's ``for`` duration by name::

    namespace = "openfinance"
    kube_state_metrics_selector = 'job="kube-state-metrics", cluster="prod"'
    dashboard_base_url = "https://grafana.example/d"
    runbook_base_url = "https://git.example/ofsre/blob/main/alerts/runbooks"
    availability_objective = 0.999

    [alert_for]
    OfsreHPAAtMaxReplicas = "30m"

An unknown key, a value of the wrong type or out of range raises :class:`ConfigError`
naming the key (and the file), so a typo never silently falls back to a default.

Defaults worth knowing: the SLO objectives come from the catalog's ``[slo]``; the workload
regex ``(?:.+-)?{service}`` matches both the local runtime's names (``payments``, pod
``payments-1``) and the chart's (``<release>-payments``, pod ``<release>-payments-<hash>``).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ofsre.instrumentation.catalog import Catalog, load_catalog

__all__ = ["MonitoringConfig", "ConfigError", "load_config", "BurnWindow", "DURATION_RE"]

DURATION_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")  # Prometheus' duration syntax


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it."""


@dataclass(frozen=True)
class BurnWindow:
    """One multiwindow burn-rate alert (SRE workbook, "Alerting on SLOs", table 5-8)."""

    long: str
    short: str
    factor: float
    severity: str


# Page on 2 % of a 30-day budget spent in 1 h or 5 % in 6 h; ticket on 10 % in 1 d or 3 d.
DEFAULT_BURN_WINDOWS = (
    BurnWindow("1h", "5m", 14.4, "critical"),
    BurnWindow("6h", "30m", 6.0, "critical"),
    BurnWindow("1d", "2h", 3.0, "warning"),
    BurnWindow("3d", "6h", 1.0, "warning"),
)


def _catalog_default(name: str):
    return field(default_factory=lambda: getattr(load_catalog().slo, name))


@dataclass(frozen=True)
class MonitoringConfig:
    """Selectors, objectives and links shared by every dashboard and rule (see the module docstring)."""

    # --- where the platform runs and how its series are labelled
    namespace: str = "ofsre"                 # namespace label of every series ("" = any namespace)
    # extra matchers for the services' own series, e.g. 'cluster="prod"'
    services_selector: str = ""
    kube_state_metrics_selector: str = 'job="kube-state-metrics"'
    cadvisor_selector: str = 'job="kubelet", metrics_path="/metrics/cadvisor"'
    # Deployment/HPA names and the scrape `job` of a service: {service} is replaced by the service name.
    workload_regex: str = "(?:.+-)?{service}"
    services: tuple[str, ...] = ("gateway", "consents", "accounts", "payments", "worker")
    team: str = "sre"                        # `team` label on every alert (Alertmanager routes on it)
    # --- SLOs (defaults: the catalog's [slo])
    availability_objective: float = _catalog_default("availability_objective")
    latency_objective: float = _catalog_default("latency_objective")
    # A minute is available when at least this share of its counted calls succeed (openfinance.md §2:
    # 95 %, the same figure as the daily target, which is where the default comes from).
    availability_minute_objective: float = _catalog_default("availability_daily_objective")
    availability_daily_objective: float = _catalog_default("availability_daily_objective")
    burn_windows: tuple[BurnWindow, ...] = DEFAULT_BURN_WINDOWS
    # Minimum-traffic guard: an SLO alert needs at least this many counted calls in its long window.
    min_requests: int = 100
    # Statuses that count for availability (openfinance.md §2): success 2xx/422, error 5xx/408.
    success_status_regex: str = "2..|422"
    error_status_regex: str = "5..|408"
    # --- thresholds of the cause alerts
    tpm_429_burst: int = 20                  # 429 answers per 5 minutes per route that make a burst
    queue_latency_p95_seconds: float = 30.0
    queue_failure_ratio: float = 0.05
    # --- links and data sources (placeholders: set both for a deployment)
    dashboard_base_url: str = "http://localhost:3000/d"
    runbook_base_url: str = "https://github.com/ofsre/ofsre/blob/main/alerts/runbooks"
    datasource: str = "Prometheus"           # the default of each dashboard's datasource variable
    loki_datasource: str = "Loki"
    alert_for: Mapping[str, str] = field(default_factory=dict)  # alert name -> `for` override

    def __post_init__(self) -> None:
        for name in ("availability_objective", "latency_objective", "availability_minute_objective",
                     "availability_daily_objective", "queue_failure_ratio"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"{name}: must be between 0 and 1 (exclusive), not {value!r}")
        for name in ("min_requests", "tpm_429_burst"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must not be negative, not {getattr(self, name)!r}")
        if "{service}" not in self.workload_regex:
            raise ConfigError("workload_regex: must contain '{service}'")
        for alert, duration in self.alert_for.items():
            if not isinstance(duration, str) or not DURATION_RE.match(duration):
                raise ConfigError(f"alert_for.{alert}: {duration!r} is not a Prometheus duration "
                                  "such as '5m'")
        for w in self.burn_windows:
            for d in (w.long, w.short):
                if not DURATION_RE.match(d):
                    raise ConfigError(f"burn_windows: {d!r} is not a Prometheus duration")
            if w.severity not in ("critical", "warning", "info"):
                raise ConfigError(f"burn_windows: severity {w.severity!r} is not critical, warning or info")
            if w.factor <= 0:
                raise ConfigError(f"burn_windows: factor must be positive, not {w.factor!r}")
        if not self.services:
            raise ConfigError("services: at least one service is needed")

    # ----------------------------------------------------------------- selectors

    def selector(self, *parts: str) -> str:
        """Label matchers joined with commas; ``"namespace"`` stands for the namespace matcher and
        ``"services"`` for :attr:`services_selector`; empty parts are dropped."""
        out = []
        for p in parts:
            if p == "namespace":
                p = f'namespace="{self.namespace}"' if self.namespace else ""
            elif p == "services":
                p = self.services_selector
            if p:
                out.append(p)
        return ", ".join(out)

    def workload(self, service: str) -> str:
        """Regex of a service's Deployment/HPA name and scrape job."""
        return self.workload_regex.format(service=service)

    def pods(self, service: str) -> str:
        """Regex of a service's pod names."""
        return self.workload(service) + "-.+"

    @property
    def workloads(self) -> str:
        """Regex matching the workload of any service."""
        return self.workload_regex.format(service="(?:" + "|".join(self.services) + ")")

    @property
    def catalog(self) -> Catalog:
        return load_catalog()


def _coerce(f: dataclasses.Field, value: Any, where: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
    if f.name == "burn_windows":
        if not isinstance(value, list):
            raise ConfigError(f"{where}: a list of {{long, short, factor, severity}} tables")
        out = []
        for i, w in enumerate(value):
            try:
                out.append(BurnWindow(str(w["long"]), str(w["short"]), float(w["factor"]),
                                      str(w["severity"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{where}[{i}]: needs long, short, factor and severity ({exc})") from None
        return tuple(out)
    if f.name == "alert_for":
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: a table of alert name = duration")
        return dict(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: a list of strings, not {value!r}")
        return tuple(value)
    if isinstance(default, bool) or not isinstance(value, type(default)):
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected {type(default).__name__}, not {type(value).__name__} {value!r}")
    return value


def config_from_dict(data: Mapping[str, Any], source: str = "<config>") -> MonitoringConfig:
    """A :class:`MonitoringConfig` with ``data``'s keys over the defaults; :class:`ConfigError` on a
    bad key."""
    fields = {f.name: f for f in dataclasses.fields(MonitoringConfig)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(sorted(fields))})")
        kwargs[key] = _coerce(fields[key], value, f"{source}: {key}")
    try:
        return MonitoringConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path | None = None) -> MonitoringConfig:
    """The defaults, or the defaults with a TOML file's keys on top."""
    if path is None:
        return MonitoringConfig()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(data, str(path))
