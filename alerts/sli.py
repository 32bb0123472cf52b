"""The service-level indicators as PromQL, and the recording rules that precompute them.

Everything is built from :mod:`ofsre.instrumentation.semconv` (metric names), the catalog
(tiers, p95 limits, the statuses governance leaves out of latency) and the
:class:`~ofsre.alerts.config.MonitoringConfig` (selectors, objectives). Names follow
``level:metric:operations``; the level ``service_route`` means the labels of :data:`GROUP`::

    service_route:ofsre_http_server_requests:rate5m                      every request
    service_route:ofsre_http_server_requests_counted:rate5m              calls that count (2xx, 5xx, 408, 422)
    service_route:ofsre_http_server_requests_errors:rate5m               errors (5xx, 408)
    service_route:ofsre_http_server_requests_errors:ratio_rate5m         errors / counted
    service_route:ofsre_http_server_request_duration_seconds_count:rate5m         calls measured for latency
    service_route:ofsre_http_server_request_duration_seconds_within_limit:rate5m  ... within its p95 limit
    service_route:ofsre_http_server_request_duration_seconds_within_limit:ratio_rate5m

at every window of :data:`WINDOWS`. Each window's ratio divides two *sums of counts* taken
over that window, never an average of shorter ratios (which would weigh a quiet hour like a
busy one). The latency SLI counts a call as good when it finished within its tier's limit:
the histogram bucket whose ``le`` is exactly that limit (``regulatory_buckets`` guarantees
it exists; the label is written as prometheus_client writes it, ``2.0`` and not ``2``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.utils import floatToGoString

from ofsre.instrumentation import semconv as sc
from ofsre.instrumentation.catalog import Catalog

from .config import MonitoringConfig

__all__ = ["GROUP", "WINDOWS", "MINUTE", "Records", "recording_groups", "fmt", "duration_seconds"]

GROUP = ("namespace", "service", "route", "method", "api", "tier")
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
MINUTE = "1m"  # the regulator's availability bucket (openfinance.md §2)
_LEVEL = "service_route"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def fmt(x: float) -> str:
    """A threshold as PromQL text: shortest exact-enough form (0.072, 14.4, 100)."""
    return f"{x:.10g}"


def duration_seconds(d: str) -> int:
    """Seconds of a simple Prometheus duration such as ``5m`` or ``3d``."""
    return int(d[:-1]) * _UNIT_SECONDS[d[-1]]


class Records:
    """Names of the recorded series (functions of the window)."""

    requests = staticmethod(lambda w: f"{_LEVEL}:{sc.HTTP_REQUESTS.name}:rate{w}")
    counted = staticmethod(lambda w: f"{_LEVEL}:{sc.HTTP_REQUESTS.name}_counted:rate{w}")
    errors = staticmethod(lambda w: f"{_LEVEL}:{sc.HTTP_REQUESTS.name}_errors:rate{w}")
    error_ratio = staticmethod(lambda w: f"{_LEVEL}:{sc.HTTP_REQUESTS.name}_errors:ratio_rate{w}")
    latency_total = staticmethod(lambda w: f"{_LEVEL}:{sc.HTTP_DURATION.name}_count:rate{w}")
    latency_good = staticmethod(lambda w: f"{_LEVEL}:{sc.HTTP_DURATION.name}_within_limit:rate{w}")
    latency_ratio = staticmethod(lambda w: f"{_LEVEL}:{sc.HTTP_DURATION.name}_within_limit:ratio_rate{w}")
    p95 = f"{_LEVEL}:{sc.HTTP_DURATION.name}:p95_rate5m"
    minute_available = f"{_LEVEL}:{sc.HTTP_REQUESTS.name}:available_minute"
    tier_limit = "tier:ofsre_http_p95_limit:seconds"
    tier_tpm = "tier:ofsre_http_tpm_limit:requests_per_minute"
    availability_objective = "ofsre:slo_availability_objective:ratio"
    latency_objective = "ofsre:slo_latency_objective:ratio"


def http_selector(cfg: MonitoringConfig, *extra: str) -> str:
    """Matchers of the services' HTTP series that the SLOs cover (catalog routes only)."""
    return cfg.selector("namespace", "services", 'api!=""', *extra)


def latency_excluded_statuses(catalog: Catalog) -> str:
    """Statuses governance leaves out of latency: 423, 429, 529 (openfinance.md §1), from the catalog."""
    eco = catalog.ecosystem
    return "|".join(str(eco[k]) for k in ("operational_limit_status", "tpm_status", "capacity_status"))


def slo_excluded_apis(catalog: Catalog) -> str:
    return "|".join(sorted({e.api for e in catalog if e.slo_excluded}))


def slo_selector(cfg: MonitoringConfig, *extra: str) -> str:
    excluded = slo_excluded_apis(cfg.catalog)
    return http_selector(cfg, *((f'api!~"{excluded}"',) if excluded else ()), *extra)


def tiers_by_limit(catalog: Catalog) -> list[tuple[str, list[str]]]:
    """``[(le label, [tier, …])]``: tiers grouped by their p95 limit, as bucket labels."""
    out: dict[str, list[str]] = {}
    for tier in sorted(catalog.tiers.values(), key=lambda t: (t.p95_ms, t.name)):
        out.setdefault(floatToGoString(tier.p95_seconds), []).append(tier.name)
    return list(out.items())


def _by(labels: Iterable[str] = GROUP) -> str:
    return "(" + ", ".join(labels) + ")"


def _sum_rate(series: str, selector: str, window: str, by: Iterable[str] = GROUP) -> str:
    return f"sum by {_by(by)} (rate({series}{{{selector}}}[{window}]))"


def within_limit_expr(cfg: MonitoringConfig, window: str) -> str:
    """Rate of latency-measured calls that finished within their tier's limit, one ``or`` term per limit."""
    excluded = latency_excluded_statuses(cfg.catalog)
    terms = []
    for le, tiers in tiers_by_limit(cfg.catalog):
        tier_m = f'tier="{tiers[0]}"' if len(tiers) == 1 else f'tier=~"{"|".join(tiers)}"'
        sel = slo_selector(cfg, tier_m, f'status!~"{excluded}"', f'le="{le}"')
        terms.append(_sum_rate(sc.HTTP_DURATION.name + "_bucket", sel, window))
    return "\n  or\n".join(terms)


def _record(name: str, expr: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


def window_rules(cfg: MonitoringConfig, window: str) -> list[dict]:
    """The recording rules of one window."""
    R = Records
    excluded = latency_excluded_statuses(cfg.catalog)
    rules = [
        _record(R.requests(window), _sum_rate(sc.HTTP_REQUESTS.series, http_selector(cfg), window)),
        _record(R.counted(window), _sum_rate(
            sc.HTTP_REQUESTS.series,
            slo_selector(cfg, f'status=~"{cfg.success_status_regex}|{cfg.error_status_regex}"'), window)),
        _record(R.errors(window), _sum_rate(
            sc.HTTP_REQUESTS.series, slo_selector(cfg, f'status=~"{cfg.error_status_regex}"'), window)),
        _record(R.error_ratio(window), f"{R.errors(window)}\n/\n{R.counted(window)}"),
    ]
    if window == MINUTE:
        return rules
    tier_m = 'tier!=""'
    rules += [
        _record(R.latency_total(window), _sum_rate(
            sc.HTTP_DURATION.name + "_count", slo_selector(cfg, tier_m, f'status!~"{excluded}"'), window)),
        _record(R.latency_good(window), within_limit_expr(cfg, window)),
        _record(R.latency_ratio(window), f"{R.latency_good(window)}\n/\n{R.latency_total(window)}"),
    ]
    return rules


def recording_groups(cfg: MonitoringConfig) -> list[dict]:
    """Rule groups ``ofsre-http-sli.rules`` (per window) and ``ofsre-slo-meta.rules`` (limits, objectives)."""
    R = Records
    excluded = latency_excluded_statuses(cfg.catalog)
    rules: list[dict] = []
    for window in (MINUTE, *WINDOWS):
        rules += window_rules(cfg, window)
    rules.append(_record(R.minute_available, (
        f"(1 - {R.error_ratio(MINUTE)}) >= bool {fmt(cfg.availability_minute_objective)}\n"
        f"and {R.counted(MINUTE)} > 0")))
    rules.append(_record(R.p95, (
        "histogram_quantile(0.95,\n  "
        + _sum_rate(sc.HTTP_DURATION.name + "_bucket", slo_selector(cfg, f'status!~"{excluded}"'), "5m",
                    (*GROUP, "le")) + "\n)")))
    meta = [_record(R.tier_limit, f"vector({fmt(t.p95_seconds)})", {"tier": t.name})
            for t in sorted(cfg.catalog.tiers.values(), key=lambda t: t.name)]
    meta += [_record(R.tier_tpm, f"vector({t.tpm})", {"tier": t.name})
             for t in sorted(cfg.catalog.tiers.values(), key=lambda t: t.name)]
    meta += [_record(R.availability_objective, f"vector({fmt(cfg.availability_objective)})"),
             _record(R.latency_objective, f"vector({fmt(cfg.latency_objective)})")]
    return [{"name": "ofsre-http-sli.rules", "rules": rules},
            {"name": "ofsre-slo-meta.rules", "rules": meta}]
