"""Platform overview: per-service rate, errors and p95; SLO status and error budget remaining per
tier; top endpoints by p95 against their regulatory limit; today's availability against 95 %."""

from __future__ import annotations

from ofsre.alerts.config import MonitoringConfig
from ofsre.alerts.sli import Records, fmt
from ofsre.instrumentation import semconv as sc

from ._lib import Board, q, stat, table, ts

KEY = "overview"


def build(cfg: MonitoringConfig) -> dict:
    b = Board(KEY, cfg, variables=("namespace",),
              description="Start here: every service and every SLO at a glance.")
    R = Records
    ns = b.ns()
    counted = f'status=~"{cfg.success_status_regex}|{cfg.error_status_regex}"'
    errors = f'status=~"{cfg.error_status_regex}"'
    avail = (f"1 - sum by (tier) (avg_over_time({R.errors('5m')}{{{ns}}}[$__range]))\n"
             f"  / sum by (tier) (avg_over_time({R.counted('5m')}{{{ns}}}[$__range]))")
    latency = (f"sum by (tier) (avg_over_time({R.latency_good('5m')}{{{ns}}}[$__range]))\n"
               f"  / sum by (tier) (avg_over_time({R.latency_total('5m')}{{{ns}}}[$__range]))")
    a_budget, l_budget = 1 - cfg.availability_objective, 1 - cfg.latency_objective
    b.add(
        stat("SLO status: availability per tier", [q(avail, "{{tier}}")], "percentunit", key="slo_status",
             description=f"Share of counted calls (2xx, 5xx, 408, 422) that succeeded over the dashboard "
                         f"range; objective {fmt(100 * cfg.availability_objective)} %.",
             thresholds=[("red", None), ("green", cfg.availability_objective)], decimals=3),
        stat("Availability error budget remaining per tier",
             [q(f"1 - (1 - ({avail})) / {fmt(a_budget)}", "{{tier}}")], "percentunit",
             thresholds=[("red", None), ("orange", 0.25), ("green", 0.5)], decimals=1),
        stat("SLO status: calls within the tier's latency limit", [q(latency, "{{tier}}")], "percentunit",
             description=f"Objective {fmt(100 * cfg.latency_objective)} % of calls within the tier's p95 "
                         "limit.",
             thresholds=[("red", None), ("green", cfg.latency_objective)], decimals=2),
        stat("Latency error budget remaining per tier",
             [q(f"1 - (1 - ({latency})) / {fmt(l_budget)}", "{{tier}}")], "percentunit",
             thresholds=[("red", None), ("orange", 0.25), ("green", 0.5)], decimals=1),
        ts("Request rate per service",
           [q(f"sum by (service) ({b.rate(sc.HTTP_REQUESTS.series)})", "{{service}}")], "reqps", width=8),
        ts("Error ratio per service (5xx and 408 of the calls that count)",
           [q(f"sum by (service) ({b.rate(sc.HTTP_REQUESTS.series, errors)})\n"
              f"/ sum by (service) ({b.rate(sc.HTTP_REQUESTS.series, counted)})", "{{service}}")],
           "percentunit", width=8),
        ts("p95 latency per service",
           [q(f"histogram_quantile(0.95, sum by (service, le) ({b.rate(sc.HTTP_DURATION.name + '_bucket')}))",
              "{{service}}")], "s", width=8),
        table("Top endpoints by p95 against their regulatory limit",
              [q(f"topk(10, {R.p95}{{{ns}}} / on (tier) group_left() {R.tier_limit})")], "percentunit",
              description="p95 over 5 minutes divided by the tier's limit from the catalog: above 100 % "
                          "breaks it.",
              thresholds=[("green", None), ("orange", 0.8), ("red", 1.0)], width=14),
        stat("Today's availability: share of available minutes (worst endpoint per service)",
             [q(f"min by (service) (avg_over_time({R.minute_available}{{{ns}}}[$__range]))", "{{service}}")],
             "percentunit", key="availability_today", time_from="now/d", width=10,
             description=f"A minute is available when ≥ {fmt(100 * cfg.availability_minute_objective)} % "
                         f"of its counted calls succeed; the day needs "
                         f"≥ {fmt(100 * cfg.availability_daily_objective)} % of its minutes with traffic "
                         "available (openfinance.md §2).",
             thresholds=[("red", None), ("green", cfg.availability_daily_objective)], decimals=2),
    )
    return b.dashboard()
