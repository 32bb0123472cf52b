"""Open Finance compliance, per endpoint: p95 against its tier limit (threshold lines from the
catalog), the share of available minutes (a minute is available when ≥ 95 % of its calls that count
succeed), 429/423/529 counts, and calls per minute against the TPM limits.

To add a compliance section (as :func:`pcm_reporting` was added, for PCM reporting), write a
function ``(board) -> list[PanelSpec]`` and append it to :data:`SECTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable

from ofsre.alerts.config import MonitoringConfig
from ofsre.alerts.sli import Records, fmt, tiers_by_limit
from ofsre.exporters.pcm.metrics import AT_RISK_S
from ofsre.instrumentation import semconv as sc

from ._lib import Board, PanelSpec, q, table, ts

KEY = "compliance"
_TIER_TITLE = {"alta": "alta", "media-alta": "média-alta", "media": "média", "baixa": "baixa"}


def latency(b: Board) -> list[PanelSpec]:
    R, ns = Records, b.ns('api=~"$api"')
    panels = [ts("p95 ÷ tier limit per endpoint",
                 [q(f"{R.p95}{{{ns}}}\n/ on (tier) group_left() {R.tier_limit}",
                    "{{service}} {{method}} {{route}}")], "percentunit",
                 key="p95_vs_limit", width=12, thresholds=[("green", None), ("red", 1.0)],
                 description="p95 over 5 minutes divided by the tier's p95 limit (catalog): above 100 % "
                             "breaks it."),
              ts("Calls within the tier's latency limit", [q(f"{R.latency_ratio('5m')}{{{ns}}}",
                                                             "{{service}} {{method}} {{route}}")],
                 "percentunit", key="latency_budget", width=12, min_zero=False,
                 thresholds=[("red", None), ("green", b.cfg.latency_objective)],
                 description=f"Objective {fmt(100 * b.cfg.latency_objective)} % "
                             "(latency SLO, catalog [slo]).")]
    for le, tiers in tiers_by_limit(b.cfg.catalog):
        limit = float(le)
        names = "/".join(_TIER_TITLE.get(t, t) for t in tiers)
        tier_m = f'tier=~"{"|".join(tiers)}"'
        panels.append(ts(f"p95 per endpoint, tier {names} (limit {fmt(limit)} s)",
                         [q(f"{R.p95}{{{b.ns('api=~' + chr(34) + '$api' + chr(34), tier_m)}}}",
                            "{{service}} {{method}} {{route}}")], "s", width=8,
                         thresholds=[("green", None), ("red", limit)]))
    return panels


def availability(b: Board) -> list[PanelSpec]:
    R, ns, cfg = Records, b.ns('api=~"$api"'), b.cfg
    return [
        table("Share of available minutes per endpoint",
              [q(f"avg by (service, method, route) (avg_over_time({R.minute_available}{{{ns}}}[$__range]))")],
              "percentunit", key="available_minutes", width=12,
              thresholds=[("red", None), ("green", cfg.availability_daily_objective)],
              description=f"Minutes with traffic whose counted calls (2xx, 5xx, 408, 422) succeeded at "
                          f"≥ {fmt(100 * cfg.availability_minute_objective)} % "
                          f"(success 2xx/422, error 5xx/408); "
                          f"the daily target is {fmt(100 * cfg.availability_daily_objective)} %."),
        ts("Success ratio per minute",
           [q(f"1 - {R.error_ratio('1m')}{{{ns}}}", "{{service}} {{method}} {{route}}")],
           "percentunit", width=12, min_zero=False,
           thresholds=[("red", None), ("green", cfg.availability_minute_objective)]),
    ]


def traffic_limits(b: Board) -> list[PanelSpec]:
    eco, cat = b.cfg.catalog.ecosystem, b.cfg.catalog
    codes = "|".join(str(eco[k]) for k in ("tpm_status", "operational_limit_status", "capacity_status"))
    limited = sorted({e.api for e in cat if e.tpm is not None})
    req = sc.HTTP_REQUESTS.series
    status_match = 'status=~"' + codes + '"'
    api_match = 'api=~"' + "|".join(limited) + '"'
    return [
        ts(f"{codes.replace('|', '/')} answers by route",
           [q(f"sum by (service, route, status) (increase({req}{{{b.ns(status_match)}}}"
              f"[$__rate_interval]))", "{{status}} {{service}} {{route}}")], "short",
              key="status_429_423_529",
           width=12, description="429: TPM exceeded; 423: monthly operational limit; 529: global capacity."),
        ts("Calls per minute by endpoint against its tier's TPM limit",
           [q(f"sum by (route, tier) ({b.rate(req, api_match, selector=b.ns(api_match))}) * 60\n"
              f"/ on (tier) group_left() {Records.tier_tpm}", "{{route}}")], "percentunit", key="tpm_used",
              width=12,
           thresholds=[("green", None), ("orange", 0.8), ("red", 1.0)],
           description="All client organisations together, divided by the per-origin TPM limit (catalog): "
                       "below 100 % no organisation can have exceeded it. Per-organisation counts need a "
                       "gateway metric labelled by organisation, which the services do not expose yet."),
    ]


def pcm_reporting(b: Board) -> list[PanelSpec]:
    """PCM reports (openfinance.md §5): each day's are due by 08:00 Brasília the next day. The gauges
    come from the store, exposed by the sender (``ofsre pcm send --metrics-port``); the drops by the
    capturing services."""
    ns = b.ns()
    return [
        ts("PCM: hours left before the reports' deadline",
           [q(f"min({sc.PCM_DEADLINE_SECONDS_LEFT.name}{{{ns}}}) / 3600", "hours left")], "h",
           key="pcm_deadline", width=12,
           min_zero=False, thresholds=[("red", None), ("orange", 0.0), ("green", AT_RISK_S / 3600)],
           description="Time left before 08:00 (Brasília) of the day after the oldest report not yet "
                       f"delivered (today's deadline when none waits). Below {AT_RISK_S // 3600} h with a "
                       "backlog: at risk."),
        ts("PCM: reports not yet delivered, and held", [
            q(f"sum by (kind) ({sc.PCM_BACKLOG.name}{{{ns}}})", "backlog {{kind}}"),
            q(f"max({sc.PCM_HELD_REPORTS.name}{{{ns}}})", "held (refused by the PCM)")], "short",
            key="pcm_backlog",
           width=12,
           description="Held: batches the PCM refused for good (400/401/403/406/415), kept in the store "
                       "until `ofsre pcm requeue`."),
        ts("PCM: today's reports by result",
           [q(f"max by (status) ({sc.PCM_DAY_REPORTS.name}{{{ns}}})", "{{status}}")],
           "short", width=12, stack=True,
           description="ACCEPTED, DISCARDED, PAIRED_INCONSISTENT, UNPAIRED, SINGLE as the PCM answered; "
                       "PENDING and HELD not delivered yet (Brasília day)."),
        ts("PCM: reports lost before the store", [
            q(f"sum by (job, reason) (increase({sc.PCM_REPORTS_DROPPED.series}{{{ns}}}[$__rate_interval]))",
              "{{job}} {{reason}}")], "short", key="pcm_dropped", width=12,
           description="Reports a capturing service could not keep (memory queue or store full, store "
                       "error): the regulator will never receive them."),
    ]


SECTIONS: list[Callable[[Board], list[PanelSpec]]] = [latency, availability, traffic_limits, pcm_reporting]


def build(cfg: MonitoringConfig) -> dict:
    b = Board(KEY, cfg, variables=("namespace", "api"), time_from="now/d",
              description="Regulatory view (openfinance.md §1–3): today by default.")
    for section in SECTIONS:
        b.add(*section(b))
    return b.dashboard()
