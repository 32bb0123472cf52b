"""ofsre's alerting rules, one small function per component, and the pass that links them.

Each ``*_alerts(cfg)`` function returns :class:`Alert` objects for one component (SLOs, HTTP
symptoms, autoscaling, queues, telemetry). :func:`alert_groups` turns them into Prometheus
rule groups named ``ofsre-<component>.alerts`` and adds, in one pass, what every alert must
carry: ``severity`` and ``team`` labels, a static ``summary``, a templated ``description``,
``runbook_url`` (``<runbook_base_url>/<AlertName>.md``; the file must exist in
``alerts/runbooks/``) and ``dashboard_url`` (the panel that shows the alert's series).

To add an alert (as :func:`pcm_alerts` was added, for PCM reporting):
write a function returning ``Alert(...)`` objects, add it to :data:`COMPONENTS`, write its
runbook, and a promtool test case in ``tests/alerts/``; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ofsre.dashboards.links import dashboard_url
from ofsre.exporters.pcm.metrics import AT_RISK_S
from ofsre.instrumentation import semconv as sc

from .config import ConfigError, MonitoringConfig
from .sli import MINUTE, Records, duration_seconds, fmt, http_selector

__all__ = ["Alert", "COMPONENTS", "alert_groups", "all_alerts", "RUNBOOKS", "SEVERITIES"]

RUNBOOKS = Path(__file__).with_name("runbooks")
SEVERITIES = ("critical", "warning", "info")
_NS_LINK = "var-namespace={{ $labels.namespace }}"


@dataclass(frozen=True)
class Alert:
    """One alerting rule before the linking pass. ``dashboard`` is ``(dashboard key, panel key)``."""

    name: str
    expr: str
    severity: str
    summary: str
    description: str
    dashboard: tuple[str, str]
    for_: str = "0s"
    keep_firing_for: str | None = None  # against flapping: keep firing this long after the condition clears
    labels: dict[str, str] = field(default_factory=dict)
    link_query: str = _NS_LINK

    def __post_init__(self) -> None:
        if not self.name.startswith("Ofsre") or not self.name[5:6].isupper():
            raise ValueError(f"{self.name}: alert names are CamelCase with the Ofsre prefix")
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.name}: severity must be one of {SEVERITIES}")
        if "{{" in self.summary:
            raise ValueError(f"{self.name}: the summary is static; templates go in the description")


def _endpoint() -> str:
    return "{{ $labels.service }} {{ $labels.method }} {{ $labels.route }}"


# ----------------------------------------------------------------------------- SLOs

def slo_alerts(cfg: MonitoringConfig) -> list[Alert]:
    """Multiwindow multi-burn-rate alerts for availability and latency, with a minimum-traffic guard."""
    R = Records
    out = []
    for w in cfg.burn_windows:
        guard_seconds = duration_seconds(w.long)
        labels = {"long_window": w.long, "short_window": w.short}
        thr = fmt(w.factor * (1 - cfg.availability_objective))
        out.append(Alert(
            "OfsreAvailabilityBudgetBurn",
            f"{R.error_ratio(w.long)} > {thr}\n"
            f"and {R.error_ratio(w.short)} > {thr}\n"
            f"and {R.counted(w.long)} * {guard_seconds} >= {cfg.min_requests}",
            w.severity, "An endpoint is spending its availability error budget too fast.",
            f"{_endpoint()}: {{{{ $value | humanizePercentage }}}} of the calls that count failed over "
            f"the last {w.long} (and over {w.short}), {fmt(w.factor)}x the rate the "
            f"{fmt(100 * cfg.availability_objective)}% objective allows.",
            ("overview", "slo_status"), labels=labels))
        thr = fmt(w.factor * (1 - cfg.latency_objective))
        out.append(Alert(
            "OfsreLatencyBudgetBurn",
            f"(1 - {R.latency_ratio(w.long)}) > {thr}\n"
            f"and (1 - {R.latency_ratio(w.short)}) > {thr}\n"
            f"and {R.latency_total(w.long)} * {guard_seconds} >= {cfg.min_requests}",
            w.severity, "An endpoint is spending its latency error budget too fast.",
            f"{_endpoint()} (tier {{{{ $labels.tier }}}}): {{{{ $value | humanizePercentage }}}} of the "
            f"calls took longer than the tier's limit over the last {w.long} (and over {w.short}), "
            f"{fmt(w.factor)}x the rate the {fmt(100 * cfg.latency_objective)}% objective allows.",
            ("compliance", "latency_budget"), labels=labels))
    return out


# ----------------------------------------------------------------------------- HTTP symptoms

def http_alerts(cfg: MonitoringConfig) -> list[Alert]:
    R = Records
    eco = cfg.catalog.ecosystem
    requests = sc.HTTP_REQUESTS.series
    by_service = "namespace, service"
    capacity = http_selector(cfg, f'status="{eco["capacity_status"]}"')
    tpm = http_selector(cfg, f'status="{eco["tpm_status"]}"')
    return [
        Alert("OfsreEndpointMinuteUnavailable",
              f"(1 - {R.error_ratio(MINUTE)}) < {fmt(cfg.availability_minute_objective)}\n"
              f"and {R.counted(MINUTE)} > 0",
              "warning", "An endpoint had minutes that count as unavailable for the regulator.",
              f"{_endpoint()}: only {{{{ $value | humanizePercentage }}}} of the calls that count "
              f"succeeded in the last minute (a minute is available at "
              f"{fmt(100 * cfg.availability_minute_objective)}%).",
              ("compliance", "available_minutes"), for_="2m", keep_firing_for="5m"),
        Alert("OfsreLatencyP95AboveTierLimit",
              f"{R.p95} > on (tier) group_left() {R.tier_limit}",
              "warning", "An endpoint's p95 latency is above its regulatory tier limit.",
              f"{_endpoint()} (tier {{{{ $labels.tier }}}}): p95 over 5 minutes is "
              f"{{{{ $value | humanizeDuration }}}}, above the tier's limit.",
              ("compliance", "p95_vs_limit"), for_="10m"),
        Alert("OfsreCapacityExceeded",
              f"sum by ({by_service}) (rate({requests}{{{capacity}}}[5m])) > 0",
              "warning",
              f"The platform answers {eco['capacity_status']}: calls beyond its global capacity are refused.",
              f"{{{{ $labels.service }}}} answered {{{{ printf \"%.2f\" $value }}}} calls/s with "
              f"{eco['capacity_status']} over the last 5 minutes (the ecosystem expects at least "
              f"{eco['min_capacity_tps']} TPS).",
              ("compliance", "status_429_423_529"), for_="1m"),
        Alert("OfsreTPMLimitBurst",
              f"sum by ({by_service}, route, method) (increase({requests}{{{tpm}}}[5m])) "
              f"> {cfg.tpm_429_burst}",
              "info", f"Clients are being refused with {eco['tpm_status']} for exceeding their TPM limit.",
              f"{_endpoint()} answered {{{{ $value | humanize }}}} calls with {eco['tpm_status']} in the "
              f"last 5 minutes.",
              ("compliance", "tpm_used")),
    ]


# ----------------------------------------------------------------------------- autoscaling

def autoscaling_alerts(cfg: MonitoringConfig) -> list[Alert]:
    ksm = cfg.selector(cfg.kube_state_metrics_selector, "namespace")
    hpa = f'{ksm}, horizontalpodautoscaler=~"{cfg.workloads}"'
    dep = f'{ksm}, deployment=~"{cfg.workloads}"'
    desired = (f'label_replace({sc.KUBE_HPA_DESIRED_REPLICAS.name}{{{hpa}}}, "deployment", "$1", '
               f'"horizontalpodautoscaler", "(.*)")')
    available = f"{sc.KUBE_DEPLOYMENT_REPLICAS_AVAILABLE.name}{{{dep}}}"
    return [
        Alert("OfsreHPAAtMaxReplicas",
              f"{sc.KUBE_HPA_CURRENT_REPLICAS.name}{{{hpa}}}\n>= {sc.KUBE_HPA_MAX_REPLICAS.name}{{{hpa}}}",
              "warning", "An autoscaler has been running at its maximum replicas.",
              "HPA {{ $labels.namespace }}/{{ $labels.horizontalpodautoscaler }} has run at its maximum of "
              "{{ $value }} replicas for 15 minutes; it cannot add capacity.",
              ("autoscaling", "replicas"), for_="15m"),
        Alert("OfsreHPAScalingInactive",
              f'{sc.KUBE_HPA_CONDITION.name}{{{hpa}, condition="ScalingActive", status="false"}} == 1',
              "warning", "An autoscaler cannot compute its desired replicas (ScalingActive is false).",
              "HPA {{ $labels.namespace }}/{{ $labels.horizontalpodautoscaler }} reports "
              "ScalingActive=false: it cannot read its metrics and does not scale.",
              ("autoscaling", "conditions"), for_="10m"),
        Alert("OfsreReplicasUnavailable",
              # autoscaled: fewer available than the HPA wants; not autoscaled: none available
              f"{desired}\n> on (namespace, deployment) group_left()\n{available}\n"
              f"or ({available} == 0 unless on (namespace, deployment) {desired})",
              "warning", "A deployment has fewer available replicas than it needs.",
              "Deployment {{ $labels.namespace }}/{{ $labels.deployment }} has had fewer available "
              "replicas than needed for 10 minutes (value {{ $value }}: the replicas its autoscaler "
              "wants, 0 if none is available).",
              ("autoscaling", "replicas"), for_="10m"),
    ]


# ----------------------------------------------------------------------------- queues

def queue_alerts(cfg: MonitoringConfig) -> list[Alert]:
    sel = cfg.selector("namespace", "services")
    by = "namespace, service, queue"
    failed, consumed = sc.QUEUE_FAILED.series, sc.QUEUE_CONSUMED.series
    retried = cfg.selector(sel, 'outcome!="dead_letter"')
    dead = cfg.selector(sel, 'outcome="dead_letter"')
    return [
        Alert("OfsreQueueLatencyHigh",
              f"histogram_quantile(0.95, sum by ({by}, le) "
              f"(rate({sc.QUEUE_LATENCY.name}_bucket{{{sel}}}[10m])))\n"
              f"> {fmt(cfg.queue_latency_p95_seconds)}",
              "warning", "Messages wait too long between publish and processing.",
              "Queue {{ $labels.queue }} ({{ $labels.service }}): p95 publish-to-consume latency is "
              "{{ $value | humanizeDuration }} over 10 minutes.",
              ("queues", "latency"), for_="10m"),
        Alert("OfsreQueueFailuresHigh",
              f"sum by ({by}) (rate({failed}{{{retried}}}[10m]))\n"
              f"/ (sum by ({by}) (rate({consumed}{{{sel}}}[10m])) "
              f"+ sum by ({by}) (rate({failed}{{{sel}}}[10m])))\n"
              f"> {fmt(cfg.queue_failure_ratio)}",
              "warning", "A growing share of queue messages fails to process.",
              "Queue {{ $labels.queue }} ({{ $labels.service }}): {{ $value | humanizePercentage }} of "
              "the messages handled in the last 10 minutes failed.",
              ("queues", "failures"), for_="10m"),
        Alert("OfsreQueueDeadLetters",
              f"sum by ({by}) (increase({failed}{{{dead}}}[10m])) > 0",
              "warning", "Messages were moved to the dead-letter queue.",
              "Queue {{ $labels.queue }} ({{ $labels.service }}): {{ $value | humanize }} messages "
              "dead-lettered in the last 10 minutes; they will not be retried.",
              ("queues", "failures")),
    ]


# ----------------------------------------------------------------------------- telemetry

def telemetry_alerts(cfg: MonitoringConfig) -> list[Alert]:
    sel = cfg.selector("namespace", "services")
    return [
        Alert("OfsreLogShipperDropping",
              f"sum by (namespace, job, backend, reason) "
              f"(increase({sc.LOG_RECORDS_DROPPED.series}{{{sel}}}[10m])) > 0",
              "warning", "A log shipper is dropping log records.",
              "{{ $labels.job }}: the {{ $labels.backend }} shipper dropped {{ $value | humanize }} records "
              "({{ $labels.reason }}) in the last 10 minutes.",
              ("telemetry", "shippers_dropped")),
        Alert("OfsreTelemetryErrors",
              f"sum by (namespace, job, component) "
              f"(increase({sc.TELEMETRY_ERRORS.series}{{{sel}}}[10m])) > 0",
              "info", "Telemetry code swallowed errors (the application was not affected).",
              "{{ $labels.job }}: {{ $value | humanize }} telemetry errors in {{ $labels.component }} in "
              "the last 10 minutes.",
              ("telemetry", "telemetry_errors")),
        Alert("OfsreScrapeTargetDown",
              f'up{{{cfg.selector("namespace", "job=~" + chr(34) + cfg.workloads + chr(34))}}} == 0\n'
              f"or up{{{cfg.kube_state_metrics_selector}}} == 0",
              "warning", "Prometheus cannot scrape a target: its metrics and alerts are blind.",
              "{{ $labels.job }} target {{ $labels.instance }} has been down for 5 minutes.",
              ("telemetry", "targets_up"), for_="5m"),
    ]


# ----------------------------------------------------------------------------- PCM reporting

def pcm_alerts(cfg: MonitoringConfig) -> list[Alert]:
    """Regulatory reporting (openfinance.md §5): a day's reports are due by 08:00 Brasília the next day."""
    sel = cfg.selector("namespace", "services")
    return [
        Alert("OfsrePcmDeadlineAtRisk",
              f"min by (namespace) ({sc.PCM_DEADLINE_SECONDS_LEFT.name}{{{sel}}}) < {AT_RISK_S}\n"
              f"and on (namespace) sum by (namespace) ({sc.PCM_BACKLOG.name}{{{sel}}}"
              f" or {sc.PCM_HELD_REPORTS.name}{{{sel}}}) > 0",
              "critical", "PCM reports may miss their 08:00 (Brasília) delivery deadline.",
              "{{ $value | humanizeDuration }} left before the deadline of the oldest undelivered PCM "
              "report, and reports are still waiting (ofsre pcm status).",
              ("compliance", "pcm_deadline")),
        Alert("OfsrePcmReportsHeld",
              f"max by (namespace) ({sc.PCM_HELD_REPORTS.name}{{{sel}}}) > 0",
              "warning", "The PCM refused a batch of reports for good; they are held.",
              "{{ $value }} PCM reports are held after a 400/401/403/406/415 "
              "(ofsre pcm results --status HELD); fix the cause, then ofsre pcm requeue.",
              ("compliance", "pcm_backlog"), for_="5m"),
        Alert("OfsrePcmReportsDropped",
              f"sum by (namespace, job, reason) "
              f"(increase({sc.PCM_REPORTS_DROPPED.series}{{{sel}}}[10m])) > 0",
              "critical", "PCM reports were lost before reaching the local store.",
              "{{ $labels.job }} dropped {{ $value | humanize }} PCM reports ({{ $labels.reason }}) in the "
              "last 10 minutes: the regulator will not receive them.",
              ("compliance", "pcm_dropped")),
    ]


# name -> builder; the group of each is ``ofsre-<name>.alerts``.
COMPONENTS: dict[str, Callable[[MonitoringConfig], list[Alert]]] = {
    "slo": slo_alerts,
    "http": http_alerts,
    "autoscaling": autoscaling_alerts,
    "queues": queue_alerts,
    "telemetry": telemetry_alerts,
    "pcm": pcm_alerts,
}


def all_alerts(cfg: MonitoringConfig) -> list[Alert]:
    return [a for build in COMPONENTS.values() for a in build(cfg)]


def _rule(a: Alert, cfg: MonitoringConfig) -> dict:
    """The linking pass: labels and annotations every alert carries."""
    rule: dict = {"alert": a.name, "expr": a.expr}
    duration = cfg.alert_for.get(a.name, a.for_)
    if duration not in ("0s", "0m"):
        rule["for"] = duration
    if a.keep_firing_for:
        rule["keep_firing_for"] = a.keep_firing_for
    rule["labels"] = {"severity": a.severity, "team": cfg.team, **a.labels}
    rule["annotations"] = {
        "summary": a.summary,
        "description": a.description,
        "runbook_url": f"{cfg.runbook_base_url.rstrip('/')}/{a.name}.md",
        "dashboard_url": dashboard_url(cfg.dashboard_base_url, *a.dashboard, query=a.link_query),
    }
    return rule


def alert_groups(cfg: MonitoringConfig) -> list[dict]:
    known = {a.name for a in all_alerts(cfg)}
    unknown = sorted(set(cfg.alert_for) - known)
    if unknown:
        raise ConfigError(f"alert_for: unknown alert {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return [{"name": f"ofsre-{name}.alerts", "rules": [_rule(a, cfg) for a in build(cfg)]}
            for name, build in COMPONENTS.items()]


# Alertmanager: symptom alerts inhibit the cause alerts of the same namespace (see alertmanager.yml).
SYMPTOMS = ("OfsreAvailabilityBudgetBurn", "OfsreEndpointMinuteUnavailable")
CAUSES = ("OfsreHPAAtMaxReplicas", "OfsreReplicasUnavailable", "OfsreCapacityExceeded",
          "OfsreHPAScalingInactive")
