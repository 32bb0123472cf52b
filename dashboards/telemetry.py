"""Telemetry health: log shippers' shipped/dropped/retried records and queue depth, telemetry
errors, scrape targets up, and the services' logs from Loki by service and level."""

from __future__ import annotations

from ofsre.alerts.config import MonitoringConfig
from ofsre.instrumentation import semconv as sc

from ._lib import Board, logs, q, ts

KEY = "telemetry"


def build(cfg: MonitoringConfig) -> dict:
    b = Board(KEY, cfg, variables=("namespace", "service", "level"), loki=True)
    ns = b.ns()
    jobs = f'job=~"{cfg.workload("$service")}"'
    b.add(
        ts("Log records dropped by reason",
           [q(f"sum by (job, backend, reason) ({b.rate(sc.LOG_RECORDS_DROPPED.series, selector=b.ns(jobs))})",
              "{{job}} {{backend}} {{reason}}")], "ops", key="shippers_dropped", width=8),
        ts("Log records shipped and retried",
           [q(f"sum by (job, backend) ({b.rate(sc.LOG_RECORDS_SHIPPED.series, selector=b.ns(jobs))})",
              "shipped {{job}} {{backend}}"),
            q(f"sum by (job, backend) ({b.rate(sc.LOG_RECORDS_RETRIED.series, selector=b.ns(jobs))})",
              "retried {{job}} {{backend}}")], "ops", width=8),
        ts("Shipper queue depth", [q(f"sum by (job, backend) ({sc.LOG_QUEUE_DEPTH.name}{{{b.ns(jobs)}}})",
                                     "{{job}} {{backend}}")], "short", width=8),
        ts("Batches by outcome",
           [q(f"sum by (job, backend, outcome) ({b.rate(sc.LOG_BATCHES.series, selector=b.ns(jobs))})",
              "{{job}} {{backend}} {{outcome}}")], "ops", width=8),
        ts("Telemetry errors by component",
           [q(f"sum by (job, component) ({b.rate(sc.TELEMETRY_ERRORS.series, selector=b.ns(jobs))})",
              "{{job}} {{component}}")], "ops", key="telemetry_errors", width=8),
        ts("Scrape targets up", [q(f'up{{{ns}, job=~"{cfg.workloads}"}}', "{{job}} {{instance}}"),
                                 q(f"up{{{cfg.kube_state_metrics_selector}}}", "{{job}} {{instance}}")],
           "bool_yes_no", key="targets_up", width=8, step=True),
        logs("Logs by service and level", '{service=~"$service", level=~"$level"}'),
    )
    return b.dashboard()
